"""MONAI dictionary transforms that turn any supported file into a normalised 3-channel tensor."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, LoadImage, MapTransform
from pydantic import BaseModel, ConfigDict, Field

from medcbm._io import sha256_text
from medcbm.data.lesion import AUTO_LESION_VERSION, auto_lesion_mask, shades_of_gray
from medcbm.data.filetypes import is_dicom_file
from medcbm.data.readers import MedDicomReader, SafePILReader
from medcbm.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessConfig(BaseModel):
    """How images become model input. Part of the feature-cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    image_size: int = Field(224, ge=16, le=2048)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = Field("short_side_crop", pattern="^(short_side_crop|squash)$")
    # mask_bbox: the manifest's lesion mask (whole image where none); auto: an automatic lesion box;
    # mask_or_auto: the mask where there is one, else the automatic box
    crop: str = Field("none", pattern="^(none|mask_bbox|auto|mask_or_auto)$")
    crop_margin: float = Field(0.0, ge=-0.5, le=2.0)
    color_constancy: str = Field("none", pattern="^(none|shades_of_gray)$")

    def fingerprint(self) -> str:
        """Stable hash of the settings (cache key component)."""
        # options left at "none" are left out, so caches made before they existed stay valid
        exclude = {"crop", "crop_margin"} if self.crop == "none" else set()
        if self.color_constancy == "none":
            exclude.add("color_constancy")
        # automatic crops depend on the segmenter's code: its version invalidates caches when it changes
        auto = f"|auto_lesion_v{AUTO_LESION_VERSION}" if self.crop in ("auto", "mask_or_auto") else ""
        return sha256_text(self.model_dump_json(exclude=exclude) + auto)[:16]


class ToRGBd(MapTransform):
    """Channel-first image -> float32 RGB in [0, 1].

    Grayscale (X-ray) is repeated to 3 channels, alpha dropped. 8-bit data is divided by 255;
    wider DICOM/PNG ranges are min-max scaled after the reader's VOI windowing.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {}) or {}
            # plain tensor from here on: MetaTensor dispatch costs more than the arithmetic on 224px images
            img = d[key].as_tensor() if hasattr(d[key], "as_tensor") else torch.as_tensor(d[key])
            img = img.float()
            if img.ndim != 3:
                raise ValueError(f"expected a 2D image with channels, got shape {tuple(img.shape)}")
            c = img.shape[0]
            if c == 4:
                img = img[:3]
            elif c == 2:  # grayscale + alpha
                img = img[:1]
            lo, hi = float(img.min()), float(img.max())
            grayscale_dicom = "photometric" in meta and img.shape[0] == 1
            if grayscale_dicom or hi > 255.0 or lo < 0.0:
                img = (img - lo) / max(hi - lo, 1e-6)
            else:
                img = img / 255.0
            if img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            d[key] = img.contiguous()
        return d


class NormalizeImaged(MapTransform):
    """Per-channel ``(x - mean) / std`` on a ``(3, H, W)`` tensor."""

    def __init__(self, keys, mean: Sequence[float], std: Sequence[float]):
        super().__init__(keys)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (torch.as_tensor(d[key]) - self.mean) / self.std
        return d


class ResizeShortCropd(MapTransform):
    """Resize the short side to ``size`` (antialiased bilinear) then centre-crop ``size x size``."""

    def __init__(self, keys, size: int, mode: str = "short_side_crop"):
        super().__init__(keys)
        self.size, self.mode = int(size), mode

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            h, w = img.shape[-2:]
            s = self.size
            if (h, w) != (s, s):
                if self.mode == "squash":
                    nh, nw = s, s
                else:
                    scale = s / min(h, w)
                    nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
                img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
                top, left = (nh - s) // 2, (nw - s) // 2
                img = img[:, top : top + s, left : left + s]
            d[key] = img.contiguous()
        return d


NO_LESION_KEY = "no_lesion_found"


class LesionCropd(MapTransform):
    """Crop to the square around the lesion's bounding box (``margin`` = extra fraction of its side).

    Expert concepts describe the lesion, not the surrounding skin; a tight crop puts more of the network's
    resolution on the lesion (PH2 concept AUROC 0.79 -> 0.82, ``medcbm bench concepts``) and drops the
    background, where site cues (vignetting, rulers, skin) live. The square may extend past the border;
    that part is filled with the image's edge pixels.

    Args:
        crop: :attr:`PreprocessConfig.crop`. ``mask_bbox`` uses the sample's mask file (samples without one,
            ``mask_key`` missing or ``None``, keep the whole image); ``auto`` finds the lesion with
            :func:`medcbm.data.lesion.auto_lesion_mask`; ``mask_or_auto`` uses the mask where there is one.
            Where no lesion is found the image stays whole and the sample gets ``NO_LESION_KEY: True``.
    """

    def __init__(self, keys, mask_key: str = "mask", margin: float = 0.0, crop: str = "mask_bbox"):
        super().__init__(keys)
        self.mask_key, self.margin, self.crop = mask_key, float(margin), crop

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask_path = d.get(self.mask_key) if self.crop != "auto" else None
        if mask_path is None and self.crop == "mask_bbox":
            return d
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            if mask_path is not None:
                mask = load_mask(str(mask_path), img.shape[-2:])
            else:
                mask = auto_lesion_mask(img)
                if mask is None:
                    d[NO_LESION_KEY] = True  # reported by feature extraction, not silently used whole
                    continue
            d[key] = crop_to_mask(img, mask, self.margin, path=str(mask_path or ""))
        return d


class ColorConstancyd(MapTransform):
    """Shades-of-Gray colour constancy on a ``(3, H, W)`` image in [0, 1] (see :mod:`medcbm.data.lesion`)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = shades_of_gray(torch.as_tensor(d[key]))
        return d


def load_mask(path: str, shape: tuple[int, int]) -> torch.Tensor:
    """A binary lesion mask as ``(H, W)`` bool, resized (nearest) to the image's ``shape``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            m = torch.from_numpy(np.asarray(im.convert("L")) > 0)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read lesion mask: {exc}", path=path, field="mask") from None
    if tuple(m.shape) != tuple(shape):  # e.g. masks saved at another resolution than the image
        m = F.interpolate(m[None, None].float(), size=tuple(shape), mode="nearest")[0, 0] > 0.5
    return m


def crop_to_mask(img: torch.Tensor, mask: torch.Tensor, margin: float, *, path: str = "") -> torch.Tensor:
    """Square crop of ``img (C, H, W)`` around ``mask``'s bounding box, edge-padded where it overflows."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        raise DataError("lesion mask is empty: nothing to crop to", path=path or None, field="mask")
    cy, cx = (ys.min() + ys.max()).item() / 2, (xs.min() + xs.max()).item() / 2
    half = max(int((ys.max() - ys.min()).item()), int((xs.max() - xs.min()).item()), 1) * (1 + margin) / 2
    y0, y1 = round(cy - half), round(cy + half) + 1
    x0, x1 = round(cx - half), round(cx + half) + 1
    h, w = img.shape[-2:]
    pad = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
    if any(pad):
        img = F.pad(img[None].float(), pad, mode="replicate")[0]
        x0, x1, y0, y1 = x0 + pad[0], x1 + pad[0], y0 + pad[2], y1 + pad[2]
    return img[..., y0:y1, x0:x1]


class LoadMedicalImaged(MapTransform):
    """MONAI ``LoadImage`` with the reader chosen per file: DICOM -> :class:`MedDicomReader`, else PIL.

    Choosing up front (rather than MONAI's try-every-reader fallback) means a corrupt file raises our
    :class:`~medcbm.errors.DataError` naming it, instead of a chain of unrelated reader failures.
    """

    def __init__(self, keys):
        super().__init__(keys)
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)
        self.dicom, self.pil = MedDicomReader(), SafePILReader()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            d[key] = self.loader(path, reader=self.dicom if is_dicom_file(path) else self.pil)
        return d


def load_transforms(keys: Sequence[str] = ("image",)) -> list:
    """Readers only: DICOM through :class:`MedDicomReader`, everything else through PIL."""
    return [LoadMedicalImaged(keys=list(keys))]


def unwrap_transform_error(exc: BaseException) -> BaseException:
    """The user-facing cause of a transform failure.

    MONAI wraps every failure as ``RuntimeError('applying transform <... object at 0x...>')``, once per nested
    transform; that text names neither the file nor the problem.

    Returns:
        The first :class:`DataError` in the ``__cause__`` chain, else the innermost exception (the one a reader
        library raised).
    """
    seen, last, visited = exc, exc, set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, DataError):
            return seen
        visited.add(id(seen))
        last, seen = seen, seen.__cause__
    return last


def transform_data_error(exc: BaseException, path: str) -> DataError:
    """A one-line :class:`DataError` naming ``path`` for any failure of the transform chain on that file."""
    cause = unwrap_transform_error(exc)
    if isinstance(cause, DataError):
        return cause
    text = " ".join(str(cause).split())  # library messages can span lines; ours are one line
    return DataError(f"cannot load image ({type(cause).__name__}: {text})", path=str(path))


def apply_preprocess(transform: Compose, path: str, *, mask: str | None = None) -> torch.Tensor:
    """Run a :func:`preprocess_transforms` pipeline on one file; any failure is a one-line DataError naming it."""
    try:
        return transform({"image": str(path), "mask": mask})["image"]
    except Exception as exc:  # noqa: BLE001 - reader libraries raise anything; the user sees the cause
        raise transform_data_error(exc, str(path)) from None


def load_image(path: str, cfg: PreprocessConfig | None = None, *, mask: str | None = None) -> torch.Tensor:
    """Load and preprocess one file into a ``(3, S, S)`` tensor; bad files raise :class:`DataError`.

    Args:
        mask: lesion mask file, read when ``cfg.crop`` uses masks.
    """
    x = apply_preprocess(preprocess_transforms(cfg or PreprocessConfig()), path, mask=mask)
    if not torch.isfinite(x).all():
        raise DataError("the image decodes to non-finite values", path=str(path))
    return x


def preprocess_transforms(cfg: PreprocessConfig, keys: Sequence[str] = ("image",)) -> Compose:
    """Full load-to-tensor pipeline for a backbone's input."""
    return Compose(
        load_transforms(keys)
        + [
            ToRGBd(keys=list(keys)),
            *([ColorConstancyd(keys=list(keys))] if cfg.color_constancy == "shades_of_gray" else []),
            *([LesionCropd(keys=list(keys), margin=cfg.crop_margin, crop=cfg.crop)]
              if cfg.crop != "none" else []),
            ResizeShortCropd(keys=list(keys), size=cfg.image_size, mode=cfg.resize),
            NormalizeImaged(keys=list(keys), mean=cfg.mean, std=cfg.std),
        ]
    )
