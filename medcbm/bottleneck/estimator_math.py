"""The bottleneck's numerics shared by the trainer, the path and the estimator (numpy only, no torch).

- :func:`softmax`;
- :class:`InputMap`: how concept probabilities become the linear layer's inputs — clipped to the range
  the training activations covered, then standardised. The clip is what keeps interventions bounded: a
  concept set to 1 (or 0) is read as the most (least) present the head ever saw it in training, never as
  the many standard deviations a narrow-spread probe would otherwise turn it into;
- :func:`weight_spread`: a one-line summary of the learned weights for ``fit_info`` and model cards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass(frozen=True)
class InputMap:
    """``z = (clip(P, lo, hi) - mean) / scale`` per concept.

    Attributes:
        lo, hi: the training activations' ``q`` and ``1 - q`` quantiles, within [0, 1] (``-inf``/``+inf`` for a
            model saved before the clip existed: its inputs stay unbounded, as it was trained).
        mean, scale: standardisation of the clipped training activations (0 and 1 when not standardising).
    """

    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, P: np.ndarray, *, standardize: bool, quantile: float) -> "InputMap":
        """The map of training activations ``P (n, K)`` (probabilities); ``quantile`` 0 clips to their min and max."""
        P = np.asarray(P, np.float64)
        # the range is also cut to [0, 1]: site-adjusted activations can leave the probability scale, and an
        # intervention's 1 (0) must never land below (above) an image's own value
        lo = np.clip(np.quantile(P, quantile, axis=0), 0.0, 1.0)
        hi = np.maximum(np.clip(np.quantile(P, 1.0 - quantile, axis=0), 0.0, 1.0), lo + 1e-6)
        Pc = np.clip(P, lo, hi)
        mean = Pc.mean(0) if standardize else np.zeros(P.shape[1])
        scale = Pc.std(0) + 1e-3 if standardize else np.ones(P.shape[1])
        f = np.float32
        return cls(lo.astype(f), hi.astype(f), mean.astype(f), scale.astype(f))

    @classmethod
    def unbounded(cls, mean: np.ndarray, scale: np.ndarray) -> "InputMap":
        """The map of a model saved before inputs were clipped (standardisation only)."""
        K = len(mean)
        return cls(np.full(K, -np.inf, np.float32), np.full(K, np.inf, np.float32), mean, scale)

    @property
    def bounded(self) -> bool:
        return bool(np.isfinite(self.lo).all() and np.isfinite(self.hi).all())

    def __call__(self, P: np.ndarray) -> np.ndarray:
        return (np.clip(P, self.lo, self.hi) - self.mean) / self.scale


def weight_spread(W: np.ndarray, tol: float = 1e-6) -> dict[str, float]:
    """``max_abs``, ``mean_abs`` and ``fraction_zero`` (|w| <= ``tol``) of a weight matrix."""
    a = np.abs(np.asarray(W, float))
    return {"max_abs": round(float(a.max()), 4), "mean_abs": round(float(a.mean()), 4),
            "fraction_zero": round(float((a <= tol).mean()), 4)}
