"""Turn a concept bank's class–concept prior into a KnoBo ``W_prior`` over groundable concepts."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from medcbm._config import load_yaml_mapping
from medcbm._resources import resource_path
from medcbm.errors import ConfigError


def shipped_prior_file(dataset: str) -> Path | None:
    """The reviewed prior shipped for an annotation dataset (``knowledge/priors/<dataset>_*.yaml``), if one."""
    found = sorted(resource_path("knowledge", "priors").glob(f"{dataset}_*.yaml"))
    if len(found) > 1:
        raise ConfigError(f"several shipped priors for '{dataset}' ({[p.name for p in found]}); name one in the "
                          "source's `prior` key")
    return found[0] if found else None


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


def merge_prior_files(paths: Sequence[str | os.PathLike]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Union of several reviewed prior files; a concept given two different signs is an error."""
    prior: dict[str, dict[str, int]] = {}
    refs: dict[str, str] = {}
    origin: dict[tuple[str, str], str] = {}
    for path in paths:
        one, r = load_prior_file(path)
        for cls, entries in one.items():
            for concept, v in entries.items():
                have = prior.setdefault(cls, {}).get(concept)
                if have is not None and have != v:
                    raise ConfigError(f"prior files disagree on {cls}.{concept}: {have} in {origin[cls, concept]}, "
                                      f"{v} in {path}; fix one of them")
                prior[cls][concept] = v
                origin[cls, concept] = str(path)
        refs.update(r)
    return prior, refs


def vote(values: Sequence[int]) -> int:
    """+1 if some say +1 and none -1 (and vice versa); conflicting or no knowledge -> 0."""
    pos, neg = any(v > 0 for v in values), any(v < 0 for v in values)
    return 1 if pos and not neg else -1 if neg and not pos else 0


def grounded_targets(concept, prefixes: Sequence[str]) -> list[str]:
    """The annotated concepts a bank concept is grounded to under these source prefixes (prefix stripped)."""
    out = []
    for src in concept.grounding.sources:  # primary source first, then extra annotation vocabularies
        prefix = next((p for p in prefixes if src.startswith(p)), None)
        if prefix is not None and src[len(prefix):] not in out:
            out.append(src[len(prefix):])
    return out


def bank_prior(bank, classes: Sequence[str], *, prefixes: Sequence[str] = ("ph2:",),
               class_map: Mapping[str, Sequence[str]] | None = None,
               rule: Literal["contrastive", "vote"] = "contrastive") -> tuple[dict[str, dict[str, int]], dict]:
    """The bank's class–concept prior, re-expressed over the concepts its entries are grounded to.

    Several bank concepts can ground to one annotated concept (``peppering`` and ``regression areas`` ->
    ``ph2:regression_areas``), and a model class can stand for several bank classes (``other`` ->
    ``pneumonia``, ``no_finding``). Bank classes a model class stands for are merged with :func:`vote`;
    bank concepts on one target are then merged by ``rule``:

    - ``contrastive``: mean over the bank concepts, centred across classes, then the sign — a finding the
      literature links to *every* class says nothing about which class it is, so it gets 0;
    - ``vote``: :func:`vote` over the bank concepts (zeros omitted).

    Args:
        bank: a :class:`medcbm.concepts.schema.ConceptBank`.
        classes: the model's class names.
        prefixes: grounding sources to use (``ph2:``, ``derm7pt:``, ``cxr_notes:``); the prefix is stripped.
        class_map: model class -> bank class keys (default: the class itself).
        rule: see above.

    Returns:
        ``({class: {concept: -1|0|1}}, provenance)``; provenance lists the bank concepts behind each target.

    Raises:
        ConfigError: a class has no bank counterpart, or no bank concept is grounded to these sources.
    """
    keys = set(bank.class_keys)
    members = {c: list((class_map or {}).get(c, [c])) for c in classes}
    missing = {c: [k for k in m if k not in keys] for c, m in members.items() if any(k not in keys for k in m)}
    if missing:
        raise ConfigError(f"concept bank '{bank.name}' has classes {sorted(keys)}; model classes {sorted(missing)} "
                          "have no match: give a class map (prior_class_map: {model class: [bank classes]})")
    acc: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    used: dict[str, list[str]] = defaultdict(list)
    for concept in bank.concepts:
        signs = {a.class_key: a.prior for a in concept.classes}
        for target in grounded_targets(concept, prefixes):
            used[target].append(concept.id)
            for c in classes:
                acc[target][c].append(vote([signs.get(k, 0) for k in members[c]]))
    if not used:
        raise ConfigError(f"no concept of bank '{bank.name}' is grounded to {list(prefixes)}; align the bank "
                          "(medcbm concepts align) or use another prior")
    prior: dict[str, dict[str, int]] = {c: {} for c in classes}
    for target, per_class in acc.items():
        if rule == "contrastive":
            v = np.array([np.mean(per_class[c]) for c in classes], dtype=float)
            v = v - v.mean()
            for c, x in zip(classes, v):
                prior[c][target] = int(np.sign(x)) if abs(x) > 1e-9 else 0
        else:
            for c in classes:
                sign = vote(per_class[c])
                if sign:
                    prior[c][target] = sign
    return prior, {"bank": bank.name, "bank_concepts_per_target": dict(used), "rule": rule}
