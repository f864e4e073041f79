"""Feature extraction from image files, with a persistent cache and a fast inference path."""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medcbm._io import sha256_text
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec
from medcbm.backbones.cache import FeatureCache, content_hash
from medcbm.backbones.loaders import FeatureExtractor, create_backbone
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.data.transforms import NO_LESION_KEY, preprocess_transforms, unwrap_transform_error
from medcbm.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class Features:
    """Features aligned with ``manifest`` rows (rows that failed and were skipped are absent)."""

    X: np.ndarray
    manifest: Manifest
    spec: BackboneSpec
    stats: dict = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # per row: the cache key (content hash of the image, and its mask)

    @property
    def ids(self) -> list[str]:
        return self.manifest.frame["id"].tolist()


class _ImageDataset(Dataset):
    """Decodes and preprocesses files; errors come back as values so workers never raise tracebacks."""

    def __init__(self, paths: list[str], rows: list[int], spec: BackboneSpec, masks: list[str | None] | None = None):
        self.paths, self.rows = paths, rows
        self.masks = masks or [None] * len(paths)
        self.transform = preprocess_transforms(spec.preprocess)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            out = self.transform({"image": self.paths[i], "mask": self.masks[i]})
            if not torch.isfinite(out["image"]).all():  # one bad file is skipped or named, not a failed run
                return i, None, ("the image decodes to non-finite values", self.paths[i], "image"), False
            return i, out["image"], None, bool(out.get(NO_LESION_KEY, False))
        except Exception as exc:  # anything a reader library throws becomes a per-file message
            cause = unwrap_transform_error(exc)
            if isinstance(cause, DataError):  # keep which file and field it blames (the image or its mask)
                return i, None, (cause.message, cause.path or self.paths[i], cause.field or "image"), False
            return i, None, (f"cannot load image: {type(cause).__name__}: {cause}", self.paths[i], "image"), False


def _collate(batch):
    idx = [b[0] for b in batch]
    ok = [b for b in batch if b[1] is not None]
    x = torch.stack([b[1] for b in ok]) if ok else None
    return idx, [b[0] for b in ok], x, [(b[0], b[2]) for b in batch if b[1] is None], [b[0] for b in batch if b[3]]


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


def _crop_masks(manifest: Manifest, spec: BackboneSpec) -> list[str | None]:
    """Mask path per row when the backbone crops to lesion masks (``None``: no mask for that image)."""
    if spec.preprocess.crop in ("none", "auto"):
        return [None] * len(manifest)
    masks = [None if m is None else str(m) for m in manifest.mask_paths()]
    missing = sum(m is None for m in masks)
    if missing:
        # a manifest without a mask column at all is the normal target-dataset case: say it once per call, quietly
        log = logger.info if "mask" in manifest.frame.columns else logger.debug
        fallback = "get an automatic lesion box" if spec.preprocess.crop == "mask_or_auto" else "are used whole"
        log("%s crops to lesion masks; %d of %d images have none and %s", spec.name, missing, len(masks), fallback)
    return masks


def _default_workers() -> int:
    return 1 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 2) - 1)


def extract_features(
    manifest: Manifest,
    backbone: str | BackboneSpec = "efficientnet_lite0",
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    skips: SkipLog | None = None,
    optimize: bool = True,
    progress: bool = True,
    model: FeatureExtractor | None = None,
    shard_size: int = 512,
) -> Features:
    """Extract pooled features for every manifest row, reusing and filling the cache.

    Args:
        manifest: images to encode.
        backbone: registry name or spec.
        cache_dir: feature cache root (``None``: no persistence).
        batch_size: images per forward pass.
        num_workers: decoding processes (default: 1 on 2-core machines).
        skips: when given, unreadable images are recorded here and left out; otherwise they raise.
        optimize: trace + freeze + channels-last for speed.
        progress: show a progress bar with images/s.
        model: an already-built extractor (avoids reloading weights).
        shard_size: images per cache shard (the resume granularity).

    Returns:
        :class:`Features` aligned with the rows that loaded.
    """
    spec = get_backbone_spec(backbone) if isinstance(backbone, str) else backbone
    t0 = time.perf_counter()
    paths = [str(p) for p in manifest.image_paths()]
    masks = _crop_masks(manifest, spec)
    hashes: list[str | None] = []
    for i, p in enumerate(paths):
        try:
            h = content_hash(p)
        except FileNotFoundError:
            if skips is None:
                raise DataError("image file not found", path=p, row=i + 1, field="image") from None
            skips.add("image file not found", row=i + 1, path=p)
            h = None
        if h is not None and masks[i] is not None:
            try:  # the cached vector depends on the mask too
                h = sha256_text(h, content_hash(masks[i]))
            except FileNotFoundError:
                raise DataError("lesion mask file not found", path=masks[i], row=i + 1, field="mask") from None
        hashes.append(h)
    cache = FeatureCache(cache_dir, spec) if cache_dir is not None else None
    todo = sorted({h: i for i, h in enumerate(hashes) if h is not None and (cache is None or h not in cache)}.values())
    computed: dict[str, np.ndarray] = {}
    failed: set[int] = {i for i, h in enumerate(hashes) if h is None}
    n_done = 0
    uncropped: list[int] = []  # rows where the automatic lesion crop found nothing (used whole)
    setup_s = loop_s = 0.0
    if todo:
        ts = time.perf_counter()
        model = model or create_backbone(spec)
        fast = optimize_for_inference(model, spec.preprocess.image_size) if optimize else model.eval()
        setup_s = time.perf_counter() - ts
        ts = time.perf_counter()
        ds = _ImageDataset([paths[i] for i in todo], todo, spec, [masks[i] for i in todo])
        workers = _default_workers() if num_workers is None else num_workers
        dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
        bar = _progress(len(todo), progress, spec.name)
        buf_h: list[str] = []
        buf_f: list[np.ndarray] = []
        with torch.inference_mode():
            for _, ok_idx, x, errors, no_lesion in dl:
                uncropped += [todo[local] for local in no_lesion]
                for local, (msg, bad_path, bad_field) in errors:
                    row = todo[local]
                    if skips is None:
                        raise DataError(msg, path=bad_path, row=row + 1, field=bad_field)
                    skips.add(f"{msg} [field '{bad_field}']", row=row + 1, path=bad_path)
                    failed.add(row)
                if x is not None:
                    if optimize:
                        x = x.contiguous(memory_format=torch.channels_last)
                    feats = fast(x).float().numpy()
                    if not np.isfinite(feats).all():
                        raise DataError(f"backbone {spec.name} produced non-finite features")
                    for local, f in zip(ok_idx, feats):
                        h = hashes[todo[local]]
                        computed[h] = f
                        buf_h.append(h)
                        buf_f.append(f)
                    n_done += len(ok_idx)
                if cache is not None and len(buf_h) >= shard_size:
                    cache.put(buf_h, np.stack(buf_f))
                    buf_h, buf_f = [], []
                bar.update(len(ok_idx) + len(errors))
        if cache is not None and buf_h:
            cache.put(buf_h, np.stack(buf_f))
        bar.close()
        loop_s = time.perf_counter() - ts
    keep = [i for i in range(len(paths)) if i not in failed]
    rows = []
    cached_rows = [hashes[i] for i in keep if hashes[i] not in computed]
    cached = dict(zip(cached_rows, cache.get_many(cached_rows))) if cache is not None and cached_rows else {}
    for i in keep:
        h = hashes[i]
        rows.append(computed[h] if h in computed else cached[h])
    dim = rows[0].shape[0] if rows else (spec.num_features or 0)
    X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    elapsed = time.perf_counter() - t0
    stats = {"n": len(paths), "extracted": n_done, "from_cache": len(keep) - n_done,
             "failed": len(failed), "seconds": round(elapsed, 3),
             "setup_seconds": round(setup_s, 3), "extract_seconds": round(loop_s, 3),
             "extract_img_s": round(n_done / loop_s, 2) if loop_s > 0 else None}
    if uncropped:
        stats["no_lesion_found"] = len(uncropped)
        logger.warning("%s: no lesion found in %d newly extracted image(s), used whole: %s", spec.name, len(uncropped),
                       ", ".join(str(paths[i]) for i in uncropped[:5]) + (" ..." if len(uncropped) > 5 else ""))
    logger.info("features %s: %s", spec.name, stats)
    sub = manifest if len(keep) == len(paths) else manifest.subset(keep)
    return Features(X=X, manifest=sub, spec=spec, stats=stats, keys=[hashes[i] for i in keep])


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, name: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=f"features[{name}]", smoothing=0.1, mininterval=1.0)
