"""``medcbm data validate``: every image and lesion mask of a manifest is a file the readers accept."""

from __future__ import annotations

from collections import Counter

from medcbm.data.headers import check_image_header
from medcbm.data.manifest import Manifest
from medcbm.errors import DataError


def validate_files(manifest: Manifest, *, decode: bool = False, progress: bool = True) -> dict[str, int]:
    """Check each row's image and mask: their headers, or (``decode``) a full decode through the model's readers.

    Call :meth:`Manifest.check_files` first (paths and existence); this reads the files themselves. Without
    ``decode`` only headers are read (a text file or a DICOM report named as an image is caught); ``decode``
    also finds truncated or corrupt pixel data and empty masks.

    Returns:
        Counts of the checked files by format (``DICOM``, ``JPEG``, ...) and ``masks``.

    Raises:
        DataError: the first bad file, with its manifest row and field.
    """
    counts: Counter[str] = Counter()
    masks = manifest.mask_paths()
    rows = range(len(manifest))
    if progress and len(manifest) > 200:
        from tqdm.auto import tqdm

        rows = tqdm(rows, unit="img", desc="decoding" if decode else "reading headers", mininterval=1.0)
    for i in rows:
        image, mask = str(manifest.image_path(i)), masks[i]
        field = "image"
        try:
            counts[check_image_header(image)] += 1
            if mask is not None:
                field = "mask"
                check_image_header(str(mask))
                counts["masks"] += 1
            if decode:
                field = "image"
                _decode(image, None if mask is None else str(mask))
        except DataError as exc:
            raise DataError(exc.message, path=exc.path, row=i + 1, field=exc.field or field) from None
    return dict(counts)


def _decode(image: str, mask: str | None) -> None:
    """Decode the image (and crop it to its mask, which decodes the mask and finds an empty one)."""
    from medcbm.data.transforms import PreprocessConfig, load_image  # MONAI and torch: only when decoding

    load_image(image, PreprocessConfig(crop="mask_bbox") if mask else None, mask=mask)
