"""Registry of benchmark methods. A method maps one seed's split features to test probabilities.

Later stages (concept bottleneck, adaptation) register themselves here, so ``medcbm bench shift``
reports every method side by side from the same splits and features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from medcbm.errors import RegistryError

logger = logging.getLogger(__name__)


@dataclass
class MethodInput:
    """One seed's data: features ``X[split]``, labels ``y[split]``, metadata ``frames[split]``."""

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    frames: dict[str, pd.DataFrame]
    classes: list[str]
    seed: int
    context: dict = field(default_factory=dict)  # shared resources (backbone spec, cache dir, data root, ...)


@dataclass
class MethodOutput:
    """Class probabilities per evaluated split (at least ``test_id`` and ``test_ood``) and free info."""

    proba: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)


MethodFn = Callable[[MethodInput], MethodOutput]
_METHODS: dict[str, MethodFn] = {}
_DATASETS: dict[str, tuple[str, ...] | None] = {}


def register_method(name: str, *, datasets: tuple[str, ...] | None = None) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register a benchmark method under ``name``.

    Args:
        datasets: datasets the method applies to (e.g. PH2-grounded concepts only make sense for
            dermoscopy); ``None`` means any.
    """

    def deco(fn: MethodFn) -> MethodFn:
        _METHODS[name] = fn
        _DATASETS[name] = datasets
        return fn

    return deco


def list_methods(dataset: str | None = None) -> list[str]:
    """Registered method names, optionally only those applicable to ``dataset``."""
    _load_plugins()
    return sorted(m for m in _METHODS if dataset is None or _DATASETS[m] is None or dataset in _DATASETS[m])


def get_method(name: str) -> MethodFn:
    _load_plugins()
    if name not in _METHODS:
        raise RegistryError(f"unknown method '{name}'. Available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def _load_plugins() -> None:
    # methods defined in other subpackages register on import; import them lazily here
    import importlib

    for mod in ("medcbm.evaluation.probe", "medcbm.bottleneck.methods", "medcbm.bottleneck.cxr"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            # only "this optional stage is not there" is fine; a broken import inside it must surface
            if exc.name is None or not mod.startswith(exc.name):
                raise
