"""What an image file declares before any pixel is decoded: its kind and its size.

Cheap enough to run on every row of a manifest (``medcbm data validate`` without ``--decode``): a path that
names a text file, a folder's listing or a non-image DICOM is caught here without MONAI or torch.
"""

from __future__ import annotations

from medcbm.data.filetypes import is_dicom_file
from medcbm.data.limits import check_image_size
from medcbm.errors import DataError

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def dicom_geometry(ds, filename: str) -> tuple[int, int, str]:
    """``(frames, samples per pixel, photometric)`` from a DICOM header, with the frame size checked.

    Raises:
        DataError: an unparseable geometry element (a corrupt value representation raises from pydicom's lazy
            parsing, not only ``ValueError``) or a size outside :class:`~medcbm.data.limits.ImageLimits`.
    """
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    except Exception as exc:  # noqa: BLE001 - pydicom raises assorted types on corrupt elements
        raise DataError(f"unreadable image geometry in the DICOM header ({type(exc).__name__}: {exc})",
                        path=filename) from None
    check_image_size(cols, rows, filename)  # only the first frame is decoded
    return frames, spp, photometric


def check_image_header(path: str) -> str:
    """Read only the header of an image file and check what it declares.

    Returns:
        ``"DICOM"`` or PIL's format name (``"JPEG"``, ``"PNG"``, ...).

    Raises:
        DataError: the file is not an image the readers accept, or its declared size is outside the limits.
    """
    if is_dicom_file(path):
        import pydicom

        try:  # values over 1 KB (the pixels) stay on disk: only their presence is asked
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for non-DICOM bytes
            raise DataError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", path=path) from None
        if not any(tag in ds for tag in PIXEL_TAGS):
            raise DataError("DICOM file has no pixel data (is it a structured report or presentation state?)",
                            path=path)
        dicom_geometry(ds, path)
        return "DICOM"
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            check_image_size(im.width, im.height, path)
            return str(im.format)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own limit (2 x MAX_IMAGE_PIXELS) acts before ours
        raise DataError(f"image refused before decoding, as a decompression bomb: {exc}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises assorted types on non-image bytes
        raise DataError(f"not an image file the readers accept ({type(exc).__name__}: {exc})", path=path) from None
