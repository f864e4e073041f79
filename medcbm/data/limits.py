"""Bounds on an image's size, checked from its header before any pixels are allocated.

A 203-byte PNG can declare 60000 x 2 pixels; decoding and resizing it would take gigabytes. Real medical
photographs and radiographs stay far inside these limits; raise them with the environment variables when a
genuine image is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from medcbm.errors import ConfigError, DataError

ENV_MAX_PIXELS = "MEDCBM_MAX_PIXELS"
ENV_MAX_ASPECT = "MEDCBM_MAX_ASPECT"


@dataclass(frozen=True)
class ImageLimits:
    """Largest pixel count (per frame), most elongated aspect ratio and smallest side an image may have.

    40 million pixels bounds a decode at about 0.5 GB of float32 RGB; a 6000 x 4000 dermoscopy photograph is 24.
    """

    max_pixels: int = 40_000_000
    max_aspect: float = 20.0
    min_side: int = 8

    @classmethod
    def from_env(cls) -> "ImageLimits":
        """The defaults, overridden by ``MEDCBM_MAX_PIXELS`` and ``MEDCBM_MAX_ASPECT`` when set."""
        kwargs = {}
        for var, key, kind in ((ENV_MAX_PIXELS, "max_pixels", int), (ENV_MAX_ASPECT, "max_aspect", float)):
            raw = os.environ.get(var)
            if raw:
                try:
                    kwargs[key] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{var}={raw!r} is not a number") from None
                if kwargs[key] <= 0:
                    raise ConfigError(f"{var}={raw!r} must be positive")
        return cls(**kwargs)


def check_image_size(width: int, height: int, path: str, *, frames: int = 1, limits: ImageLimits | None = None) -> None:
    """Refuse an image whose declared size is degenerate or too large, before decoding it.

    Raises:
        DataError: naming the file, the size and the variable that raises the limit.
    """
    lim = limits or ImageLimits.from_env()
    w, h, n = int(width), int(height), max(int(frames), 1)
    if min(w, h) < lim.min_side:
        raise DataError(f"image is {w} x {h} pixels: too small to classify (each side needs at least "
                        f"{lim.min_side})", path=path)
    if max(w, h) / min(w, h) > lim.max_aspect:
        raise DataError(f"image is {w} x {h} pixels: aspect ratio above {lim.max_aspect:g} (a corrupt or hostile "
                        f"header?); set {ENV_MAX_ASPECT} to allow it", path=path)
    if w * h * n > lim.max_pixels:
        raise DataError(f"image is {w} x {h} pixels{f' x {n} frames' if n > 1 else ''}: more than "
                        f"{lim.max_pixels:,} pixels; set {ENV_MAX_PIXELS} to allow it", path=path)
