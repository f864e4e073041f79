"""The concept bottleneck: a knowledge-prior-constrained linear layer over concept probabilities.

Names are resolved lazily so that ``medcbm --help`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"KnowledgeCBM": "estimator", "prior_matrix": "estimator", "BottleneckConfig": "trainer"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medcbm.bottleneck.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medcbm.bottleneck' has no attribute '{name}'")
