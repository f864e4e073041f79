"""What kind of image a file holds, cheaply: its DICOM modality and photometric interpretation, and for a
photograph whether it carries colour at all.

Prediction uses these facts to decide whether an image is within a model's scope (a dermoscopy model given a
CT slice, an ultrasound frame or a greyscale radiograph saved as JPEG still outputs a confident "benign").
Only the DICOM header is read (pixels stay on disk); a photograph is decoded at thumbnail size (JPEG's draft
mode decodes at 1/8 scale), so the facts of 10,000 images take seconds, not a second pass of the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcbm.data.filetypes import is_dicom_file

# mean per-pixel channel spread (max - min of R, G, B on 0..255) below which an RGB photograph is greyscale:
# greyscale radiographs saved as colour JPEG measure < 1 (chroma noise); dermoscopy photographs measure > 15
GREY_SPREAD = 3.0
THUMB = 64
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
NO_MODALITY = "(none)"  # a DICOM header without a Modality element (not the same as a photograph's "")


@dataclass(frozen=True)
class ImageFacts:
    """What a file declares and shows.

    Attributes:
        dicom: the file is DICOM.
        modality: the DICOM Modality (``CT``, ``XC``, ...), :data:`NO_MODALITY` when a DICOM header lacks it,
            ``""`` for a photograph.
        photometric: DICOM's PhotometricInterpretation, or for a photograph ``RGB`` / ``MONOCHROME2`` from its
            pixels; ``""`` when the file could not be read (the readers report why).
        colour: the pixels carry colour (``None`` when not looked at or unreadable).
    """

    dicom: bool
    modality: str
    photometric: str
    colour: bool | None


def _dicom_facts(path: str) -> ImageFacts:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        modality = str(ds.get("Modality", "") or "").strip().upper() or NO_MODALITY
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    except Exception:  # noqa: BLE001 - an unreadable header is the readers' error to report, not ours
        return ImageFacts(True, NO_MODALITY, "", None)
    return ImageFacts(True, modality, photometric, photometric not in MONOCHROME if photometric else None)


def colour_spread(path: str) -> float | None:
    """Mean per-pixel channel spread of a photograph at thumbnail size (0 for a greyscale mode; ``None``
    when the file cannot be decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                return 0.0
            im.draft("RGB", (THUMB * 2, THUMB * 2))  # JPEG decodes at reduced scale; a no-op for other formats
            im.thumbnail((THUMB, THUMB))
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except Exception:  # noqa: BLE001 - undecodable files are reported by the readers
        return None
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def read_image_facts(path: str | Path, *, look_at_colour: bool = True) -> ImageFacts:
    """The facts of one image file (never raises: what cannot be read is left blank).

    Args:
        look_at_colour: decode a photograph's thumbnail to tell colour from greyscale (skip it when the model
            does not care).
    """
    path = str(path)
    if is_dicom_file(path):
        return _dicom_facts(path)
    spread = colour_spread(path) if look_at_colour else None
    if spread is None:
        return ImageFacts(False, "", "", None)
    colour = spread >= GREY_SPREAD
    return ImageFacts(False, "", "RGB" if colour else "MONOCHROME2", colour)


def dicom_modalities(paths) -> list[str]:
    """The distinct DICOM modalities among ``paths`` (photographs contribute nothing)."""
    return sorted({f.modality for p in paths if is_dicom_file(p) for f in [_dicom_facts(str(p))]})
