"""What an adaptation changes, and the adapted model that applies it on top of an untouched base CBM.

Every adapter in :mod:`medcbm.adapt` produces one :class:`ConceptEdit` in the base model's standardised
concept space ``Z = (P - p_mean_) / p_scale_``:

    logits = (scale * Z + shift) @ W.T + b

Masking a concept is ``scale_j = 0`` (its activation replaced by the source mean, so its contribution is
zero — in this parametrisation that is *the same* as zeroing its weight column); amplifying it is
``scale_j > 1`` about a centre; head refits change ``W`` and ``b``. The concept probes never change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcbm.bottleneck.estimator import ConceptClassifierMixin, KnowledgeCBM


@dataclass(frozen=True)
class ConceptEdit:
    """Per-concept affine edit of standardised activations plus the (possibly refitted) linear head."""

    scale: np.ndarray  # (K,)
    shift: np.ndarray  # (K,)
    W: np.ndarray  # (C, K)
    b: np.ndarray  # (C,)

    @classmethod
    def identity(cls, model: KnowledgeCBM) -> "ConceptEdit":
        K = len(model.concept_names_)
        return cls(np.ones(K, np.float32), np.zeros(K, np.float32), np.asarray(model.W_, np.float32),
                   np.asarray(model.b_, np.float32))

    def concepts(self, Z: np.ndarray) -> np.ndarray:
        """Edited standardised activations ``(n, K)``."""
        return Z * self.scale + self.shift

    def logits(self, Z: np.ndarray) -> np.ndarray:
        return self.concepts(Z) @ self.W.T + self.b

    def then(self, other: "ConceptEdit") -> "ConceptEdit":
        """This edit's concepts edited again by ``other`` and read by ``other``'s head (one affine edit)."""
        return ConceptEdit((other.scale * self.scale).astype(np.float32),
                           (other.scale * self.shift + other.shift).astype(np.float32), other.W, other.b)

    def changed(self, base: "ConceptEdit", tol: float = 1e-6) -> bool:
        return any(not np.allclose(a, c, atol=tol) for a, c in
                   ((self.scale, base.scale), (self.shift, base.shift), (self.W, base.W), (self.b, base.b)))

    def to_json(self) -> dict:
        return {k: np.round(np.asarray(getattr(self, k), float), 6).tolist() for k in ("scale", "shift", "W", "b")}

    @classmethod
    def from_json(cls, d: dict) -> "ConceptEdit":
        return cls(*(np.asarray(d[k], np.float32) for k in ("scale", "shift", "W", "b")))


def standardise(model: KnowledgeCBM, P: np.ndarray) -> np.ndarray:
    """Concept probabilities in the base model's input space (clipped to its training range, standardised)."""
    return model.concept_inputs(np.asarray(P, np.float32)).astype(np.float32)


class AdaptedCBM(ConceptClassifierMixin):
    """A base :class:`KnowledgeCBM` with a :class:`ConceptEdit` applied; predicts like any CBM.

    The base model object is shared, never modified: drop the edit and the base predictions come back.
    """

    def __init__(self, base: KnowledgeCBM, edit: ConceptEdit, *, site: str | None = None):
        self.base, self.edit, self.site = base, edit, site

    @property
    def W_(self) -> np.ndarray:
        return self.edit.W

    def predict_concepts(self, X: np.ndarray, groups=None) -> np.ndarray:
        """The base model's concept probabilities (the probes are not adapted)."""
        return self.base.predict_concepts(X, groups)

    def decision_function_from_concepts(self, P: np.ndarray) -> np.ndarray:
        return self.edit.logits(standardise(self.base, P))

    def contributions_from_concepts(self, P: np.ndarray) -> np.ndarray:
        """Per-sample, per-class, per-concept contribution to the adapted logit ``(n, C, K)``."""
        Z = self.edit.concepts(standardise(self.base, P))
        return Z[:, None, :] * self.edit.W[None, :, :]

    @property
    def b_(self) -> np.ndarray:
        return self.edit.b

    def __getattr__(self, name: str):
        # everything the edit does not change (prior_, recipe_, p_mean_, grounder, backbone_, ...) is the base's
        if name.startswith("__") or name in ("base", "edit", "site"):
            raise AttributeError(name)
        return getattr(self.base, name)
