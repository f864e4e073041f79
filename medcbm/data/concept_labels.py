"""Concept annotations as one matrix: the ``concept_*`` columns of several manifests, NaN where not annotated.

Grounding probes and concept-supervised fine-tuning both train on the union of datasets that annotate
different concepts (PH2's colours, Derm7pt's 7-point criteria). A concept one dataset lacks is NaN for its
rows, so a masked loss ignores it instead of reading "absent".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medcbm.data.manifest import Manifest

CONCEPT_PREFIX = "concept_"


def annotated_concepts(manifest: Manifest) -> list[str]:
    """Concept names a manifest annotates (its ``concept_<name>`` columns, in column order)."""
    return [c[len(CONCEPT_PREFIX):] for c in manifest.frame.columns if c.startswith(CONCEPT_PREFIX)]


def union_names(per_dataset: list[list[str]]) -> list[str]:
    """Concept names of several datasets, first occurrence first (a shared concept appears once)."""
    names: list[str] = []
    for ns in per_dataset:
        names += [n for n in ns if n not in names]
    return names


def concept_matrix(manifest: Manifest, names: list[str], only: list[str] | None = None) -> np.ndarray:
    """``(n, len(names))`` float matrix of 0/1 labels, NaN where the manifest does not annotate a concept.

    Args:
        manifest: rows to read (values are assumed checked 0/1 or empty).
        names: the columns of the result.
        only: read just these concepts from the manifest (the rest stay NaN); default: every one it has.
    """
    have = set(annotated_concepts(manifest)) if only is None else set(only)
    C = np.full((len(manifest), len(names)), np.nan)
    for k, n in enumerate(names):
        if n in have:
            C[:, k] = pd.to_numeric(manifest.frame[CONCEPT_PREFIX + n], errors="coerce").to_numpy(float)
    return C
