"""Concept probes from report-derived pseudo-labels (KnoBo's grounding for chest X-rays).

Each training image's free-text note or report is labelled per concept by negation-aware matching
(:func:`medcbm.concepts.negation.label_text`) or, when configured, by an LLM backend; the labels then
train ordinary :class:`~medcbm.concepts.grounding.probes.ConceptProbes` on the image features. Only
the notes of *training* images are read: test images are grounded from pixels alone.

Label policy (``pseudo_label_reports``):

- affirmed anywhere in the note -> 1; only denied -> 0 (each concept matched on its own: findings overlap);
- not mentioned in a non-empty note -> 0 by default (``unmentioned="absent"``, KnoBo's convention:
  a report that describes the film and does not name a finding implies it is absent), or NaN with
  ``unmentioned="unknown"`` (the probe then ignores that image for that concept);
- empty/missing note -> NaN for every concept (no information; never read as "all absent");
- mentioned only with a hedge ("possible", "cannot exclude", "may represent") -> ``uncertain``: 1
  (``positive``, the old reading), 0 (``negative``) or NaN (``ignore``: the probe skips that image).
"""

from __future__ import annotations

import logging
from typing import Literal, Mapping, Protocol, Sequence

import numpy as np

from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.concepts.negation import label_text
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Unmentioned = Literal["absent", "unknown"]
Uncertain = Literal["positive", "negative", "ignore"]
_HEDGED = -1.0  # match_concepts' mark for a hedged-only finding, resolved by the ``uncertain`` policy
UNCERTAIN_VALUE = {"positive": 1.0, "negative": 0.0, "ignore": np.nan}


class ReportLabeller(Protocol):
    """An optional labelling backend (e.g. an LLM): ``label(text, concepts) -> {concept: 1 | 0 | None}``.

    ``None`` (or a missing key) means "not mentioned"; the caller applies the ``unmentioned`` policy.
    """

    def label(self, text: str, concepts: Sequence[str]) -> Mapping[str, int | None]: ...


def normalise_vocab(vocab: Mapping[str, Sequence[str] | Mapping]) -> dict[str, list[str]]:
    """``{concept: [synonyms]}`` from either that form or ``cxr_notes_vocab()``'s ``{concept: {"synonyms": [...]}}``."""
    out: dict[str, list[str]] = {}
    for name, v in vocab.items():
        syns = v.get("synonyms") if isinstance(v, Mapping) else v
        if isinstance(syns, str) or not isinstance(syns, Sequence):
            raise ConfigError(f"vocabulary entry '{name}' needs a list of synonyms, got {type(syns).__name__}")
        out[name] = [str(s) for s in syns]
    if not out:
        raise ConfigError("the concept vocabulary is empty")
    return out


def _check_label(v, row: int, concept: str) -> float:
    if v is None:
        return np.nan
    if isinstance(v, (bool, int, float, np.integer, np.floating)) and v in (0, 1):
        return float(v)
    raise DataError(f"labelling backend returned {v!r} for concept '{concept}'; expected 1, 0 or None",
                    row=row, field=concept)


def match_concepts(text: str, vocab: Mapping[str, Sequence[str]]) -> dict[str, int | None]:
    """Negation-aware labels, matched one concept at a time.

    ``label_text`` resolves overlapping hits across the whole vocabulary, so "patchy consolidation" (a
    ``patchy_opacity`` synonym) would hide "consolidation"; concepts are not exclusive, so each one is
    matched on its own.
    """
    return {c: label_text(text, {c: syns}, uncertain=_HEDGED)[c] for c, syns in vocab.items()}


def pseudo_label_reports(
    texts: Sequence[str | None],
    vocab: Mapping[str, Sequence[str] | Mapping],
    *,
    unmentioned: Unmentioned = "absent",
    labeller: ReportLabeller | None = None,
    uncertain: Uncertain = "positive",
) -> tuple[np.ndarray, list[str]]:
    """Label every concept in every text.

    Args:
        texts: one note/report per image (``None``, NaN or blank = no note).
        vocab: ``{concept: [synonyms]}`` (or the ``cxr_notes_vocab()`` form).
        unmentioned: ``"absent"`` (0) or ``"unknown"`` (NaN) for concepts a non-empty note does not mention.
        labeller: optional backend used instead of the negation-aware matcher.
        uncertain: what a finding mentioned only with a hedge becomes (see the module docstring).

    Returns:
        ``C (n, K)`` with 1/0/NaN and the concept names in column order.
    """
    if unmentioned not in ("absent", "unknown"):
        raise ConfigError(f"unmentioned must be 'absent' or 'unknown', got {unmentioned!r}")
    if uncertain not in UNCERTAIN_VALUE:
        raise ConfigError(f"uncertain must be one of {list(UNCERTAIN_VALUE)}, got {uncertain!r}")
    vocab = normalise_vocab(vocab)
    names = list(vocab)
    fill = 0.0 if unmentioned == "absent" else np.nan
    C = np.full((len(texts), len(names)), np.nan)
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and np.isnan(t)) or not str(t).strip():
            continue  # no note: no information
        lab = labeller.label(str(t), names) if labeller is not None else match_concepts(str(t), vocab)
        for k, name in enumerate(names):
            if labeller is None and lab.get(name) == _HEDGED:
                C[i, k] = UNCERTAIN_VALUE[uncertain]
                continue
            v = _check_label(lab.get(name), i, name)
            C[i, k] = fill if np.isnan(v) else v
    return C, names


def label_stats(C: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per concept: positives, negatives and unlabelled counts (for logs and benchmark info)."""
    return {n: {"pos": int((C[:, k] == 1).sum()), "neg": int((C[:, k] == 0).sum()),
                "unlabelled": int(np.isnan(C[:, k]).sum())} for k, n in enumerate(names)}


def fit_report_probes(
    X: np.ndarray,
    texts: Sequence[str | None],
    vocab: Mapping[str, Sequence[str] | Mapping],
    *,
    probes: ConceptProbes | None = None,
    unmentioned: Unmentioned = "absent",
    labeller: ReportLabeller | None = None,
    uncertain: Uncertain = "positive",
) -> ConceptProbes:
    """Train concept probes on training-image features with pseudo-labels from their notes.

    Args:
        X: ``(n, d)`` features of the *training* images.
        texts: their notes (same order).
        vocab: concept vocabulary.
        probes: an unfitted :class:`ConceptProbes` carrying the hyper-parameters (default settings otherwise).
        unmentioned, labeller, uncertain: see :func:`pseudo_label_reports`.

    Returns:
        The fitted probes, with ``pseudo_labels_`` ``(n, K)`` and ``label_stats_`` added. Concepts with too
        few positives or negatives are flagged (``flagged_``) by the probes.
    """
    if len(texts) != len(X):
        raise DataError(f"{len(texts)} notes for {len(X)} feature rows; give one note per training image")
    C, names = pseudo_label_reports(texts, vocab, unmentioned=unmentioned, labeller=labeller, uncertain=uncertain)
    if np.isnan(C).all():
        raise DataError("no training image has a usable note: cannot derive concept labels from reports")
    probes = probes if probes is not None else ConceptProbes()
    probes.fit(X, C, names)
    probes.pseudo_labels_, probes.label_stats_ = C, label_stats(C, names)
    logger.info("report probes: kept %d/%d concepts (%d flagged)", len(probes.concept_names_), len(names),
                len(probes.flagged_))
    return probes


def label_agreement(auto: np.ndarray, hand: np.ndarray) -> dict[str, float]:
    """Accuracy and Cohen's kappa of automatic 0/1 labels against reference (hand) labels.

    NaN automatic labels (no note) count as 0, the way the probes would read an unmentioned finding.
    """
    from sklearn.metrics import cohen_kappa_score

    a = np.nan_to_num(np.asarray(auto, float)).astype(int)
    h = np.asarray(hand, int)
    if a.shape != h.shape:
        raise DataError(f"automatic labels {a.shape} and hand labels {h.shape} differ in shape")
    kappa = cohen_kappa_score(h, a) if len(np.unique(np.r_[a, h])) > 1 else float("nan")
    tp = int(((a == 1) & (h == 1)).sum())
    return {"n": int(len(h)), "hand_pos": int(h.sum()), "auto_pos": int(a.sum()),
            "accuracy": float((a == h).mean()), "kappa": float(kappa),
            "precision": tp / max(int(a.sum()), 1), "recall": tp / max(int(h.sum()), 1)}
