"""MONAI image readers for 2D medical images: DICOM (via pydicom) and photographs (via PIL).

DICOM pixels go through the modality LUT (rescale slope/intercept), then the VOI LUT or window
(what a radiologist sees), and MONOCHROME1 images are inverted so that bone is bright as in MONOCHROME2.
RGB photographs stored as DICOM (dermatology, secondary capture) stay in colour.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

# MONAI probes for a CUDA JPEG codec on every DICOM read and warns when it is absent (always, on CPU
# machines); the fallback is the normal pydicom decoder, so the message is noise for our users.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*NvImgCodecPydicomReader.*")

from monai.data import PILReader, PydicomReader  # noqa: E402
from monai.utils import MetaKeys  # noqa: E402

from medcbm.data.filetypes import is_dicom_file  # noqa: E402
from medcbm.errors import DataError  # noqa: E402

logger = logging.getLogger(__name__)


def _single_name(data) -> str:
    """MONAI hands readers a tuple of names; 2D classification reads exactly one file."""
    if isinstance(data, (list, tuple)):
        if len(data) != 1:
            raise DataError(f"expected one image file, got {len(data)}: {list(map(str, data))[:3]}")
        data = data[0]
    return str(data)


def dicom_to_array(ds, filename: str = "<dataset>") -> np.ndarray:
    """Display-ready float32 pixels from a pydicom dataset.

    Returns:
        ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour; grayscale in display orientation
        (MONOCHROME1 inverted) after modality and VOI LUTs.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError("DICOM file has no pixel data (is it a structured report or presentation state?)", path=filename)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for codec/truncation problems
        raise DataError(f"cannot decode DICOM pixel data: {exc}", path=filename) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        # 2D classification takes the first frame; volumes need a 3D pipeline
        logger.debug("%s has %d frames; using the first", filename, frames)
        arr = arr[0]
    if spp == 3:
        # pydicom converts YBR to RGB by default; keep colour photographs in colour
        return np.ascontiguousarray(arr.astype(np.float32))
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else arr
    arr = arr.astype(np.float32)
    if photometric == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    return np.ascontiguousarray(arr)


class MedDicomReader(PydicomReader):
    """MONAI ``PydicomReader`` for single 2D DICOM files with display LUTs and clear errors.

    Output layout matches ``PILReader(reverse_indexing=False)``: ``(H, W)`` or ``(H, W, C)`` with
    ``original_channel_dim`` set so ``EnsureChannelFirstd`` works for both.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("swap_ij", False)
        super().__init__(**kwargs)

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(is_dicom_file(n) for n in names)

    def read(self, data, **kwargs):
        import pydicom

        name = _single_name(data)
        self.filenames = [name]
        self.has_series = False
        try:
            return pydicom.dcmread(name, **{**self.kwargs, **kwargs})
        except FileNotFoundError:
            raise DataError("DICOM file not found", path=name) from None
        except Exception as exc:
            raise DataError(f"not a readable DICOM file: {exc}", path=name) from None

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        name = self.filenames[0] if getattr(self, "filenames", None) else "<dataset>"
        arr = dicom_to_array(img, name)
        meta = {
            MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape[:2]),
            MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if arr.ndim == 3 else float("nan"),
            MetaKeys.AFFINE: np.eye(3),
            MetaKeys.ORIGINAL_AFFINE: np.eye(3),
            "modality": str(getattr(img, "Modality", "")),
            "photometric": str(getattr(img, "PhotometricInterpretation", "")),
        }
        return arr, meta


class SafePILReader(PILReader):
    """MONAI ``PILReader`` in ``(H, W[, C])`` layout that turns decode failures into ``DataError``.

    Truncated or corrupt files are caught here (PIL decodes lazily, so we force a full load).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("reverse_indexing", False)
        super().__init__(**kwargs)

    def verify_suffix(self, filename) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(not is_dicom_file(n) for n in names)

    def read(self, data, **kwargs):
        from PIL import Image, UnidentifiedImageError

        name = _single_name(data)
        try:
            img = Image.open(name)
            img.load()  # force decoding so truncation surfaces here, not deep in a transform
        except FileNotFoundError:
            raise DataError("image file not found", path=name) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"corrupt or unreadable image: {exc}", path=name) from None
        return img
