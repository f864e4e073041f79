"""Import a user's own folder of images/DICOM files, optionally with a CSV of labels."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medcbm.data.manifest import SKIP_HINT, Manifest, SkipLog
from medcbm.data.filetypes import PHOTO_SUFFIXES, is_dicom_file
from medcbm.data.pseudonyms import Pseudonymizer
from medcbm.errors import DataError


def _dicom_header(path: Path, pseudo: Pseudonymizer | None) -> dict:
    """Patient/site/view fields from a DICOM header (pixels are not read here); patient and institution are
    pseudonymised unless ``pseudo`` is ``None``."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"not a readable DICOM file: {exc}", path=str(path)) from None
    age = str(getattr(ds, "PatientAge", "") or "")
    m = re.fullmatch(r"(\d{1,3})([DWMY])", age)
    years = None
    if m:
        years = int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[m.group(2)]
    patient = str(getattr(ds, "PatientID", "") or "").strip()
    site = str(getattr(ds, "InstitutionName", "") or "").strip()
    if pseudo is not None:
        patient, site = pseudo.patient(patient) if patient else "", pseudo.site(site) if site else ""
    return {
        "patient_id": patient or None,
        "sex": str(getattr(ds, "PatientSex", "") or "") or None,
        "age": years,
        "site": site or None,
        "modality": str(getattr(ds, "Modality", "") or ""),
        "view": str(getattr(ds, "ViewPosition", "") or ""),
        "body_part": str(getattr(ds, "BodyPartExamined", "") or ""),
    }


def _read_labels(path: Path) -> pd.DataFrame:
    """The labels CSV, or a one-line error when it is missing, empty or not a table."""
    if not path.is_file():
        raise DataError("labels CSV not found", path=str(path))
    try:
        table = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError("labels CSV is empty (it needs a header row and one row per image)", path=str(path)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot parse labels CSV: {exc}", path=str(path)) from None
    if table.empty:
        raise DataError("labels CSV has a header but no rows", path=str(path))
    return table


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and (p.suffix.lower() in PHOTO_SUFFIXES or is_dicom_file(p))


def import_folder(
    folder: str | Path,
    *,
    labels_csv: str | Path | None = None,
    image_col: str = "image",
    label_col: str = "label",
    id_col: str | None = None,
    skips: SkipLog | None = None,
    keep_identifiers: bool = False,
) -> Manifest:
    """Build a manifest from a folder.

    Without ``labels_csv`` every image's label is its parent folder name (``folder/<label>/...``).
    With it, each CSV row names a file (relative to ``folder``) and a label; other CSV columns are kept.
    DICOM headers fill ``patient_id``, ``sex``, ``age``, ``site`` (InstitutionName), ``modality`` and ``view``.

    Args:
        folder: root folder of the images.
        labels_csv: optional CSV with ``image_col`` and ``label_col``.
        image_col, label_col, id_col: CSV column names (``id_col`` defaults to the file path).
        skips: opt-in record of unreadable files; without it they raise.
        keep_identifiers: store the DICOM header's PatientID and InstitutionName as they are; by default they are
            keyed hashes (:mod:`medcbm.data.pseudonyms`), which still keep a patient's images together.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("image folder not found", path=str(folder))
    if labels_csv is not None:
        table = _read_labels(Path(labels_csv))
        for c in (image_col, label_col):
            if c not in table.columns:
                raise DataError(f"labels CSV lacks column '{c}' (has {list(table.columns)})", path=str(labels_csv), field=c)
        rows = []
        for i, r in table.iterrows():
            rel = str(r[image_col])
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise DataError(f"path '{rel}' leaves the image folder; give paths relative to {folder}",
                                path=str(labels_csv), row=int(i) + 1, field=image_col)
            if not (folder / rel).is_file():
                if skips is None:
                    raise DataError(f"file '{rel}' not found under {folder}; {SKIP_HINT}", path=str(labels_csv), row=int(i) + 1, field=image_col)
                skips.add(f"file '{rel}' not found", row=int(i) + 1, path=str(labels_csv))
                continue
            rec = {k: v for k, v in r.items() if k not in (image_col, label_col)}
            rec.update({"image": rel, "label": r[label_col], "id": r[id_col] if id_col else rel})
            rows.append(rec)
    else:
        files = sorted(p for p in folder.rglob("*") if _is_image(p))
        rows = []
        for p in files:
            rel = p.relative_to(folder)
            if len(rel.parts) < 2:
                raise DataError("without a labels CSV every image must sit in a <label>/ subfolder", path=str(p))
            rows.append({"id": str(rel), "image": str(rel), "label": rel.parts[0]})
    if not rows:
        raise DataError("no images found (looked for DICOM, JPEG, PNG, BMP, TIFF)", path=str(folder))
    pseudo = None if keep_identifiers else Pseudonymizer()
    for rec in rows:
        p = folder / rec["image"]
        if is_dicom_file(p):
            try:
                hdr = _dicom_header(p, pseudo)
            except DataError as exc:
                if skips is None:
                    raise DataError(f"{exc.message}; {SKIP_HINT}", path=exc.path, row=exc.row, field=exc.field) from None
                skips.add(str(exc), path=str(p))
                rec["_skip"] = True
                continue
            for k, v in hdr.items():
                if v not in (None, "") and (rec.get(k) in (None, "") or pd.isna(rec.get(k))):
                    rec[k] = v
    frame = pd.DataFrame([r for r in rows if not r.get("_skip")])
    frame = frame.drop(columns=[c for c in ("_skip",) if c in frame.columns])
    return Manifest(frame, folder, source=str(labels_csv or folder))
