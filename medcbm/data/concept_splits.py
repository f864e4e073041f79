"""Which concept-annotated images may train, select, or score a concept layer (one rule, used everywhere).

Concept-supervised fine-tuning, the probes fitted on its features and ``medcbm bench concepts`` must agree
on which images are held out, or a reported concept AUROC would be scored on images the backbone was tuned
on. The rule:

- Derm7pt: its official Derm7pt+ split (``derm7pt_split``): ``test`` is held out, ``valid`` selects
  (early stopping), ``train`` and the rows its filtering left unassigned train;
- any manifest with a ``split`` column (``train``/``val``/``valid``/``test``): that column;
- otherwise (PH2, a hospital's own annotations): a split by a hash of the image id — 25 % held out, 15 %
  selects, the rest trains. A hash, not a seeded shuffle, so an image keeps its split when rows are added,
  reordered or removed.
"""

from __future__ import annotations

import hashlib

import numpy as np

from medcbm.data.manifest import Manifest
from medcbm.errors import DataError

TRAIN, SELECT, HELDOUT = "train", "select", "heldout"
HASH_HELDOUT, HASH_SELECT = 0.25, 0.15
_NAMED = {"train": TRAIN, "unassigned": TRAIN, "valid": SELECT, "val": SELECT, "validation": SELECT,
          "test": HELDOUT}


def _hash_fraction(value: str) -> float:
    return int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def concept_split(manifest: Manifest) -> np.ndarray:
    """Per row: ``"train"``, ``"select"`` or ``"heldout"`` (see the module docstring for the rule).

    Raises:
        DataError: a split column holds a value other than the known names (naming the row).
    """
    frame = manifest.frame
    column = "derm7pt_split" if "derm7pt_split" in frame.columns else "split" if "split" in frame.columns else None
    if column is None:
        u = np.array([_hash_fraction(str(i)) for i in frame["id"]])
        return np.where(u < HASH_HELDOUT, HELDOUT, np.where(u < HASH_HELDOUT + HASH_SELECT, SELECT, TRAIN))
    values = frame[column].astype(str).str.strip().str.lower()
    bad = ~values.isin(list(_NAMED))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"split value {frame[column].iloc[i]!r} is not one of {sorted(_NAMED)}",
                        path=manifest.source, row=i + 1, field=column)
    return values.map(_NAMED).to_numpy()


def split_counts(manifest: Manifest) -> dict[str, int]:
    """Images per concept split, for the JSON that states what every number was scored on."""
    s = concept_split(manifest)
    return {k: int((s == k).sum()) for k in (TRAIN, SELECT, HELDOUT)}
