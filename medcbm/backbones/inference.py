"""The per-image and per-batch steps every extraction runner shares: decode one file, encode one batch.

Kept free of scheduling so the local runner (DataLoader) and the Ray runner (actors) produce the same
features from the same code.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from medcbm.backbones._registry import BackboneSpec
from medcbm.backbones.loaders import FeatureExtractor, create_backbone
from medcbm.data.transforms import NO_LESION_KEY, preprocess_transforms, transform_data_error
from medcbm.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeFailure:
    """Why one file could not be used (reported per file, so the skip list applies)."""

    message: str
    path: str
    field: str  # "image" or "mask"


def decode_sample(transform, path: str, mask: str | None) -> tuple[torch.Tensor | None, DecodeFailure | None, bool]:
    """Decode and preprocess one image; errors come back as values so workers never raise tracebacks.

    Returns:
        ``(tensor, None, no_lesion_found)`` or ``(None, failure, False)``.
    """
    try:
        out = transform({"image": path, "mask": mask})
        if not torch.isfinite(out["image"]).all():  # one bad file is skipped or named, not a failed run
            return None, DecodeFailure("the image decodes to non-finite values", path, "image"), False
        return out["image"], None, bool(out.get(NO_LESION_KEY, False))
    except Exception as exc:  # anything a reader library throws becomes a one-line per-file message
        err = transform_data_error(exc, path)  # keeps which file and field it blames (the image or its mask)
        return None, DecodeFailure(err.message, err.path or path, err.field or "image"), False


def optimize_for_inference(model: FeatureExtractor, image_size: int, *, channels_last: bool = True) -> torch.nn.Module:
    """Trace and freeze the model (folds BatchNorm into convs) in channels-last layout.

    Falls back to the eager model when tracing is not possible (e.g. some HF models).
    """
    model = model.eval()
    example = torch.zeros(2, 3, image_size, image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.compile, but compile costs minutes on 2 CPU
            # cores; trace+freeze still gives the fastest CPU graph here (BatchNorm folded).
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            frozen(example)
            frozen(example)  # two warm-up calls let the profiling executor specialise
        return frozen
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use eager"
        logger.info("tracing %s failed (%s); using eager mode", type(model).__name__, exc)
        return model


class BatchEncoder:
    """A backbone ready for inference: ``encode(batch)`` returns float32 features, refusing non-finite ones."""

    def __init__(self, spec: BackboneSpec, *, model: FeatureExtractor | None = None, optimize: bool = True):
        self.spec, self.optimize = spec, optimize
        model = model or create_backbone(spec)
        self.model = optimize_for_inference(model, spec.preprocess.image_size) if optimize else model.eval()
        self.transform = preprocess_transforms(spec.preprocess)

    def encode(self, x: torch.Tensor) -> np.ndarray:
        if self.optimize:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self.model(x).float().numpy()
        if not np.isfinite(feats).all():
            raise DataError(f"backbone {self.spec.name} produced non-finite features")
        return feats
