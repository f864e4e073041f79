"""Concept corrections used per image: the concept probes refitted on reviewed site cases, shrunk to the source.

A site-level shift (:mod:`medcbm.adapt.corrections`) moves every image of a concept by the same amount; at PH2 the
probes' error is per image (``bench review``'s ``recalibration_ceiling``: all 200 images answered, the shift gains
-0.001 in-sample, the answers applied case by case +0.039). Here the reviewer's 0/1 answers are instead training
targets for a *deviation* of each answered concept's probe, so an image's activation moves with its features::

    u_k(x) = u0_k(x) + x_s . delta_k        (u0_k: the source probe's calibrated logit, x_s: its standardised features)

``delta_k`` minimises ``strength * sum_i BCE(u_k(x_i), t_ik) + ||delta_k||^2 / (2 C_k a_k^2)`` over the reviewed
cases ``i`` that answered concept ``k``: ``C_k`` is the source probe's own cross-validated L2 strength and ``a_k`` its
Platt slope, so the penalty is the source fit's own one on the probe weights, moved to the calibrated scale, and
``strength`` is how much one reviewed case counts against one source training case (1: alike, fixed a priori;
0: no change). By the representer theorem ``delta_k`` lies in the span of the reviewed cases' features, so the fit
is a ``m x m`` kernel logistic regression (``m`` <= reviewed cases), solved by damped Newton steps. The head is
untouched: it reads the new activations (a label step can follow, on them).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator

from medcbm.adapt.corrections import check_answers
from medcbm.concepts.grounding.base import check_features
from medcbm.errors import ConfigError

#: a reviewed case weighs as much as a source training case (fixed a priori, never tuned on held-out images)
STRENGTH = 1.0
_PROBE_ATTRS = ("mean_", "scale_", "C_", "calib_", "all_concepts_", "concept_names_", "decision_function")


def kernel_logistic_deviation(G: np.ndarray, u0: np.ndarray, t: np.ndarray, lam: float, *, max_iter: int = 50,
                              tol: float = 1e-8) -> np.ndarray:
    """Dual weights ``alpha (m,)`` minimising ``sum BCE(u0 + G alpha, t) + lam / 2 * alpha' G alpha``.

    Args:
        G: the cases' Gram matrix ``(m, m)`` (standardised features' inner products).
        u0: their source logits; ``t``: their 0/1 targets; ``lam`` > 0: the penalty.

    Newton's direction solves ``(D G + lam I) s = (p - t) + lam alpha`` (``D`` the logistic curvatures); a step
    is halved until the objective does not rise, so the iteration is monotone.
    """
    alpha = np.zeros(len(t))

    def objective(a: np.ndarray) -> float:
        u = u0 + G @ a
        return float(-(t * log_expit(u) + (1 - t) * log_expit(-u)).sum() + 0.5 * lam * a @ G @ a)

    f = objective(alpha)
    for _ in range(max_iter):
        p = expit(u0 + G @ alpha)
        step = np.linalg.solve((p * (1 - p))[:, None] * G + lam * np.eye(len(t)), p - t + lam * alpha)
        for _ in range(30):
            new = alpha - step
            f_new = objective(new)
            if f_new <= f + 1e-12 * abs(f):
                break
            step = step / 2
        else:
            break
        alpha, done = new, abs(f - f_new) <= tol * max(abs(f), 1.0)
        f = f_new
        if done:
            break
    return alpha


class ProbeRefit(BaseEstimator):
    """The answered concepts' probes of a fitted CBM refitted on reviewed site cases (see the module docstring).

    Args:
        model: a fitted :class:`~medcbm.bottleneck.estimator.KnowledgeCBM` whose grounder is one
            :class:`~medcbm.concepts.grounding.probes.ConceptProbes` (never modified).
        strength: weight of a reviewed case against a source training case (0: the identity).

    Attributes (after ``fit``): ``delta_`` ``(d, K)`` (per concept, the calibrated logit's change per standardised
    feature; zero for concepts nobody answered), ``n_answered_`` ``(K,)``, ``penalty_`` ``(K,)`` (the ``lam`` each
    answered concept was fitted with), ``concepts_`` (the refitted concepts' names).
    """

    def __init__(self, model, *, strength: float = STRENGTH):
        self.model, self.strength = model, strength

    def _probes(self):
        g = self.model.grounder
        missing = [a for a in _PROBE_ATTRS if not hasattr(g, a)]
        if missing or getattr(self.model, "offsets_", None) is not None:
            raise ConfigError("refitting concept probes needs a model whose grounder is one fitted ConceptProbes "
                              "and no per-site concept offsets" + (f" (the grounder lacks {missing})" if missing else ""))
        return g

    def _calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per model concept: its column in the grounder's output, its Platt ``(a, b)`` and the source ``C``."""
        g, names = self._probes(), list(self.model.concept_names_)
        cols = np.array([list(g.concept_names_).index(k) for k in names])
        calib = np.array([np.asarray(g.calib_)[list(g.all_concepts_).index(k)] for k in names], np.float64)
        return cols, calib, np.array([g.C_[k] for k in names], np.float64)

    def source_logits(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The source probes' calibrated logits ``(n, K)`` and the standardised features ``(n, d)`` they read."""
        g = self._probes()
        X = check_features(X, dim=np.asarray(g.mean_).shape[0]).astype(np.float64)
        cols, calib, _ = self._calibration()
        u0 = calib[:, 0] * np.asarray(g.decision_function(X), np.float64)[:, cols] + calib[:, 1]
        return u0, (X - g.mean_) / g.scale_

    def fit(self, X: np.ndarray, T: np.ndarray) -> "ProbeRefit":
        """Fit on the reviewed cases' features ``X (n, d)`` and the reviewer's answers ``T (n, K)`` (NaN: unsure)."""
        if not np.isfinite(self.strength) or self.strength < 0:
            raise ConfigError(f"strength must be a finite number >= 0; got {self.strength}")
        u0, Xs = self.source_logits(X)
        T = check_answers(T, u0.shape)
        _, calib, C = self._calibration()
        K = u0.shape[1]
        self.delta_ = np.zeros((Xs.shape[1], K))
        self.n_answered_ = (~np.isnan(T)).sum(0)
        self.penalty_ = np.full(K, np.inf)
        if self.strength > 0:
            for k in np.flatnonzero(self.n_answered_):
                rows = ~np.isnan(T[:, k])
                self.penalty_[k] = 1.0 / (self.strength * C[k] * calib[k, 0] ** 2)
                alpha = kernel_logistic_deviation(Xs[rows] @ Xs[rows].T, u0[rows, k], T[rows, k], self.penalty_[k])
                self.delta_[:, k] = Xs[rows].T @ alpha
        self.concepts_ = [self.model.concept_names_[k] for k in np.flatnonzero(np.abs(self.delta_).max(0) > 0)]
        return self

    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        """Concept activations ``(n, K)`` with the refitted probes (the model's own for concepts not refitted)."""
        P = self.model.predict_concepts(X)
        moved = np.abs(self.delta_).max(0) > 0
        if moved.any():  # the source logits are computed only when some probe was refitted
            u0, Xs = self.source_logits(X)
            P = P.copy()
            P[:, moved] = expit(u0[:, moved] + Xs @ self.delta_[:, moved]).astype(P.dtype)
        return P
