"""Feature-distance domain guard: do new images look like the ones the model was trained on?

A dermoscopy model given chest radiographs still outputs a confident "benign"; the modality and colour checks
of :mod:`medcbm.bottleneck.scope` see what a file declares and shows. The backbone features see
every image: a model stores the mean of its training images' features, and the limit on cosine distance to it
is calibrated on the validation images, which the mean never saw (a split-conformal quantile: a new in-domain
image exceeds it with probability at most 1 %). Each new image's distance is compared with that limit, using the
features prediction extracts anyway (no extra pass over the images). Models saved before the calibration compare
with the training images' own 99th percentile, which flags more held-out in-domain images.

Cosine distance to the mean, not a per-dimension standardised (diagonal Mahalanobis) distance: pooled CNN
features have many near-constant dimensions whose tiny training spread turns noise into huge z-scores. On real
data (EfficientNet-Lite0 features, 128 HAM10000 training images) 3-6 % of held-out HAM10000 images and about
15 % of PH2 and Derm7pt images lie beyond the training 99th percentile, but every COVID-CXR radiograph and
every pydicom-data CT, MR and ultrasound image; z-scores put 14 % of held-out HAM10000 beyond it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medcbm.errors import DataError

logger = logging.getLogger(__name__)

QUANTILE = 0.99  # the training distance a new image is compared with
TENSOR = "domain.feature_mean"


class DomainSummary(BaseModel):
    """The ``feature_domain`` entry of ``model.json`` (the mean vector is the tensor ``domain.feature_mean``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    metric: Literal["cosine_to_mean"] = "cosine_to_mean"
    n: int = Field(ge=1, description="training images summarised")
    dim: int = Field(ge=1, description="feature dimensions")
    quantile: float = Field(QUANTILE, gt=0, lt=1)
    threshold: float = Field(gt=0, description="the distance limit: conformal `quantile` of the calibration images")
    calibration: Literal["training", "validation"] = Field(
        "training", description="validation: the limit comes from held-out images the mean was not fitted on")
    n_calibration: int | None = Field(None, ge=1, description="images the limit was calibrated on")
    distances: dict[str, float] = Field(default_factory=dict, description="training distance percentiles")


def cosine_distance(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``1 - cos(x, mean)`` per row; an all-zero feature vector is as far as it gets (1)."""
    X = np.asarray(X, np.float64)
    norms = np.linalg.norm(X, axis=1) * max(float(np.linalg.norm(mean)), 1e-12)
    cos = np.divide(X @ np.asarray(mean, np.float64), norms, out=np.zeros(len(X)), where=norms > 0)
    return 1.0 - cos


def conformal_rank(n: int, level: float) -> int:
    """Which of ``n`` sorted held-out scores is the split-conformal limit (1-based): ``ceil((n + 1) * level)``,
    capped at ``n`` (with too few scores the rank falls past the last, and the largest is the best there is)."""
    return min(int(np.ceil((n + 1) * level)), n)


def conformal_limit(d: np.ndarray, level: float) -> float:
    """The split-conformal quantile of held-out scores: the :func:`conformal_rank`-th smallest, so a new
    exchangeable score exceeds it with probability at most ``1 - level`` (the largest when n is too small)."""
    d = np.sort(np.asarray(d, np.float64))
    return float(d[conformal_rank(len(d), level) - 1])


@dataclass(frozen=True)
class FeatureDomain:
    """Where a model's training images lie in backbone-feature space."""

    mean: np.ndarray
    summary: DomainSummary

    @classmethod
    def fit(cls, X: np.ndarray, X_cal: np.ndarray | None = None) -> "FeatureDomain":
        """Summarise the features ``(n, D)`` of the images a model is fitted on.

        Args:
            X: the training images' features (the mean).
            X_cal: held-out in-domain images (the validation split) that calibrate the limit; without them the
                limit is the training images' own 99th percentile.
        """
        X = np.asarray(X, np.float64)
        mean = X.mean(0)
        d = cosine_distance(X, mean)
        pct = {f"p{q}": round(float(np.percentile(d, q)), 6) for q in (50, 90, 99)}
        common = {"n": len(X), "dim": X.shape[1], "distances": {**pct, "max": round(float(d.max()), 6)}}
        if X_cal is None or not len(X_cal):
            summary = DomainSummary(threshold=max(float(np.quantile(d, QUANTILE)), 1e-6), **common)
        else:
            limit = conformal_limit(cosine_distance(np.asarray(X_cal, np.float64), mean), QUANTILE)
            summary = DomainSummary(threshold=max(limit, 1e-6), calibration="validation",
                                    n_calibration=len(X_cal), **common)
        return cls(mean.astype(np.float32), summary)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Each row's distance over the calibrated limit: above 1 lies beyond the in-domain images."""
        return cosine_distance(X, self.mean) / self.summary.threshold

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(tensors, json)`` for the model artifact."""
        return {TENSOR: self.mean}, self.summary.model_dump()

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], summary: dict | None, where: str) -> "FeatureDomain | None":
        """The saved summary, or ``None`` for a model saved before medcbm stored one (the guard is then off).

        Raises:
            DataError: ``model.json`` has a summary but the weights lack its mean vector, or its width differs.
        """
        if summary is None:
            logger.debug("%s has no training feature summary (saved by an older medcbm): the domain guard is off",
                         where)
            return None
        s = DomainSummary.model_validate(summary)
        mean = tensors.get(TENSOR)
        if mean is None or mean.shape != (s.dim,):
            got = "missing" if mean is None else f"of shape {mean.shape}"
            raise DataError(f"{where}: tensor '{TENSOR}' is {got}, model.json 'feature_domain' implies ({s.dim},); "
                            "restore the files saved with the model")
        return cls(mean, s)
