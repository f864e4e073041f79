"""The grounding interface: image features -> calibrated concept probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.special import expit

from medcbm._registry import Registry
from medcbm.errors import DataError

#: saved grounder kind -> class with ``from_state(tensors, meta)`` (artifacts rebuild grounders through it)
GROUNDERS: Registry[type] = Registry("grounder", plugins=("medcbm.concepts.grounding",))


def check_features(X: np.ndarray, *, name: str = "features", dim: int | None = None) -> np.ndarray:
    """Reject NaN/inf and wrong widths with a message that says what to do."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (samples x dims), got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise DataError(f"{name} have {X.shape[1]} dims but the model was fitted on {dim}: "
                        "were they extracted with another backbone or preprocessing?")
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))[:5].tolist()
        raise DataError(f"{name} contain NaN or infinite values (rows {rows}...); re-extract features or drop those images")
    return X


def fit_platt(logits: np.ndarray, Y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Per-concept ``(a, b)`` so that ``sigmoid(a * logit + b)`` is calibrated (unweighted BCE).

    Args:
        logits: ``(n, K)`` raw concept scores.
        Y: ``(n, K)`` 0/1 labels.
        M: ``(n, K)`` mask of labelled entries.
    """
    z = np.stack([logits, np.ones_like(logits)], -1)  # (n, K, 2)
    coef = []
    for k in range(Y.shape[1]):
        m = M[:, k]
        zk, yk = z[m, k], Y[m, k]
        ab = np.array([1.0, 0.0])
        for _ in range(50):  # Newton steps on a 2-parameter logistic fit
            p = expit(zk @ ab)
            g = zk.T @ (p - yk) + 1e-3 * ab
            H = (zk * (p * (1 - p))[:, None]).T @ zk + 1e-3 * np.eye(2)
            step = np.linalg.solve(H, g)
            ab -= step
            if np.abs(step).max() < 1e-8:
                break
        coef.append(ab)
    return np.array(coef, dtype=np.float32)


def apply_platt(logits: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(a * logit + b)`` with ``calib (K, 2)`` from :func:`fit_platt`."""
    return expit(calib[:, 0] * logits + calib[:, 1])


class ConceptGrounder(ABC):
    """Maps backbone features to concept probabilities ``(n, K)`` in ``concept_names_`` order."""

    concept_names_: list[str]

    @abstractmethod
    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that each concept is present."""

    def leaves(self) -> list["ConceptGrounder"]:
        """The fitted grounders inside this one (itself, unless it composes others): where probe statistics live."""
        return [self]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:  # pragma: no cover - overridden
        """Tensors and JSON metadata that reconstruct the fitted grounder (for safetensors artifacts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")


def register_grounder(kind: str):
    """Class decorator: register a grounder class under the ``kind`` its saved metadata carries."""

    def deco(cls: type) -> type:
        cls.kind = kind
        return GROUNDERS.add(kind, cls)

    return deco


def grounder_from_state(tensors: dict[str, np.ndarray], meta: dict) -> ConceptGrounder:
    """Rebuild a saved grounder from its tensors and metadata (``meta["kind"]`` picks the class)."""
    return GROUNDERS.get(meta.get("kind", "<missing>")).from_state(tensors, meta)
