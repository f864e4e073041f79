"""Bank quality numbers: size, provenance completeness, duplicate rate, grounding coverage."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcbm.concepts.alignment import TARGETS, coverage
from medcbm.concepts.filters import EmbedFn, embed_minilm
from medcbm.concepts.schema import ConceptBank

PROVENANCE_FIELDS = ("query", "doc_id", "reference", "store", "corpus_hash")


def bank_quality(bank: ConceptBank, *, embed: EmbedFn | None = None, dup_threshold: float = 0.9) -> dict[str, Any]:
    """Quality summary of a bank.

    Returns:
        ``n_concepts``, ``n_rejected``, ``provenance_complete`` (share with every provenance and generator
        field set), ``duplicate_rate`` (share of concepts whose name has cosine ≥ ``dup_threshold`` to an
        earlier one), ``grounded_share`` and, where the modality has annotation targets,
        ``target_coverage`` (share of targets with ≥ 1 concept) and ``uncovered`` targets.
    """
    cs = bank.concepts
    complete = sum(all(getattr(c.provenance, f) for f in PROVENANCE_FIELDS)
                   and all((c.generator.backend, c.generator.model, c.generator.prompt_hash)) for c in cs)
    dup = 0
    if len(cs) > 1:
        v = (embed or embed_minilm)([c.name for c in cs])
        sims = np.triu(v @ v.T, k=1)
        dup = int((sims >= dup_threshold).any(axis=0).sum())
    out: dict[str, Any] = {
        "n_concepts": len(cs), "n_rejected": len(bank.rejected),
        "provenance_complete": complete / max(len(cs), 1), "duplicate_rate": dup / max(len(cs), 1),
        "grounded_share": sum(c.grounding.status != "not_groundable" for c in cs) / max(len(cs), 1),
        "nonzero_prior_share": float(np.mean([a.prior != 0 for c in cs for a in c.classes])) if cs else 0.0,
    }
    if bank.modality in TARGETS:
        cov = coverage(bank, TARGETS[bank.modality]())
        out["target_coverage"] = sum(bool(v) for v in cov.values()) / len(cov)
        out["uncovered"] = sorted(k for k, v in cov.items() if not v)
    return out
