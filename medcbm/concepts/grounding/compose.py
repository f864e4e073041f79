"""Grounders built from other grounders: a linear projection in front, or several side by side."""

from __future__ import annotations

import numpy as np

from medcbm.concepts.grounding.base import ConceptGrounder, check_features, grounder_from_state, register_grounder
from medcbm.errors import ConfigError


def _prefixed(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@register_grounder("projected")
class ProjectedGrounder(ConceptGrounder):
    """``inner`` applied to ``(X - mean) @ components.T`` (a PCA fitted on training images).

    With ~150 training images and 1280-d features, report-derived probes are near-separable and slow; a
    projection on the training split's principal components regularises them.
    """

    def __init__(self, inner: ConceptGrounder, mean: np.ndarray, components: np.ndarray):
        self.inner, self.mean, self.components = inner, np.asarray(mean), np.asarray(components)
        self.concept_names_ = list(inner.concept_names_)

    @classmethod
    def from_pca(cls, inner: ConceptGrounder, pca) -> "ProjectedGrounder":
        """Wrap a fitted grounder with a fitted scikit-learn ``PCA`` (whitening off)."""
        if getattr(pca, "whiten", False):
            raise ConfigError("a whitened PCA cannot be stored as a plain projection")
        return cls(inner, pca.mean_, pca.components_)

    def project(self, X: np.ndarray) -> np.ndarray:
        """Projected features, computed as scikit-learn's ``PCA.transform`` does."""
        X = check_features(X, dim=self.components.shape[1])
        return ((X - self.mean) @ self.components.T).astype(np.float32)

    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        return self.inner.predict_concepts(self.project(X))

    def leaves(self) -> list[ConceptGrounder]:
        return self.inner.leaves()

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        t, meta = self.inner.get_state()
        tensors = {"pca_mean": self.mean, "pca_components": self.components, **{f"inner.{k}": v for k, v in t.items()}}
        return tensors, {"kind": self.kind, "inner": meta}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> "ProjectedGrounder":
        inner = grounder_from_state(_prefixed(tensors, "inner."), meta["inner"])
        return cls(inner, tensors["pca_mean"], tensors["pca_components"])


@register_grounder("union")
class ConceptUnion(ConceptGrounder):
    """Several grounders' concepts side by side, as one concept layer (names must not repeat)."""

    def __init__(self, parts: list[ConceptGrounder]):
        if not parts:
            raise ConfigError("a concept union needs at least one grounder")
        names = [n for p in parts for n in p.concept_names_]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"concepts {dup} come from more than one grounding source; keep each in one source "
                              "(grounding.sources[*].concepts) or rename it")
        self.parts = list(parts)
        self.concept_names_ = names

    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([p.predict_concepts(X) for p in self.parts], axis=1)

    def leaves(self) -> list[ConceptGrounder]:
        return [leaf for p in self.parts for leaf in p.leaves()]

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors, metas = {}, []
        for i, p in enumerate(self.parts):
            t, m = p.get_state()
            tensors.update({f"part{i}.{k}": v for k, v in t.items()})
            metas.append(m)
        return tensors, {"kind": self.kind, "parts": metas}

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> "ConceptUnion":
        return cls([grounder_from_state(_prefixed(tensors, f"part{i}."), m) for i, m in enumerate(meta["parts"])])
