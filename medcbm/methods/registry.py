"""The benchmark-method contract and registry.

A method receives one seed's data as :class:`MethodInput` — labelled ``train`` and ``val`` splits, and
test splits *without labels* (:class:`~medcbm.data.samples.UnlabelledSplit`) — and returns the fitted
model with class probabilities for every test split. The benchmark harness keeps the test labels and
scores the output; a method cannot reach them, because they are never handed over.

Methods are registered by name (``register_method``); the concept-bottleneck methods are registered
from the YAML files in ``configs/methods/`` (see :mod:`medcbm.methods.cbm`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from medcbm._registry import Registry
from medcbm.backbones import BackboneSpec
from medcbm.data.samples import LabelledSplit, UnlabelledSplit

logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """Resources shared by every method and seed of one benchmark run.

    Attributes:
        backbone: the protocol's backbone (the features in the splits' ``X``).
        data_root: where the datasets live (grounding datasets are read from here).
        cache_dir: feature cache.
        progress: show progress bars.
        memo: fitted pieces reused across seeds and methods (e.g. concept probes), keyed by their settings.
    """

    backbone: BackboneSpec
    data_root: Any = None
    cache_dir: Any = None
    progress: bool = False
    memo: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInput:
    """One seed: labelled ``train``/``val``, unlabelled ``test`` splits (``test_id``, ``test_ood``, ...)."""

    train: LabelledSplit
    val: LabelledSplit
    test: dict[str, UnlabelledSplit]
    classes: list[str]
    seed: int
    context: MethodContext


@dataclass
class MethodOutput:
    """What a method hands back to the harness.

    Attributes:
        proba: class probabilities for every split of ``MethodInput.test`` (and optionally ``val``).
        model: the fitted model (kept for audits and adaptation).
        concepts: concept probabilities per split, for concept models (written with the predictions).
        concept_names: names of the concept columns.
        info: free, JSON-serialisable details (chosen hyper-parameters, probe AUROCs, ...).
    """

    proba: dict[str, np.ndarray]
    model: Any = None
    concepts: dict[str, np.ndarray] | None = None
    concept_names: list[str] | None = None
    info: dict = field(default_factory=dict)


MethodFn = Callable[[MethodInput], MethodOutput]
METHODS: Registry[MethodFn] = Registry("method", plugins=("medcbm.methods.linear_probe", "medcbm.methods.cbm"))


def register_method(name: str, *, datasets: tuple[str, ...] | None = None,
                    description: str = "") -> Callable[[MethodFn], MethodFn]:
    """Decorator: register a benchmark method under ``name``.

    Args:
        datasets: datasets the method applies to (PH2-grounded concepts only make sense for dermoscopy);
            ``None`` means any.
        description: one line for listings (defaults to the function's docstring).
    """

    def deco(fn: MethodFn) -> MethodFn:
        desc = description or (fn.__doc__ or "").strip().split("\n")[0]
        return METHODS.add(name, fn, datasets=datasets, description=desc)

    return deco


def list_methods(dataset: str | None = None, pattern: str | None = None) -> list[str]:
    """Registered method names, optionally only those applicable to ``dataset`` and matching a glob."""
    return METHODS.names(pattern, datasets=dataset)


def get_method(name: str) -> MethodFn:
    """The method called ``name`` (the error lists the available ones)."""
    return METHODS.get(name)
