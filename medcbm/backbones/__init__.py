"""Backbones: registry of specs, offline loaders, and cached feature extraction.

The public names are imported on first use (PEP 562): the registry pulls in MONAI and torch, and the CLI
imports ``medcbm.backbones.cli`` at start-up, which must stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"BackboneSpec": "_registry", "get_backbone_spec": "_registry", "list_backbones": "_registry",
            "register_backbone": "_registry", "FeatureExtractor": "loaders", "create_backbone": "loaders"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medcbm.backbones' has no attribute {name!r}")
    return getattr(importlib.import_module(f"medcbm.backbones.{_EXPORTS[name]}"), name)
