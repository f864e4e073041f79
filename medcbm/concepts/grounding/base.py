"""The grounding interface: image features -> calibrated concept probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from medcbm.errors import DataError


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


class ConceptGrounder(ABC):
    """Maps backbone features to concept probabilities ``(n, K)`` in ``concept_names_`` order."""

    concept_names_: list[str]

    @abstractmethod
    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability that each concept is present."""

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:  # pragma: no cover - overridden
        """Tensors and JSON metadata that reconstruct the fitted grounder (for safetensors artifacts)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")
