"""Feature extraction on a Ray cluster (``--engine ray``): the same decode/encode code, in a Ray Data actor pool.

Each actor loads the backbone once, sets its own torch thread count (Ray sets ``OMP_NUM_THREADS=1`` in
workers), decodes and encodes one batch at a time and writes that batch as a content-named shard into the
shared cache, so the driver receives only keys and per-file failures. A retried batch (a worker killed and
restarted by Ray) rewrites the same shard name: nothing is lost and nothing duplicated. Hashing the files
also runs on the workers. Only imported when the engine is ``ray``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np

from medcbm.backbones._registry import BackboneSpec
from medcbm.backbones.cache import FeatureCache
from medcbm.backbones.inference import DecodeFailure
from medcbm._io import sha256_file_or_none
from medcbm.backbones.runners import ExtractionRunner, ExtractJob, ExtractOutcome, FailureSink, progress_bar
from medcbm.engines import EngineConfig, hash_files_batch, import_ray, quiet_ray_data, ray_dataset, ray_session

logger = logging.getLogger(__name__)

HASH_BATCH = 256
# fewer files than this are hashed on the driver: starting hashing workers costs more than reading them
DRIVER_HASH_MAX = 512


class _EncodeActor:
    """One model replica: decodes, encodes and (with a cache) writes a shard per batch."""

    def __init__(self, spec: dict, cache_root: str | None, threads: int, optimize: bool):
        import torch

        from medcbm.backbones.inference import BatchEncoder

        t0 = time.perf_counter()
        torch.set_num_threads(max(1, threads))
        self.spec = BackboneSpec.model_validate(spec)
        self.encoder = BatchEncoder(self.spec, optimize=optimize)
        self.cache = FeatureCache(cache_root, self.spec, scan=False) if cache_root else None  # writes only
        self.init_s = time.perf_counter() - t0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        from medcbm.backbones.inference import decode_sample

        n = len(batch["pos"])
        t0 = time.perf_counter()
        decoded = [decode_sample(self.encoder.transform, str(p), str(m) or None)
                   for p, m in zip(batch["path"], batch["mask"])]
        t1 = time.perf_counter()
        ok = [i for i, (x, _, _) in enumerate(decoded) if x is not None]
        X = self.encoder.encode(torch.stack([decoded[i][0] for i in ok])) if ok else None
        shard = ""
        if X is not None and self.cache is not None:
            shard = self.cache.put([str(batch["key"][i]) for i in ok], X).name
        t2 = time.perf_counter()
        fail = [d[1] for d in decoded]
        timing = np.zeros((n, 3), np.float64)
        timing[0] = (t1 - t0, t2 - t1, self.init_s)
        self.init_s = 0.0  # counted once per actor
        out = {"pos": batch["pos"], "ok": np.array([x is not None for x, _, _ in decoded]),
               "no_lesion": np.array([bool(d[2]) for d in decoded]),
               "message": np.array([f.message if f else "" for f in fail], dtype=object),
               "path": np.array([f.path if f else "" for f in fail], dtype=object),
               "field": np.array([f.field if f else "" for f in fail], dtype=object),
               "shard": np.array([shard] * n, dtype=object), "timing": timing}
        if self.cache is None:  # no shared cache: the features travel back to the driver
            out["feature"] = np.zeros((n, X.shape[1] if X is not None else self.spec.num_features or 0), np.float32)
            if X is not None:
                out["feature"][ok] = X
        return out


class RayRunner(ExtractionRunner):
    """Hash and encode images in a Ray Data actor pool (``EngineConfig(engine="ray")``)."""

    def __init__(self, config: EngineConfig, *, optimize: bool = True):
        import_ray()  # fail early, with the install hint, before any work
        self.config, self.optimize = config, optimize
        self._session: contextlib.ExitStack | None = None
        self._depth = 0
        self.driver_hash_max = DRIVER_HASH_MAX

    def __enter__(self) -> RayRunner:
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._session is not None:
            self._session.close()
            self._session = None

    def _ray(self):
        """The cluster session, opened on first use (a run with nothing to do never starts Ray)."""
        if self._session is None:
            self._session = contextlib.ExitStack()
            self._session.enter_context(ray_session(self.config))
        ray = import_ray()
        quiet_ray_data(ray)
        return ray

    def hash_files(self, paths: list[str]) -> list[str | None]:
        if len(paths) < self.driver_hash_max:
            return [sha256_file_or_none(p) for p in paths]
        with self:
            ray = self._ray()
            ds = ray_dataset(ray, [{"pos": i, "path": p} for i, p in enumerate(paths)], HASH_BATCH, self.config.workers)
            out: list[str | None] = [None] * len(paths)
            hashed = ds.map_batches(hash_files_batch, batch_size=HASH_BATCH, batch_format="numpy",
                                    num_cpus=self.config.cpus_per_worker)
            for b in hashed.iter_batches(batch_size=None, batch_format="numpy"):
                for pos, h in zip(b["pos"], b["sha256"]):
                    out[int(pos)] = h or None
            return out

    def run(self, job: ExtractJob, cache: FeatureCache | None, on_failure: FailureSink) -> ExtractOutcome:
        cfg, out = self.config, ExtractOutcome()
        batch = min(cfg.batch_size, job.shard_size)
        rows = [{"pos": i, "path": p, "mask": m or "", "key": k}
                for i, (p, m, k) in enumerate(zip(job.paths, job.masks, job.keys))]
        t0 = time.perf_counter()
        with self:
            ray = self._ray()
            encoded = ray_dataset(ray, rows, batch, cfg.workers).map_batches(
                _EncodeActor, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.workers),
                num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker or None,
                fn_constructor_kwargs={"spec": job.spec.model_dump(mode="json"),
                                       "cache_root": str(cache.dir.parent) if cache is not None else None,
                                       "threads": int(cfg.cpus_per_worker), "optimize": self.optimize})
            # Ray Data's actor pools restart a killed worker and retry its batch by default (max_restarts=-1)
            bar = progress_bar(len(rows), job.progress, job.spec.name)
            shards: set[str] = set()
            timing = np.zeros(3)
            first = None
            try:
                for b in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                    first = first if first is not None else time.perf_counter() - t0
                    timing += b["timing"].sum(axis=0)
                    shards.update(s for s in b["shard"] if s)
                    for j, pos in enumerate(b["pos"].tolist()):
                        if b["ok"][j]:
                            out.n_done += 1
                            if cache is None:
                                out.features[job.keys[pos]] = b["feature"][j]
                        else:
                            on_failure(pos, DecodeFailure(str(b["message"][j]), str(b["path"][j]), str(b["field"][j])))
                        if b["no_lesion"][j]:
                            out.uncropped.append(pos)
                    bar.update(len(b["pos"]))
            finally:  # shards written by workers before an interrupt are kept and indexed
                bar.close()
                if cache is not None:
                    cache.adopt(sorted(shards))
        out.timings = {"setup_seconds": float(timing[2]), "extract_seconds": time.perf_counter() - t0,
                       "first_result_seconds": first or 0.0, "decode_cpu_seconds": float(timing[0]),
                       "model_cpu_seconds": float(timing[1])}
        return out
