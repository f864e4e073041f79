"""Turn a concept bank's class–concept prior into a KnoBo ``W_prior`` over groundable concepts."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from medcbm._config import load_yaml_mapping
from medcbm._resources import resource_path
from medcbm.errors import ConfigError


def expert_prior_file() -> Path:
    """The reviewed ABCD / 7-point-checklist prior over the PH2 criteria (``knowledge/priors``)."""
    return resource_path("knowledge", "priors", "ph2_benign_malignant.yaml")


def load_prior_file(path: str | os.PathLike) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Read a reviewed prior (``knowledge/priors/*.yaml``): two classes, signs for the second, references.

    Returns:
        ``({class: {concept: -1|0|1}}, {concept: reference})``.
    """
    p = Path(path)
    raw = load_yaml_mapping(p, what="prior")
    classes = raw.get("classes")
    if not isinstance(classes, list) or len(classes) != 2 or classes[1] not in raw:
        raise ConfigError(f"{p}: needs 'classes: [negative, positive]' and a mapping under the positive class")
    neg, pos = classes
    prior: dict[str, dict[str, int]] = {neg: {}, pos: {}}
    refs = {}
    for concept, entry in raw[pos].items():
        v = entry.get("prior") if isinstance(entry, dict) else None
        if v not in (-1, 0, 1):
            raise ConfigError(f"{p}: {pos}.{concept}.prior must be -1, 0 or 1, got {v!r}")
        if not isinstance(entry, dict) or not entry.get("reference"):
            raise ConfigError(f"{p}: {pos}.{concept} needs a reference")
        prior[pos][concept], prior[neg][concept] = v, -v
        refs[concept] = entry["reference"]
    return prior, refs

logger = logging.getLogger(__name__)


def grounded_prior(bank, classes: list[str], *, source_prefix: str = "ph2:", class_map: dict[str, str] | None = None,
                   contrastive: bool = True) -> tuple[dict[str, dict[str, int]], dict]:
    """Prior over the annotation vocabulary that the bank's concepts are grounded to.

    Several bank concepts can ground to one annotation (``peppering`` and ``regression areas`` ->
    ``ph2:regression_areas``); their priors are averaged. With ``contrastive`` the prior is centred across
    classes before taking the sign: a finding that the literature links to *every* class (+1 everywhere)
    says nothing about which class it is, so it gets 0 instead of pushing all weights up.

    Args:
        bank: a :class:`medcbm.concepts.schema.ConceptBank`.
        classes: the model's class names.
        source_prefix: which grounding sources to use (``ph2:``, ``cxr_notes:``).
        class_map: model class -> bank class key, when names differ.
        contrastive: centre across classes before the sign.

    Returns:
        ``({class: {concept: -1|0|1}}, provenance)`` where provenance lists, per concept, the bank concepts used.
    """
    class_map = class_map or {c: c for c in classes}
    keys = {c.key for c in bank.classes}
    missing = [c for c in classes if class_map.get(c) not in keys]
    if missing:
        raise ConfigError(f"concept bank {bank.name if hasattr(bank, 'name') else ''} has classes {sorted(keys)}; "
                          f"model classes {missing} have no match (give class_map)")
    acc: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    used: dict[str, list[str]] = defaultdict(list)
    for concept in bank.concepts:
        src = concept.grounding.source or ""
        if concept.grounding.status != "annotation" or not src.startswith(source_prefix):
            continue
        target = src[len(source_prefix):]
        used[target].append(concept.id)
        by_class = {a.class_key: a.prior for a in concept.classes}
        for c in classes:
            acc[target][c].append(by_class.get(class_map[c], 0))
    prior: dict[str, dict[str, int]] = {c: {} for c in classes}
    for target, per_class in acc.items():
        v = np.array([np.mean(per_class[c]) for c in classes], dtype=float)
        if contrastive:
            v = v - v.mean()
        for c, x in zip(classes, v):
            prior[c][target] = int(np.sign(x)) if abs(x) > 1e-9 else 0
    if not used:
        logger.warning("no bank concept is grounded with prefix %r; the prior is empty", source_prefix)
    return prior, {"bank_concepts_per_target": dict(used), "contrastive": contrastive}
