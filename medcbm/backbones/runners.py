"""Extraction runners: one interface, several places to run it.

:class:`ExtractionRunner` hashes files and turns a list of images into features, writing cache shards as it
goes. :class:`LocalRunner` (DataLoader decoding in this process) is the default and never imports Ray;
:class:`medcbm.backbones.ray_runner.RayRunner` runs the same decode/encode steps in a Ray actor pool. A
``torchrun`` runner would implement the same two methods.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medcbm.backbones._registry import BackboneSpec
from medcbm._io import sha256_file_or_none
from medcbm.backbones.cache import FeatureCache
from medcbm.backbones.inference import BatchEncoder, DecodeFailure, decode_sample
from medcbm.backbones.loaders import FeatureExtractor
from medcbm.data.transforms import preprocess_transforms
from medcbm.engines import EngineConfig

logger = logging.getLogger(__name__)

# an interrupted run loses at most this much finished work (plus the batch in flight)
FLUSH_EVERY_S = 20.0


@dataclass
class ExtractJob:
    """Images to encode (only those not in the cache), with their cache keys."""

    spec: BackboneSpec
    paths: list[str]
    masks: list[str | None]
    keys: list[str]
    batch_size: int = 32
    shard_size: int = 512
    progress: bool = True


@dataclass
class ExtractOutcome:
    """What a runner did: features it kept in memory (key -> vector), rows it encoded, rows it could not use."""

    features: dict[str, np.ndarray] = field(default_factory=dict)
    n_done: int = 0
    uncropped: list[int] = field(default_factory=list)  # job positions where the automatic crop found no lesion
    timings: dict[str, float] = field(default_factory=dict)


# called with (job position, failure); raises to stop the run, or records a skip
FailureSink = Callable[[int, DecodeFailure], None]


class ExtractionRunner(ABC):
    """Hashes and encodes images somewhere (this process, a cluster).

    Also a context manager: a runner that needs a session (a cluster connection) holds it inside ``with``, so
    hashing and encoding share one; calls outside ``with`` open and close their own.
    """

    def __enter__(self) -> ExtractionRunner:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @abstractmethod
    def hash_files(self, paths: list[str]) -> list[str | None]:
        """SHA-256 of each file's bytes (``None``: the file does not exist)."""

    @abstractmethod
    def run(self, job: ExtractJob, cache: FeatureCache | None, on_failure: FailureSink) -> ExtractOutcome:
        """Encode every image of ``job``; with a cache, every encoded row is in a shard when this returns
        (or raises, KeyboardInterrupt included)."""


class _ImageDataset(Dataset):
    def __init__(self, job: ExtractJob):
        self.job, self.transform = job, preprocess_transforms(job.spec.preprocess)

    def __len__(self) -> int:
        return len(self.job.paths)

    def __getitem__(self, i: int):
        x, failure, no_lesion = decode_sample(self.transform, self.job.paths[i], self.job.masks[i])
        return i, x, failure, no_lesion


def _collate(batch):
    ok = [b for b in batch if b[1] is not None]
    x = torch.stack([b[1] for b in ok]) if ok else None
    return [b[0] for b in ok], x, [(b[0], b[2]) for b in batch if b[1] is None], [b[0] for b in batch if b[3]]


def default_num_workers() -> int:
    """Decoding processes for the local runner: 1 on 2-core machines, else up to 4."""
    return 1 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 2) - 1)


class ShardWriter:
    """Buffers encoded rows and writes a cache shard every ``shard_size`` rows or ``FLUSH_EVERY_S`` seconds."""

    def __init__(self, cache: FeatureCache | None, shard_size: int):
        self.cache, self.shard_size = cache, shard_size
        self.keys: list[str] = []
        self.rows: list[np.ndarray] = []
        self.last = time.monotonic()
        self.shards: list[str] = []

    def add(self, keys: list[str], feats: np.ndarray) -> None:
        self.keys += keys
        self.rows += list(feats)
        if len(self.keys) >= self.shard_size or time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None and self.keys:
            self.shards.append(self.cache.put(self.keys, np.stack(self.rows)).name)
        self.keys, self.rows, self.last = [], [], time.monotonic()


class LocalRunner(ExtractionRunner):
    """Decode in DataLoader worker processes, encode in this one (the default engine)."""

    def __init__(self, *, num_workers: int | None = None, optimize: bool = True, model: FeatureExtractor | None = None):
        self.num_workers, self.optimize, self.model = num_workers, optimize, model

    def hash_files(self, paths: list[str]) -> list[str | None]:
        return [sha256_file_or_none(p) for p in paths]

    def run(self, job: ExtractJob, cache: FeatureCache | None, on_failure: FailureSink) -> ExtractOutcome:
        out = ExtractOutcome()
        ts = time.perf_counter()
        encoder = BatchEncoder(job.spec, model=self.model, optimize=self.optimize)
        out.timings["setup_seconds"] = time.perf_counter() - ts
        ts = time.perf_counter()
        workers = default_num_workers() if self.num_workers is None else self.num_workers
        dl = DataLoader(_ImageDataset(job), batch_size=job.batch_size, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
        bar = progress_bar(len(job.paths), job.progress, job.spec.name)
        writer = ShardWriter(cache, job.shard_size)
        try:
            for ok_idx, x, errors, no_lesion in dl:
                out.uncropped += no_lesion
                for i, failure in errors:
                    on_failure(i, failure)
                if x is not None:
                    feats = encoder.encode(x)
                    keys = [job.keys[i] for i in ok_idx]
                    out.features.update(zip(keys, feats))
                    writer.add(keys, feats)
                    out.n_done += len(ok_idx)
                bar.update(len(ok_idx) + len(errors))
        finally:  # an interrupt or a refused file keeps everything encoded so far
            writer.flush()
            bar.close()
        out.timings["extract_seconds"] = time.perf_counter() - ts
        return out


def create_runner(config: EngineConfig, *, num_workers: int | None = None, optimize: bool = True,
                  model: FeatureExtractor | None = None) -> ExtractionRunner:
    """The runner for an engine config (``ray`` is imported only when asked for)."""
    if config.engine == "ray":
        from medcbm.backbones.ray_runner import RayRunner

        return RayRunner(config, optimize=optimize)
    return LocalRunner(num_workers=num_workers, optimize=optimize, model=model)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, name: str):
    """A tqdm bar in images (or a no-op)."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=f"features[{name}]", smoothing=0.1, mininterval=1.0)
