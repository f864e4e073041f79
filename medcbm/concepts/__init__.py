"""Concept banks: KnoBo-style retrieval-augmented generation with provenance, backends, filters, priors, grounding map.

    >>> from medcbm.concepts import load_bank, default_bank_path
    >>> bank = load_bank(default_bank_path("dermoscopy", "ham10000"))
    >>> bank.prior_matrix()  # [n_classes][n_concepts] of +1/-1/0

Importing this package is light: embedders and the knowledge store load on first use.
"""

from __future__ import annotations

from medcbm.concepts.negation import Mention, find_mentions, label_text
from medcbm.concepts.schema import (
    SCHEMA_VERSION,
    ClassSpec,
    Concept,
    ConceptBank,
    GenerationConfig,
    default_bank_path,
    load_bank,
    save_bank,
)

__all__ = [
    "SCHEMA_VERSION", "ClassSpec", "Concept", "ConceptBank", "GenerationConfig", "Mention",
    "default_bank_path", "find_mentions", "label_text", "load_bank", "save_bank",
]
