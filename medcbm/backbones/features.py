"""Feature extraction from image files, with a persistent cache and a fast inference path."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from medcbm._io import sha256_text
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec
from medcbm.backbones.cache import FeatureCache
from medcbm.backbones.ensemble import PREFIX as ENSEMBLE, member_specs
from medcbm.backbones.hash_note import HashNote, stat_key
from medcbm.backbones.inference import DecodeFailure, optimize_for_inference  # noqa: F401 - re-exported
from medcbm.backbones.loaders import FeatureExtractor
from medcbm.backbones.runners import ExtractionRunner, ExtractJob, ExtractOutcome, create_runner
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.engines import EngineConfig, current_engine
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
    engine: EngineConfig | None = None,
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
        shard_size: images per cache shard (shards are also written every 20 s, so an interrupt loses little).
        engine: where to run (default: the one set by :func:`medcbm.engines.use_engine`, else local).

    Returns:
        :class:`Features` aligned with the rows that loaded.
    """
    spec = get_backbone_spec(backbone) if isinstance(backbone, str) else backbone
    if spec.family == ENSEMBLE and model is None:
        return _extract_ensemble(manifest, spec, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                                 skips=skips, optimize=optimize, progress=progress, shard_size=shard_size, engine=engine)
    runner = create_runner(engine or current_engine(), num_workers=num_workers, optimize=optimize, model=model)
    with runner:
        return _extract(manifest, spec, runner, cache_dir=cache_dir, batch_size=batch_size, skips=skips,
                        progress=progress, shard_size=shard_size)


def _extract_ensemble(manifest: Manifest, spec: BackboneSpec, *, skips: SkipLog | None, **kw) -> Features:
    """An ensemble's features from its members' own caches, concatenated: a member's features are computed
    once whether it is read alone or in an ensemble."""
    # every member decodes the same files the same way, so they skip the same rows: record skips once
    parts = [extract_features(manifest, m, skips=skips if i == 0 else (None if skips is None else SkipLog()), **kw)
             for i, m in enumerate(member_specs(spec))]
    if any(p.keys != parts[0].keys for p in parts[1:]):
        raise DataError(f"members of {spec.name} loaded different images; run each member on its own to see which "
                        "file fails", path=manifest.source)
    stats = {"n": parts[0].stats["n"], "members": {p.spec.name: p.stats for p in parts}}
    return Features(X=np.concatenate([p.X for p in parts], 1), manifest=parts[0].manifest, spec=spec, stats=stats,
                    keys=parts[0].keys)


def _extract(manifest: Manifest, spec: BackboneSpec, runner: ExtractionRunner, *, cache_dir: str | os.PathLike | None,
             batch_size: int,
             skips: SkipLog | None, progress: bool, shard_size: int) -> Features:
    t0 = time.perf_counter()
    paths = [str(p) for p in manifest.image_paths()]
    masks = _crop_masks(manifest, spec)
    hashes = _cache_keys(paths, masks, runner, cache_dir, skips)
    hash_s = time.perf_counter() - t0
    cache = FeatureCache(cache_dir, spec) if cache_dir is not None else None
    todo = sorted({h: i for i, h in enumerate(hashes) if h is not None and (cache is None or h not in cache)}.values())
    failed: set[int] = {i for i, h in enumerate(hashes) if h is None}
    outcome = ExtractOutcome()

    def on_failure(j: int, failure: DecodeFailure) -> None:
        row = todo[j]
        if skips is None:
            raise DataError(failure.message, path=failure.path, row=row + 1, field=failure.field)
        skips.add(f"{failure.message} [field '{failure.field}']", row=row + 1, path=failure.path)
        failed.add(row)

    try:
        if todo:
            job = ExtractJob(spec, [paths[i] for i in todo], [masks[i] for i in todo], [hashes[i] for i in todo],
                             batch_size=batch_size, shard_size=shard_size, progress=progress)
            outcome = runner.run(job, cache, on_failure)
    finally:  # fold new shards into the compacted index, even when interrupted
        if cache is not None and cache.unindexed_shards:
            cache.compact()
    keep = [i for i in range(len(paths)) if i not in failed]
    computed = outcome.features
    cached_rows = [hashes[i] for i in keep if hashes[i] not in computed]
    cached = dict(zip(cached_rows, cache.get_many(cached_rows))) if cache is not None and cached_rows else {}
    rows = [computed[hashes[i]] if hashes[i] in computed else cached[hashes[i]] for i in keep]
    dim = rows[0].shape[0] if rows else (spec.num_features or 0)
    X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    elapsed = time.perf_counter() - t0
    setup_s, loop_s = outcome.timings.get("setup_seconds", 0.0), outcome.timings.get("extract_seconds", 0.0)
    n_done = outcome.n_done
    stats = {"n": len(paths), "extracted": n_done, "from_cache": len(keep) - n_done,
             "failed": len(failed), "seconds": round(elapsed, 3), "hash_seconds": round(hash_s, 3),
             "setup_seconds": round(setup_s, 3), "extract_seconds": round(loop_s, 3),
             "extract_img_s": round(n_done / loop_s, 2) if loop_s > 0 else None,
             "engine": type(runner).__name__}
    stats.update({k: round(v, 3) for k, v in outcome.timings.items() if k not in ("setup_seconds", "extract_seconds")})
    uncropped = [todo[j] for j in outcome.uncropped]
    if uncropped:
        stats["no_lesion_found"] = len(uncropped)
        logger.warning("%s: no lesion found in %d newly extracted image(s), used whole: %s", spec.name, len(uncropped),
                       ", ".join(str(paths[i]) for i in uncropped[:5]) + (" ..." if len(uncropped) > 5 else ""))
    logger.info("features %s: %s", spec.name, stats)
    sub = manifest if len(keep) == len(paths) else manifest.subset(keep)
    return Features(X=X, manifest=sub, spec=spec, stats=stats, keys=[hashes[i] for i in keep])


def _cache_keys(paths: list[str], masks: list[str | None], runner: ExtractionRunner,
                cache_dir: str | os.PathLike | None, skips: SkipLog | None) -> list[str | None]:
    """Per row: the cache key (content hash of the image, combined with its mask's), ``None`` for a skipped row.

    Hashes remembered in the cache root's :class:`HashNote` are reused when the file's path, size and mtime are
    unchanged; the rest are computed by the runner (on the workers, for a cluster).
    """
    note = HashNote(cache_dir) if cache_dir is not None else None
    files = sorted({p for p in paths} | {m for m in masks if m is not None})
    stat_keys = {f: stat_key(f) for f in files}
    known = {f: note.get(stat_keys[f]) for f in files} if note is not None else {}
    unknown = [f for f in files if stat_keys[f] is not None and not known.get(f)]
    computed = dict(zip(unknown, runner.hash_files(unknown))) if unknown else {}
    if note is not None:
        for f, h in computed.items():
            if h is not None:
                note.add(stat_keys[f], h)
        note.save()
    content = {f: known.get(f) or computed.get(f) for f in files}
    keys: list[str | None] = []
    for i, (p, m) in enumerate(zip(paths, masks)):
        h = content[p]
        if h is None:
            if skips is None:
                raise DataError("image file not found", path=p, row=i + 1, field="image")
            skips.add("image file not found", row=i + 1, path=p)
        elif m is not None:
            if content[m] is None:
                raise DataError("lesion mask file not found", path=m, row=i + 1, field="mask")
            h = sha256_text(h, content[m])  # the cached vector depends on the mask too
        keys.append(h)
    return keys
