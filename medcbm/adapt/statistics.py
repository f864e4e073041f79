"""Per-concept statistics of a support set from a new site, in the base model's standardised space.

* **harm** (confounding): the first-order change of the support cross-entropy when a concept's
  contribution is switched off. For image ``i`` with class probabilities ``p_i`` and one-hot label
  ``y_i``, ``d loss / d alpha_j = sum_k (p_ik - y_ik) * Z_ij * W_kj`` for the concept's contribution scaled
  by ``alpha_j``. A positive mean means the concept pushes support images towards a wrong class: masking
  it lowers the loss. Averaged with equal weight per class.
* **under-activation**: how much of its source class separation a discriminative concept keeps at the
  new site. Separation is measured along the model's own weights, ``S_j = sum_k (W_kj - mean_k W_j) *
  (mu_kj - mean_k mu_j)`` with class means ``mu`` of ``Z``; the source means are the model's
  ``class_means_``. A concept that still separates the classes the right way but less than at the source
  (``0 < S_tgt < S_src``) fires too weakly and is a candidate for amplification; the statistic is the
  separation lost, ``S_src - S_tgt``, in logit units.
"""

from __future__ import annotations

import numpy as np

from medcbm.bottleneck.estimator import softmax
from medcbm.errors import DataError


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights giving every present class the same total weight (sum 1)."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = (counts > 0).sum()
    return 1.0 / (counts[y] * present)


def balanced_mean(Z: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean of ``Z`` with every present class weighted equally."""
    return class_weights(y, n_classes) @ Z


def class_means(Z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(means (C, K), present (C,) bool)``; rows of absent classes are zero."""
    present = np.bincount(y, minlength=n_classes) > 0
    M = np.zeros((n_classes, Z.shape[1]), np.float32)
    for c in np.flatnonzero(present):
        M[c] = Z[y == c].mean(0)
    return M, present


def harm(Z: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Confounding statistic per concept ``(K,)``; positive = the concept hurts the support set."""
    G = softmax(Z @ W.T + b)
    G[np.arange(len(y)), y] -= 1.0
    return class_weights(y, W.shape[0]) @ (Z * (G @ W))


def separation(M: np.ndarray, present: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Class separation of every concept along the model's weights, over the present classes ``(K,)``."""
    Wp, Mp = W[present], M[present]
    return ((Wp - W.mean(0)) * (Mp - Mp.mean(0))).sum(0)


def source_class_means(model) -> np.ndarray:
    """The base model's per-class training means in standardised space ``(C, K)``."""
    cm = getattr(model, "class_means_", None)
    if cm is None:
        raise DataError("this model was saved without per-class concept means (trained before medcbm 0.4); "
                        "retrain it with `medcbm train` to adapt it")
    return (np.asarray(cm, np.float32) - model.p_mean_) / model.p_scale_


def under_activation(Z: np.ndarray, y: np.ndarray, W: np.ndarray, source_means: np.ndarray) -> np.ndarray:
    """Separation lost at the new site per concept ``(K,)``; 0 where the concept is not an amplification
    candidate (fewer than two classes in the support, not discriminative at the source, reversed or
    stronger at the new site)."""
    M, present = class_means(Z, y, W.shape[0])
    if present.sum() < 2:
        return np.zeros(Z.shape[1], np.float32)
    s_src = separation(source_means, present, W)
    s_tgt = separation(M, present, W)
    eligible = (s_src > 0) & (s_tgt > 0) & (s_tgt < s_src)
    return np.where(eligible, s_src - s_tgt, 0.0).astype(np.float32)


def site_shift(Z: np.ndarray, y: np.ndarray, source_means: np.ndarray) -> np.ndarray:
    """Mean within-class shift of every concept at the new site relative to the source ``(K,)``."""
    M, present = class_means(Z, y, source_means.shape[0])
    return (M[present] - source_means[present]).mean(0)
