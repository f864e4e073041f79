"""Backbones: registry of specs, offline loaders, and cached feature extraction."""

from medcbm.backbones import specs as _specs  # noqa: F401  (registers the built-in specs)
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec, list_backbones, register_backbone
from medcbm.backbones.loaders import FeatureExtractor, create_backbone

__all__ = ["BackboneSpec", "FeatureExtractor", "create_backbone", "get_backbone_spec", "list_backbones",
           "register_backbone"]
