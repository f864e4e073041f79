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
from medcbm.data.headers import PIXEL_TAGS, dicom_geometry  # noqa: E402
from medcbm.data.limits import check_image_size  # noqa: E402
from medcbm.errors import DataError  # noqa: E402

logger = logging.getLogger(__name__)


def _single_name(data) -> str:
    """MONAI hands readers a tuple of names; 2D classification reads exactly one file."""
    if isinstance(data, (list, tuple)):
        if len(data) != 1:
            raise DataError(f"expected one image file, got {len(data)}: {list(map(str, data))[:3]}")
        data = data[0]
    return str(data)


def _finite(arr: np.ndarray, filename: str, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"non-finite pixel values {what}", path=filename)
    return arr


def dicom_to_array(ds, filename: str = "<dataset>") -> np.ndarray:
    """Display-ready float32 pixels from a pydicom dataset.

    Returns:
        ``(H, W)`` for grayscale, ``(H, W, 3)`` for colour; grayscale in display orientation
        (MONOCHROME1 inverted) after modality and VOI LUTs; palette colour through its lookup table.

    Raises:
        DataError: no pixels, a size outside :class:`~medcbm.data.limits.ImageLimits`, undecodable data, LUT
            parameters that cannot be applied or that give non-finite values.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    if not any(tag in ds for tag in PIXEL_TAGS):
        raise DataError("DICOM file has no pixel data (is it a structured report or presentation state?)", path=filename)
    frames, spp, photometric = dicom_geometry(ds, filename)
    try:
        # 2D classification takes the first frame; decoding only that one bounds memory for long cine loops
        arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as exc:  # pydicom raises many types for codec/truncation problems
        raise DataError(f"cannot decode DICOM pixel data: {exc}", path=filename) from None
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise DataError(f"DICOM pixels have shape {arr.shape}; expected one 2D grayscale or RGB frame", path=filename)
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise DataError(f"cannot apply the DICOM palette colour lookup table: {exc}", path=filename) from None
        # 16-bit palette entries -> the 8-bit range photographs use
        return _finite(arr / 257.0 if arr.max() > 255 else arr, filename, "after the palette lookup")
    if spp == 3 or arr.ndim == 3:
        # pydicom converts YBR to RGB by default; keep colour photographs in colour
        return _finite(arr, filename, "in the colour image")
    try:
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds, index=0)
    except Exception as exc:
        raise DataError(f"cannot apply the DICOM modality/VOI LUT ({exc}); check RescaleSlope/RescaleIntercept, "
                        "WindowCenter/WindowWidth and VOILUTFunction", path=filename) from None
    arr = _finite(arr, filename, "after the DICOM modality/VOI LUT (check RescaleSlope/RescaleIntercept and "
                  "WindowCenter/WindowWidth)")
    if photometric == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    return np.ascontiguousarray(arr)


def canonical_mode(img, filename: str):
    """A PIL image in a mode the transform chain reads correctly: RGB(A), L(A), or F scaled to 0..255.

    CMYK, palette, YCbCr, 1-bit, 16/32-bit integer and float images would otherwise be read as the wrong
    colours, as palette indices, or as (nearly) black.
    """
    from PIL import Image

    mode = img.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    if mode.startswith("I") or mode == "F":
        a = _finite(np.asarray(img, dtype=np.float64), filename, "in the image")
        lo, hi = float(a.min()), float(a.max())
        if mode == "F" and lo >= 0.0 and hi <= 1.0:  # the float convention: intensities in [0, 1]
            return Image.fromarray((a * 255.0).astype(np.float32), mode="F")
        # wide-range integers (16/32-bit) and other floats are min-max scaled, as grayscale DICOM is after its
        # window, whatever their maximum (a 16-bit file is never mistaken for an 8-bit one)
        return Image.fromarray(((a - lo) / max(hi - lo, 1e-12) * 255.0).astype(np.float32), mode="F")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV


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
        try:  # pydicom parses elements lazily: a corrupt Modality raises here, not at dcmread
            modality = str(getattr(img, "Modality", ""))
            photometric = str(getattr(img, "PhotometricInterpretation", ""))
        except Exception as exc:  # noqa: BLE001 - assorted pydicom types
            raise DataError(f"unreadable DICOM header element ({type(exc).__name__}: {exc})", path=name) from None
        meta = {
            MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape[:2]),
            MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if arr.ndim == 3 else float("nan"),
            MetaKeys.AFFINE: np.eye(3),
            MetaKeys.ORIGINAL_AFFINE: np.eye(3),
            "modality": modality,
            "photometric": photometric,
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
            img = Image.open(name)  # reads the header only
            check_image_size(img.width, img.height, name)
            img.load()  # force decoding so truncation surfaces here, not deep in a transform
            return canonical_mode(img, name)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError("image file not found", path=name) from None
        except Image.DecompressionBombError as exc:  # PIL's own limit (2 x MAX_IMAGE_PIXELS) acts before ours
            raise DataError(f"image refused before decoding, as a decompression bomb: {exc}", path=name) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"corrupt or unreadable image: {exc}", path=name) from None
        except Exception as exc:  # PIL's decoders raise assorted types on hostile files
            raise DataError(f"corrupt or unreadable image ({type(exc).__name__}: {exc})", path=name) from None
