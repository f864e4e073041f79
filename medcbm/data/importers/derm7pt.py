"""Derm7pt (Kawahara et al., IEEE JBHI 2019) with the Derm7pt+ splits: 7-point-checklist concepts per image.

Reads ``meta.csv`` (diagnosis, seven categorical criteria, ``derm`` image path under ``images/``) and the
Derm7pt+ split index files in ``splits/`` (zero-based ``meta.csv`` rows, column ``indexes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from medcbm.data.derm7pt_vocab import (CONCEPT_PREFIX, DERM7PT_CRITERIA, DERM7PT_DIAGNOSES, DERM7PT_PATTERNS, DERM7PT_RULES,
                                       MALIGNANT_LABELS)
from medcbm.data.manifest import SKIP_HINT, Manifest, SkipLog
from medcbm.errors import DataError

SPLITS = ("train", "valid", "test")
UNASSIGNED = "unassigned"
# Derm7pt+ ships two concept-consistent filterings. "asymmetric" drops inconsistent benign cases only and
# keeps all 252 melanomas (841 rows assigned); "symmetric" also drops melanomas (705 rows, a subset of the
# asymmetric rows split by split). Default: asymmetric, the larger one that keeps the malignant class whole.
SplitFilter = Literal["asymmetric", "symmetric"]


def _resolve_image(images: Path, rel: str) -> str | None:
    """``rel`` as it exists under ``images``: exact if present, else a unique case-insensitive match.

    Returns:
        The on-disk relative path, or ``None`` when nothing matches (left for ``check_files``).

    Raises:
        ValueError: more than one on-disk entry matches a component case-insensitively.
    """
    if (images / rel).is_file():
        return rel
    # The release has one row (FCl/Fcl068.jpg) whose folder is FCL/ on disk; resolve per component so a
    # case-sensitive file system finds it, and refuse to guess between two spellings.
    here, parts = images, []
    for part in Path(rel).parts:
        if (here / part).exists():
            hits = [part]
        else:
            hits = [p.name for p in here.iterdir() if p.name.casefold() == part.casefold()] if here.is_dir() else []
        if len(hits) > 1:
            raise ValueError(f"'{rel}' matches {len(hits)} entries case-insensitively in {here}: {sorted(hits)}")
        if not hits:
            return None
        here, parts = here / hits[0], [*parts, hits[0]]
    return "/".join(parts) if here.is_file() else None


def _read_splits(split_dir: Path, n_rows: int, filtering: SplitFilter) -> list[str]:
    """Split name per ``meta.csv`` row from ``<filtering>_<split>_indexes_filtered.csv`` (others: unassigned)."""
    out = [UNASSIGNED] * n_rows
    for split in SPLITS:
        path = split_dir / f"{filtering}_{split}_indexes_filtered.csv"
        if not path.is_file():
            raise DataError(f"Derm7pt+ split index file for '{filtering}' filtering not found", path=str(path))
        idx = pd.read_csv(path, dtype=str)
        if "indexes" not in idx.columns:
            raise DataError(f"split file lacks column 'indexes' (has {list(idx.columns)})", path=str(path), field="indexes")
        for i, v in enumerate(idx["indexes"]):
            s = str(v).strip()
            if not s.isdigit() or int(s) >= n_rows:
                raise DataError(f"index {v!r} is not a meta.csv row (0..{n_rows - 1})", path=str(path), row=i + 1,
                                field="indexes")
            if out[int(s)] != UNASSIGNED:
                raise DataError(f"meta.csv row index {s} is in both '{out[int(s)]}' and '{split}'", path=str(path),
                                row=i + 1, field="indexes")
            out[int(s)] = split
    return out


def import_derm7pt(folder: str | Path, *, skips: SkipLog | None = None,
                   split_filter: SplitFilter = "asymmetric") -> Manifest:
    """Read Derm7pt into a manifest with ``concept_*`` columns (0/1) and a ``derm7pt_split`` column.

    Columns: ``id`` (the ``derm`` path without extension, ``/`` -> ``_``), ``image``, ``label`` (diagnosis
    slug, melanoma variants merged), ``diagnosis`` (raw), ``patient_id`` (one image per case, so the id),
    ``site`` (``derm7pt``), ``malignant``, ``derm7pt_index`` (zero-based ``meta.csv`` row, what the split
    files index) and ``derm7pt_split`` (train/valid/test of ``split_filter``, else ``unassigned``).

    Args:
        folder: the ``derm7pt`` folder (``meta.csv``, ``images/``, ``splits/``).
        skips: opt-in record of rows whose image is missing; without it they raise.
        split_filter: which Derm7pt+ filtering's split files to read.

    Raises:
        DataError: missing file or column, unknown diagnosis or criterion value, ambiguous image path
            (``manifest row`` = 1-based data row of ``meta.csv``, header excluded).
    """
    folder = Path(folder)
    meta = folder / "meta.csv"
    if not meta.is_file():
        raise DataError("Derm7pt meta.csv not found", path=str(meta))
    df = pd.read_csv(meta, dtype=str, keep_default_na=False)
    need = ["diagnosis", *DERM7PT_CRITERIA, "derm"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"Derm7pt meta.csv lacks columns {missing}", path=str(meta), field=missing[0])
    df = df.apply(lambda s: s.str.strip())
    for col, allowed in [("diagnosis", tuple(DERM7PT_DIAGNOSES)), *DERM7PT_CRITERIA.items()]:
        bad = ~df[col].isin(allowed)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"unknown {col} value {df.at[i, col]!r} (expected one of {sorted(allowed)})",
                            path=str(meta), row=i + 1, field=col)
    images = folder / "images"
    paths = []
    for i, rel in enumerate(df["derm"]):
        if not rel:
            raise DataError("empty image path", path=str(meta), row=i + 1, field="derm")
        try:
            found = _resolve_image(images, rel)
        except ValueError as exc:
            raise DataError(f"ambiguous image path: {exc}", path=str(meta), row=i + 1, field="derm") from None
        paths.append(f"images/{found or rel}")  # not found: check_files raises or records the skip
    labels = df["diagnosis"].map(DERM7PT_DIAGNOSES)
    ids = df["derm"].str.rsplit(".", n=1).str[0].str.replace("/", "_", regex=False)
    frame = pd.DataFrame({
        "id": ids,
        "image": paths,
        "label": labels,
        "diagnosis": df["diagnosis"],
        "patient_id": ids,
        "site": "derm7pt",
        "malignant": labels.isin(MALIGNANT_LABELS).astype(int),
        "derm7pt_index": range(len(df)),
        "derm7pt_split": _read_splits(folder / "splits", len(df), split_filter),
    })
    for key, (col, values) in DERM7PT_RULES.items():
        frame[CONCEPT_PREFIX + key] = df[col].isin(values).astype(int)
    for key, (_, slugs) in DERM7PT_PATTERNS.items():
        frame[CONCEPT_PREFIX + key] = labels.isin(slugs).astype(int)
    return Manifest(frame, folder, source=str(meta)).check_files(skips=skips, hint=SKIP_HINT)
