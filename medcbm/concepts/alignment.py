"""Grounding map: align bank concepts with annotation vocabularies we can ground offline.

Targets: the PH2 dermoscopic criteria (``PH2_CONCEPTS`` + ``knowledge/mappings/ph2_criteria.yaml``) and
the chest X-ray findings readable from the X-ray set's clinical notes
(``knowledge/mappings/cxr_notes_findings.yaml``); for dermoscopy also, as extra targets, the Derm7pt
7-point-checklist concepts (``DERM7PT_CONCEPTS`` + ``knowledge/mappings/derm7pt_criteria.yaml``).
A concept is grounded to a target when

1. a reviewed override says so (``{concept_id: "ph2:streaks" | null}``), else
2. one of its terms matches one of the target's phrases in the mapping file (method ``mapping``), else
3. the embedding similarity of its question/name to the target's question reaches ``threshold``
   (method ``embedding``; the similarity is recorded so a reviewer can check it).

Extra targets are aligned the same way, separately, and never change a primary grounding: a concept
grounded to the primary targets keeps it and lists phrase-map (rule 2) matches of the extra targets in
``grounding.extra_sources``; a concept the primary targets leave ungrounded takes its extra-target
grounding (rules 2 and 3) as its grounding. So PH2 groundings stay exactly as they were.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import yaml

from medcbm._resources import resource_path
from medcbm.concepts.filters import EmbedFn, embed_minilm
from medcbm.concepts.schema import Concept, ConceptBank, Grounding
from medcbm.errors import DataError

logger = logging.getLogger(__name__)


def _mappings_dir() -> Path:
    return resource_path("knowledge", "mappings")


DEFAULT_THRESHOLD = 0.75
#: grounding methods of :mod:`medcbm.concepts.citations` that re-alignment keeps as they are
KEPT_METHODS = ("vocabulary", "lexicon")


@dataclass(frozen=True)
class Target:
    """An annotation concept we can ground to (``source`` like ``ph2:streaks``)."""

    source: str
    question: str
    phrases: tuple[str, ...]


def _read_yaml(path: Path, key: str) -> dict:
    if not path.is_file():
        raise DataError("mapping file not found", path=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"mapping file is not valid YAML ({err})", path=str(path)) from None
    if not isinstance(data.get(key), dict):
        raise DataError(f"mapping file needs a '{key}' mapping", path=str(path), field=key)
    return data[key]


def _criteria_targets(prefix: str, vocab: Mapping[str, tuple[str, str]], path: Path) -> list[Target]:
    """Targets ``<prefix>:<key>`` in vocabulary order (questions from ``vocab``, phrases from ``path``)."""
    phrases = _read_yaml(path, "criteria")
    unknown = sorted(set(phrases) - set(vocab))
    if unknown:
        raise DataError(f"unknown {prefix} criteria {unknown}; known: {sorted(vocab)}", path=str(path), field="criteria")
    return [Target(f"{prefix}:{k}", q, tuple(phrases.get(k, []))) for k, (q, _) in vocab.items()]


def ph2_targets(path: str | Path | None = None) -> list[Target]:
    """PH2 criteria as targets (questions from ``PH2_CONCEPTS``, phrases from the mapping file)."""
    from medcbm.data.ph2_vocab import PH2_CONCEPTS

    return _criteria_targets("ph2", PH2_CONCEPTS, Path(path) if path else _mappings_dir() / "ph2_criteria.yaml")


def derm7pt_targets(path: str | Path | None = None) -> list[Target]:
    """Derm7pt checklist concepts as targets (``DERM7PT_CONCEPTS`` + ``derm7pt_criteria.yaml``)."""
    from medcbm.data.derm7pt_vocab import DERM7PT_CONCEPTS

    return _criteria_targets("derm7pt", DERM7PT_CONCEPTS,
                             Path(path) if path else _mappings_dir() / "derm7pt_criteria.yaml")


def pattern_targets(modality: str) -> list[Target]:
    """Whole-lesion pattern concepts as targets (``ph2:melanoma_pattern``, ``derm7pt:bcc_pattern``; phrases from
    the mapping files' ``patterns`` key). Not aligned by :func:`align_bank`; :mod:`medcbm.concepts.citations` uses them."""
    if modality != "dermoscopy":
        return []
    from medcbm.data.derm7pt_vocab import DERM7PT_PATTERN_CONCEPTS
    from medcbm.data.ph2_vocab import PH2_PATTERN_CONCEPTS

    out = []
    for prefix, vocab in (("ph2", PH2_PATTERN_CONCEPTS), ("derm7pt", DERM7PT_PATTERN_CONCEPTS)):
        path = _mappings_dir() / f"{prefix}_criteria.yaml"
        phrases = yaml.safe_load(path.read_text(encoding="utf-8")).get("patterns") or {}
        unknown = sorted(set(phrases) - set(vocab))
        if unknown:
            raise DataError(f"unknown {prefix} patterns {unknown}; known: {sorted(vocab)}", path=str(path), field="patterns")
        out += [Target(f"{prefix}:{k}", q, tuple(phrases.get(k, []))) for k, (q, _) in vocab.items()]
    return out


def cxr_notes_vocab(path: str | Path | None = None) -> dict[str, dict]:
    """``{finding: {"question": str, "synonyms": [...]}}`` from ``cxr_notes_findings.yaml``."""
    p = Path(path) if path else _mappings_dir() / "cxr_notes_findings.yaml"
    findings = _read_yaml(p, "findings")
    for k, v in findings.items():
        if not isinstance(v, dict) or not v.get("question") or not isinstance(v.get("synonyms"), list):
            raise DataError("each finding needs 'question' and a 'synonyms' list", path=str(p), field=f"findings.{k}")
    return findings


def cxr_targets(path: str | Path | None = None) -> list[Target]:
    """Clinical-notes findings as targets."""
    return [Target(f"cxr_notes:{k}", v["question"], tuple(v["synonyms"])) for k, v in cxr_notes_vocab(path).items()]


TARGETS = {"dermoscopy": ph2_targets, "chest_xray": cxr_targets}
# further vocabularies per modality, aligned after the primary one (see the module docstring)
EXTRA_TARGETS: dict[str, tuple[Callable[[], list[Target]], ...]] = {"dermoscopy": (derm7pt_targets,)}


def norm_term(s: str) -> str:
    """A concept term compared loosely: lower case, runs of spaces, hyphens, underscores and slashes as one space."""
    return re.sub(r"[\s\-_/]+", " ", s.lower()).strip()


def align_concept(concept: Concept, targets: Sequence[Target], tvecs: np.ndarray | None, cvec: np.ndarray | None,
                  threshold: float) -> Grounding:
    """Grounding of one concept (see the module docstring for the rules)."""
    terms = {norm_term(t) for t in concept.terms}
    for t in targets:
        if terms & {norm_term(p) for p in t.phrases}:
            return Grounding(status="annotation", source=t.source, method="mapping", similarity=1.0)
    if tvecs is None or cvec is None or not len(targets):
        return Grounding()
    sims = tvecs @ cvec
    j = int(np.argmax(sims))
    if sims[j] >= threshold:
        return Grounding(status="annotation", source=targets[j].source, method="embedding", similarity=round(float(sims[j]), 4))
    return Grounding(status="not_groundable", similarity=round(float(sims[j]), 4))


def _with_extra(g: Grounding, extra: Grounding) -> Grounding:
    """Combine a primary grounding with one from an extra vocabulary (rules in the module docstring)."""
    if extra.status != "annotation":
        return g
    if g.status == "not_groundable":
        return extra
    if g.status != "annotation" or extra.method != "mapping" or extra.source in g.sources:
        return g  # an embedding guess is not worth a second source next to a real one
    return g.model_copy(update={"extra_sources": [*g.extra_sources, extra.source]})


def align_bank(bank: ConceptBank, *, embed: EmbedFn | None = None, threshold: float = DEFAULT_THRESHOLD,
               overrides: Mapping[str, str | None] | None = None, targets: Sequence[Target] | None = None,
               extra_targets: Sequence[Sequence[Target]] | None = None) -> ConceptBank:
    """Return a copy of ``bank`` with every concept's grounding set.

    Args:
        embed: embedding function (default MiniLM).
        threshold: minimum cosine similarity for an embedding match.
        overrides: reviewed decisions ``{concept_id: source or None}``; ``None`` means not groundable.
            An override decides the whole grounding (no extra sources are added to it).
        targets: primary annotation targets (default: those of the bank's modality; none for other modalities).
        extra_targets: further vocabularies, each a list of targets (default: the modality's
            ``EXTRA_TARGETS`` when ``targets`` is not given, else none).
    """
    if targets is None:
        targets = TARGETS[bank.modality]() if bank.modality in TARGETS else []
        if extra_targets is None:
            extra_targets = [make() for make in EXTRA_TARGETS.get(bank.modality, ())]
    groups = [list(targets), *(list(x) for x in extra_targets or [])]
    overrides = dict(overrides or {})
    known = {t.source for group in groups for t in group}
    for cid, src in overrides.items():
        if src is not None and src not in known and not src.startswith("vlm"):
            raise DataError(f"override for {cid!r} names unknown target {src!r}", field=cid)
    embed = embed or embed_minilm
    gvecs = [embed([f"{t.question} {' '.join(t.phrases[:3])}" for t in group]) if group else None for group in groups]
    cvecs = embed([f"{c.question} {c.name}" for c in bank.concepts]) if any(groups) and bank.concepts else None
    out = []
    for i, c in enumerate(bank.concepts):
        if c.grounding.method in KEPT_METHODS and c.id not in overrides:
            out.append(c)  # set from the vocabulary or the lexicon by `medcbm concepts cite`: not re-guessed here
            continue
        if c.id in overrides:
            src = overrides[c.id]
            g = (Grounding() if src is None else
                 Grounding(status="vlm", source=src, method="review") if src.startswith("vlm") else
                 Grounding(status="annotation", source=src, method="review"))
        else:
            cvec = None if cvecs is None else cvecs[i]
            g = align_concept(c, groups[0], gvecs[0], cvec, threshold)
            for group, tvecs in zip(groups[1:], gvecs[1:]):
                g = _with_extra(g, align_concept(c, group, tvecs, cvec, threshold))
        out.append(c.model_copy(update={"grounding": g}))
    return bank.model_copy(update={"concepts": out})


def coverage(bank: ConceptBank, targets: Sequence[Target]) -> dict[str, list[str]]:
    """``{target source: [concept ids grounded to it]}`` for every target (empty list: not covered).

    Primary and extra sources both count.
    """
    cov: dict[str, list[str]] = {t.source: [] for t in targets}
    for c in bank.concepts:
        for src in c.grounding.sources:
            if src in cov:
                cov[src].append(c.id)
    return cov


def load_clinical_notes(metadata_csv: str | Path) -> list[tuple[str, str]]:
    """``(filename, clinical_notes)`` rows of the X-ray set's ``metadata.csv`` (non-UTF-8 bytes replaced)."""
    import csv
    import io

    p = Path(metadata_csv)
    if not p.is_file():
        raise DataError("metadata.csv not found", path=str(p))
    text = p.read_bytes().decode("utf-8", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    for col in ("filename", "clinical_notes"):
        if col not in (reader.fieldnames or []):
            raise DataError(f"metadata.csv lacks column '{col}'", path=str(p), field=col)
    return [(r["filename"], r["clinical_notes"] or "") for r in reader]
