"""Benchmark methods: the label-safe contract (:mod:`.registry`), the linear-probe baselines and the
concept-bottleneck methods registered from ``configs/methods/*.yaml``.

Depends on the model (:mod:`medcbm.bottleneck`) and never the reverse.
"""

from medcbm.methods.registry import (METHODS, MethodContext, MethodInput, MethodOutput, get_method, list_methods,
                                     register_method)

__all__ = ["METHODS", "MethodContext", "MethodInput", "MethodOutput", "get_method", "list_methods", "register_method"]
