"""Which image files are DICOM and which are photographs (no imaging libraries needed to ask)."""

from __future__ import annotations

from pathlib import Path

DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def is_dicom_file(path: str | Path) -> bool:
    """True for a ``.dcm``-style name or a file carrying the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if p.suffix.lower() in PHOTO_SUFFIXES or not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
