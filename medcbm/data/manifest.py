"""The one manifest format: a table (CSV or Parquet) with one row per image.

Required columns: ``id`` (unique sample id), ``image`` (path), ``label``. Standard optional columns:
``patient_id`` (patient or lesion id, used to keep splits disjoint), ``site``, ``sex``, ``age``.
Any other column is free metadata (e.g. ``concept_*`` annotations, ``view``, ``clinical_notes``).
Relative image (and ``mask``) paths resolve against the manifest file's folder and may not climb out of it;
absolute paths may point anywhere, at regular files (see :meth:`Manifest.check_files`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
from pandas.api.types import is_object_dtype, is_string_dtype

from medcbm._io import atomic_write_bytes, atomic_write_json, csv_unescape, safe_csv_bytes
from medcbm.data.paths import file_problem, leaves_folder
from medcbm.errors import DataError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "image", "label")
STANDARD_COLUMNS = ("id", "image", "label", "patient_id", "site", "sex", "age")
#: how an importer's skippable error says to go on: the CLI flag, and the Python argument behind it
SKIP_HINT = "pass --skip-bad to `medcbm data import`/`import-folder` (Python: skips=SkipLog()) to record and leave out such rows"


def _row_no(idx: int) -> int:
    """1-based data-row number as a user sees it in the file (header excluded)."""
    return int(idx) + 1


@dataclass
class Skip:
    """One input the user chose to skip, with the reason (written to the run directory)."""

    row: int | None
    path: str | None
    reason: str


@dataclass
class SkipLog:
    """Collects opt-in skips; ``write`` saves them as JSON so nothing is dropped silently."""

    items: list[Skip] = field(default_factory=list)

    def add(self, reason: str, *, row: int | None = None, path: str | None = None) -> None:
        logger.warning("skipping %s%s: %s", f"row {row} " if row is not None else "", path or "", reason)
        self.items.append(Skip(row, path, reason))

    def __len__(self) -> int:
        return len(self.items)

    def write(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, [vars(s) for s in self.items])

    def shareable_records(self, root: str | os.PathLike | None) -> list[dict]:
        """The skips with paths made relative to ``root`` (file name only when outside it), for artifacts
        that leave this machine: a benchmark JSON names the file, never where this machine keeps it."""
        base = Path(root).resolve() if root is not None else None
        out = []
        for s in self.items:
            path = s.path
            if path is not None:
                p = Path(path)
                try:
                    path = p.resolve().relative_to(base).as_posix() if base is not None else p.name
                except ValueError:
                    path = p.name
            out.append({"row": s.row, "path": path, "reason": s.reason})
        return out


def _mask_value(value: object) -> str | None:
    """A row's lesion-mask path, or ``None`` where the ``mask`` cell is empty (an image without a mask)."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def normalise_sex(value: object) -> str:
    """Map the many spellings of sex to ``M``/``F``/``unknown``."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "unknown"
    v = str(value).strip().lower()
    if v in {"m", "male", "man"}:
        return "M"
    if v in {"f", "female", "woman"}:
        return "F"
    return "unknown"


class Manifest:
    """A validated manifest table. ``frame`` holds the rows; ``root`` is where relative paths resolve."""

    def __init__(self, frame: pd.DataFrame, root: str | os.PathLike | None = None, *, source: str = "<memory>"):
        self.root = Path(root) if root is not None else Path.cwd()
        self.source = source
        self.frame = self._normalise(frame)

    # ------------------------------------------------------------------ construction
    def _normalise(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"manifest lacks required column(s) {missing}; it has {list(frame.columns)}", path=self.source
            )
        df = frame.reset_index(drop=True).copy()
        for col in ("id", "image", "label"):
            bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
            if bad.any():
                i = int(bad.to_numpy().nonzero()[0][0])
                raise DataError(f"empty value in required column '{col}'", path=self.source, row=_row_no(i), field=col)
            df[col] = df[col].astype(str).str.strip()
        dup = df["id"].duplicated(keep="first")
        if dup.any():
            i = int(dup.to_numpy().nonzero()[0][0])
            first = int((df["id"] == df.loc[i, "id"]).to_numpy().nonzero()[0][0])
            raise DataError(
                f"duplicate id '{df.loc[i, 'id']}' (first seen at row {_row_no(first)})",
                path=self.source, row=_row_no(i), field="id",
            )
        if "patient_id" not in df.columns:
            df["patient_id"] = df["id"]
        df["patient_id"] = df["patient_id"].fillna(df["id"]).astype(str)
        if "site" not in df.columns:
            df["site"] = "unknown"
        df["site"] = df["site"].fillna("unknown").astype(str).str.strip().replace("", "unknown")
        df["sex"] = df["sex"].map(normalise_sex) if "sex" in df.columns else "unknown"
        if "age" in df.columns:
            age = pd.to_numeric(df["age"], errors="coerce")
            bad = age.isna() & df["age"].notna() & (df["age"].astype(str).str.strip() != "")
            if bad.any():
                i = int(bad.to_numpy().nonzero()[0][0])
                raise DataError(f"age '{df.loc[i, 'age']}' is not a number", path=self.source, row=_row_no(i), field="age")
            df["age"] = age.astype(float)
        else:
            df["age"] = float("nan")
        cols = list(STANDARD_COLUMNS) + [c for c in df.columns if c not in STANDARD_COLUMNS]
        return df[cols]

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted(self.frame["label"].unique().tolist())

    def _resolve(self, value: str) -> Path:
        """A path from the table: absolute as written, relative against the manifest's folder."""
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def image_path(self, i: int) -> Path:
        """Absolute path of row ``i``'s image."""
        return self._resolve(self.frame.at[i, "image"])

    def image_paths(self) -> list[Path]:
        return [self.image_path(i) for i in range(len(self))]

    def mask_paths(self) -> list[Path | None]:
        """Absolute lesion-mask path per row (``None`` where the manifest has no ``mask`` for it)."""
        if "mask" not in self.frame.columns:
            return [None] * len(self)
        return [None if v is None else self._resolve(v) for v in map(_mask_value, self.frame["mask"].tolist())]

    def absolute_frame(self) -> pd.DataFrame:
        """The rows with absolute ``image`` (and ``mask``) paths: they can be mixed with other manifests' rows."""
        f = self.frame.assign(image=[str(p) for p in self.image_paths()])
        if "mask" in f.columns:
            f["mask"] = [str(p) if p is not None else None for p in self.mask_paths()]
        return f

    def subset(self, index: Iterable[int]) -> "Manifest":
        """Rows by position (a new manifest sharing the root)."""
        m = Manifest.__new__(Manifest)
        m.root, m.source = self.root, self.source
        m.frame = self.frame.iloc[list(index)].reset_index(drop=True)
        return m

    # ------------------------------------------------------------------ validation
    def check_files(self, *, skips: SkipLog | None = None, hint: str | None = None) -> "Manifest":
        """Verify every image and lesion mask path: inside the manifest's folder when relative, and an existing
        regular file (:func:`~medcbm.data.paths.leaves_folder`, :func:`~medcbm.data.paths.file_problem`). Bad
        rows raise (their message ending in ``hint`` when given, e.g. :data:`SKIP_HINT`), or are recorded in
        ``skips`` and dropped.

        Returns:
            ``self`` when all are usable, else a manifest without the skipped rows.
        """
        masks = self.frame["mask"].tolist() if "mask" in self.frame.columns else [None] * len(self)
        keep = []
        for i in range(len(self)):
            problem = self._file_problem(self.frame.at[i, "image"], "image")
            if problem is None and _mask_value(masks[i]) is not None:
                problem = self._file_problem(masks[i], "mask")
            if problem is None:
                keep.append(i)
                continue
            message, path, field_ = problem
            if skips is None:
                raise DataError(f"{message}; {hint}" if hint else message, path=path, row=_row_no(i), field=field_)
            skips.add(message, row=_row_no(i), path=path)
        return self if len(keep) == len(self) else self.subset(keep)

    def _file_problem(self, value: str, field_: str) -> tuple[str, str, str] | None:
        """``(message, file to name, field)`` when the path in ``field_`` cannot be used, else ``None``."""
        kind = "lesion mask" if field_ == "mask" else "image"
        value = str(value).strip()
        if leaves_folder(value):  # the manifest's fault: name the manifest; the path is in the message
            return (f"{kind} path {value!r} leads out of the manifest's folder {self.root.absolute()}; give an "
                    "absolute path or one inside that folder", self.source, field_)
        path = self._resolve(value)
        reason = file_problem(path)
        return None if reason is None else (f"{kind} {reason}", str(path), field_)

    def check_labels(self, allowed: Iterable[str], *, skips: SkipLog | None = None) -> "Manifest":
        """Verify every label is in ``allowed``; unknown labels raise or are recorded and dropped."""
        allowed = set(allowed)
        bad = ~self.frame["label"].isin(allowed)
        if not bad.any():
            return self
        if skips is None:
            i = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                f"unknown label '{self.frame.at[i, 'label']}' (expected one of {sorted(allowed)})",
                path=self.source, row=_row_no(i), field="label",
            )
        for i in bad.to_numpy().nonzero()[0]:
            skips.add(f"unknown label '{self.frame.at[int(i), 'label']}'", row=_row_no(int(i)), path=self.source)
        return self.subset((~bad).to_numpy().nonzero()[0])


def load_manifest(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Manifest:
    """Read a manifest from CSV or Parquet.

    Args:
        path: ``.csv`` or ``.parquet`` file.
        root: folder that relative image paths resolve against (default: the manifest's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("manifest file not found", path=str(path))
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={"id": str, "patient_id": str, "label": str}, keep_default_na=True)
            for col in frame.columns:
                if is_object_dtype(frame[col]) or is_string_dtype(frame[col]):
                    frame[col] = frame[col].map(csv_unescape)
    except pd.errors.EmptyDataError:
        raise DataError("manifest is empty (it needs id, image and label columns and one row per image)",
                        path=str(path)) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot parse manifest: {exc}", path=str(path)) from None
    if frame.empty:
        raise DataError("manifest has a header but no rows", path=str(path))
    return Manifest(frame, root if root is not None else path.parent, source=str(path))


def save_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write a manifest atomically (CSV or Parquet by suffix). Image and mask paths are written absolute."""
    path = Path(path)
    df = manifest.frame.copy()
    df["image"] = [str(p.absolute()) for p in manifest.image_paths()]  # a relative root would tie it to the cwd
    if "mask" in df.columns:  # relative masks would otherwise resolve against the new file's folder
        df["mask"] = [None if p is None else str(p.absolute()) for p in manifest.mask_paths()]
    if path.suffix.lower() == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    return atomic_write_bytes(path, safe_csv_bytes(df))


def manifest_summary(manifest: Manifest) -> dict:
    """Counts by label and site (for logs and run directories)."""
    f = manifest.frame
    return {
        "n": len(f),
        "labels": {k: int(v) for k, v in f["label"].value_counts().sort_index().items()},
        "sites": {k: int(v) for k, v in f["site"].value_counts().sort_index().items()},
        "patients": int(f["patient_id"].nunique()),
    }

