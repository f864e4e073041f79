"""Concept probes from annotations: one batched multi-output logistic head with CV-chosen regularisation."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
from scipy.stats import rankdata

from medcbm.concepts.grounding._linear import balanced_weights, fit_batched_logistic
from medcbm.concepts.grounding.base import ConceptGrounder, register_grounder, apply_platt, check_features, fit_platt
from medcbm.errors import DataError

logger = logging.getLogger(__name__)

C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)


def kfold_masks(n: int, n_folds: int, seed: int) -> np.ndarray:
    """``(n_folds, n)`` boolean masks of held-out samples (shuffled K-fold)."""
    order = np.random.default_rng(seed).permutation(n)
    masks = np.zeros((n_folds, n), bool)
    for f, part in enumerate(np.array_split(order, n_folds)):
        masks[f, part] = True
    return masks


def auc_columns(y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``S (n, J)`` against binary ``y (n,)`` (Mann-Whitney, ties averaged).

    One rank pass for all columns; scikit-learn's ``roc_auc_score`` per column spends most of its time
    validating inputs, which dominated the probe fit. NaN where ``y`` has a single class.
    """
    S = np.asarray(S, dtype=float).reshape(len(y), -1)
    pos = np.asarray(y) > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(S.shape[1], np.nan)
    ranks = rankdata(S, axis=0)
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(auc_columns(y, s)[0])


@register_grounder("concept_probes")
class ConceptProbes(ConceptGrounder):
    """All concepts fitted at once; per-concept class balancing, C chosen by K-fold CV AUROC, Platt calibration.

    Args:
        C_grid: inverse L2 strengths tried (scikit-learn's ``C`` convention).
        n_folds: cross-validation folds.
        min_auc: concepts whose CV AUROC falls below this are flagged (and dropped if ``drop_weak``).
        drop_weak: drop flagged concepts from ``predict_concepts`` output.
        seed: fold assignment.
        cv_tol, tol: relative objective change that ends the cross-validation fits and the final refit.

    Attributes (after ``fit``): ``concept_names_`` (kept), ``cv_auc_`` (all fitted concepts),
    ``C_`` per concept, ``flagged_`` {name: reason}, ``coef_``, ``intercept_``, ``calib_``, ``mean_``, ``scale_``.
    """

    def __init__(self, C_grid=C_GRID, n_folds: int = 5, min_auc: float = 0.6, drop_weak: bool = True,
                 seed: int = 0, max_iter: int = 400, cv_tol: float = 1e-3, tol: float = 1e-4):
        self.C_grid, self.n_folds, self.min_auc = tuple(C_grid), n_folds, min_auc
        self.drop_weak, self.seed, self.max_iter = drop_weak, seed, max_iter
        self.cv_tol, self.tol = cv_tol, tol

    def get_params(self, deep: bool = True) -> dict:
        return {"C_grid": self.C_grid, "n_folds": self.n_folds, "min_auc": self.min_auc,
                "drop_weak": self.drop_weak, "seed": self.seed, "max_iter": self.max_iter,
                "cv_tol": self.cv_tol, "tol": self.tol}

    def fit(self, X: np.ndarray, C: np.ndarray, concept_names: list[str]) -> "ConceptProbes":
        """Fit on features ``X (n, d)`` and binary annotations ``C (n, K)`` (NaN = not annotated)."""
        t0 = time.perf_counter()
        X = check_features(X)
        C = np.asarray(C, dtype=float)
        if C.shape != (X.shape[0], len(concept_names)):
            raise DataError(f"concept labels have shape {C.shape}, expected ({X.shape[0]}, {len(concept_names)})")
        known = np.isfinite(C)
        if not np.isin(C[known], (0.0, 1.0)).all():
            raise DataError("concept labels must be 0/1 (or NaN for not annotated)")
        self.flagged_: dict[str, str] = {}
        usable = []
        for k, name in enumerate(concept_names):
            pos, neg = int((C[known[:, k], k] == 1).sum()), int((C[known[:, k], k] == 0).sum())
            if min(pos, neg) < self.n_folds:
                self.flagged_[name] = f"only {pos} positive / {neg} negative examples: cannot learn or validate it"
                warnings.warn(f"concept '{name}' has {pos} positives and {neg} negatives; it is dropped. "
                              "Annotate more examples of both kinds to ground it.", stacklevel=2)
            else:
                usable.append(k)
                if min(pos, neg) < 0.05 * (pos + neg):
                    logger.warning("concept '%s' is extremely imbalanced (%d/%d); class-balanced loss used", name, pos, neg)
        if not usable:
            raise DataError("no concept has enough positive and negative examples to train a probe")
        names = [concept_names[k] for k in usable]
        Cu, Mu = np.nan_to_num(C[:, usable]), known[:, usable]
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        Xs = (X - self.mean_) / self.scale_
        n, K, J, F = X.shape[0], len(usable), len(self.C_grid), self.n_folds
        held = kfold_masks(n, F, self.seed)
        # problems ordered (fold, C, concept)
        Y = np.tile(Cu, (1, F * J))
        M = np.concatenate([np.tile(~held[f][:, None] & Mu, (1, J)) for f in range(F)], axis=1)
        lam = np.concatenate([np.repeat([1.0 / (c * (~held[f]).sum()) for c in self.C_grid], K) for f in range(F)])
        # the CV fits only rank the C values by AUROC, which settles long before the objective does; the
        # final refit below is solved to the tight tolerance
        coef, b = fit_batched_logistic(Xs, Y, balanced_weights(Y, M), lam, max_iter=self.max_iter, tol=self.cv_tol)
        logits = (Xs @ coef + b).reshape(n, F, J, K)
        oof = np.zeros((n, J, K))
        for f in range(F):
            oof[held[f]] = logits[held[f], f]
        auc = np.stack([auc_columns(Cu[Mu[:, k], k], oof[Mu[:, k], :, k]) for k in range(K)], axis=1)
        best = np.nanargmax(np.nan_to_num(auc, nan=-1), axis=0)
        self.C_ = {names[k]: float(self.C_grid[best[k]]) for k in range(K)}
        self.cv_auc_ = {names[k]: float(auc[best[k], k]) for k in range(K)}
        lam_full = np.array([1.0 / (self.C_grid[best[k]] * n) for k in range(K)])
        coef, b = fit_batched_logistic(Xs, Cu, balanced_weights(Cu, Mu), lam_full, max_iter=self.max_iter, tol=self.tol)
        # Platt scaling on out-of-fold logits: balanced training shifts probabilities; calibrate to prevalence
        oof_best = oof[:, best, np.arange(K)]
        self.calib_ = fit_platt(oof_best, Cu, Mu)
        keep = [k for k in range(K) if self.cv_auc_[names[k]] >= self.min_auc or not self.drop_weak]
        for k in range(K):
            if self.cv_auc_[names[k]] < self.min_auc:
                self.flagged_[names[k]] = f"CV AUROC {self.cv_auc_[names[k]]:.3f} < {self.min_auc}"
        self.all_concepts_ = names
        self.concept_names_ = [names[k] for k in keep]
        self._keep = np.array(keep, dtype=int)
        self.coef_, self.intercept_ = coef.astype(np.float32), b.astype(np.float32)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw logits for the kept concepts."""
        X = check_features(X, dim=self.mean_.shape[0])
        return (((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_)[:, self._keep]

    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        return apply_platt(z, self.calib_[self._keep])

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_,
                   "calib": self.calib_, "keep": self._keep}
        meta = {"kind": "concept_probes", "params": self.get_params(), "all_concepts": self.all_concepts_,
                "concept_names": self.concept_names_, "cv_auc": self.cv_auc_, "C": self.C_, "flagged": self.flagged_}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> "ConceptProbes":
        obj = cls(**{k: tuple(v) if k == "C_grid" else v for k, v in meta["params"].items()})
        obj.mean_, obj.scale_ = tensors["mean"], tensors["scale"]
        obj.coef_, obj.intercept_, obj.calib_ = tensors["coef"], tensors["intercept"], tensors["calib"]
        obj._keep = tensors["keep"].astype(int)
        obj.all_concepts_, obj.concept_names_ = meta["all_concepts"], meta["concept_names"]
        obj.cv_auc_, obj.C_, obj.flagged_ = meta["cv_auc"], meta["C"], meta["flagged"]
        return obj
