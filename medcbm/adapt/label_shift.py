"""What a new site's unlabelled images say: its class prevalence (EM under label shift) and its concept drift.

* :func:`em_prevalence` — Saerens, Latinne & Decaestecker (2002): re-estimate the class priors of a new
  site from a model's posteriors on its unlabelled images by EM, assuming ``p(x | y)`` is unchanged.
* :func:`prior_aware_shift` — a common concept drift ``delta`` such that the site's unlabelled mean equals
  the source class means mixed at the site's (estimated) prevalence plus ``delta``. Re-centring on the plain
  unlabelled mean would also erase the difference in case mix between the sites; mixing the source class
  means at the site's prevalence keeps it.

Both work in the base model's standardised concept space and need no labels; with a few labels the EM
prevalence is the prior a labelled bias estimate is shrunk towards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcbm.bottleneck.estimator import softmax

MIN_UNLABELLED = 20  # below this an unlabelled mean or a prevalence is more noise than signal


def source_prior(model) -> np.ndarray:
    """The class prior implicit in the model's probabilities: uniform for a class-balanced head (the default)."""
    C = len(model.classes)
    cfg = getattr(model, "config_", None)
    counts = (getattr(model, "fit_info_", None) or {}).get("class_counts")
    if cfg is not None and not getattr(cfg, "class_balanced", True) and counts:
        c = np.asarray(counts, float)
        return c / c.sum()
    return np.full(C, 1.0 / C)


def em_prevalence(proba: np.ndarray, prior: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6,
                  floor: float = 0.02) -> np.ndarray:
    """Class prevalence at the new site ``(C,)`` by EM over posteriors ``proba (n, C)`` made under ``prior``.

    ``floor`` keeps every class at a prevalence of at least that much: a site without a class is rarer than
    an EM drifting to zero on a few hundred images.
    """
    p = np.clip(np.asarray(proba, float), 1e-12, None)
    prior = np.asarray(prior, float)
    pi = prior.copy()
    for _ in range(max_iter):
        w = p * (pi / prior)
        w /= w.sum(1, keepdims=True)
        new = np.maximum(w.mean(0), floor)
        new /= new.sum()
        if np.abs(new - pi).max() < tol:
            pi = new
            break
        pi = new
    return pi


def prior_logit_offset(prevalence: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The bias change turning posteriors under ``prior`` into posteriors under ``prevalence``."""
    return (np.log(prevalence) - np.log(prior)).astype(np.float32)


@dataclass(frozen=True)
class SiteStatistics:
    """Label-free statistics of a new site: its prevalence and its concept drift, in standardised space."""

    n: int
    prevalence: np.ndarray  # (C,)
    shift: np.ndarray  # (K,): subtract from Z to bring the site back onto the source
    scale: np.ndarray  # (K,): site sd over source within-class sd, shrunk to 1

    def to_json(self) -> dict:
        return {"n": self.n, "prevalence": np.round(self.prevalence, 4).tolist(),
                "shift": np.round(self.shift, 4).tolist(), "scale": np.round(self.scale, 4).tolist()}


def prior_aware_shift(Z: np.ndarray, prevalence: np.ndarray, source_means: np.ndarray) -> np.ndarray:
    """``delta (K,)``: the site's mean minus the source class means mixed at the site's prevalence."""
    return (Z.mean(0) - prevalence @ source_means).astype(np.float32)


def _mix_var(means: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ (means - weights @ means) ** 2


def site_statistics(Z: np.ndarray, W: np.ndarray, b: np.ndarray, source_means: np.ndarray, prior: np.ndarray, *,
                    iterations: int = 3, n0: float = 50.0) -> SiteStatistics:
    """Alternate EM prevalence and prior-aware re-centring on unlabelled ``Z`` (a few rounds suffice).

    The drift moves the posteriors the prevalence is read from and the prevalence moves the drift, so each
    is re-estimated from the other. ``n0`` shrinks the per-concept spread ratio towards 1 with the weight
    of that many images.
    """
    n = len(Z)
    delta = np.zeros(Z.shape[1], np.float32)
    pi = prior.copy()
    for _ in range(iterations):
        pi = em_prevalence(softmax((Z - delta) @ W.T + b), prior)
        delta = prior_aware_shift(Z, pi, source_means)
    # the site's spread against the source's at the same prevalence: the source's within-class variance
    # (its total of 1 less the class mix it was trained at) plus the site's class mix
    within = np.maximum(1.0 - _mix_var(source_means, prior), 0.1)
    ratio = np.sqrt(Z.var(0) / (within + _mix_var(source_means, pi)))
    scale = (n * ratio + n0) / (n + n0)
    return SiteStatistics(n, pi, delta, scale.astype(np.float32))
