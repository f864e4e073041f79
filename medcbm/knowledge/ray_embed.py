"""Chunk embedding on a Ray cluster (``medcbm knowledge ingest --engine ray --workers N``).

Texts flow through a Ray Data actor pool (``map_batches`` with :class:`_EmbedActor`): each actor loads the
embedder once and keeps it for every batch it is given, with its own torch thread count (Ray sets
``OMP_NUM_THREADS=1`` in workers). The vectors come back to the driver tagged with their positions, so the
result is in input order however Ray schedules the batches; the driver then writes them, one writer thread
per chroma server (:meth:`~medcbm.knowledge.sharded.ShardedStore.write_chunks`). Writes stay on the driver
so that an ingest keeps its all-or-nothing, resumable semantics. Only imported when the engine is ``ray``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from medcbm.engines import EngineConfig, import_ray, quiet_ray_data, ray_dataset, ray_session
from medcbm.errors import MedcbmError

logger = logging.getLogger(__name__)


class _EmbedActor:
    """One embedder replica in a Ray worker."""

    def __init__(self, name: str, threads: int, device: str):
        import torch

        from medcbm.knowledge.embedders import get_embedder

        torch.set_num_threads(max(1, threads))
        self.embedder = get_embedder(name, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"pos": batch["pos"], "embedding": self.embedder.encode(texts, batch_size=len(texts))}


def embed_with_ray(texts: list[str], embedder_name: str, config: EngineConfig) -> np.ndarray:
    """``(len(texts), dim)`` float32 unit vectors computed by ``config.workers`` Ray actors.

    Joins the cluster ``config`` names (or the session already open, e.g. :func:`medcbm.engines.engine_scope`).

    Raises:
        MedcbmError: Ray Data is not installed, or the workers returned fewer vectors than texts.
    """
    ray = import_ray()
    t0 = time.perf_counter()
    with ray_session(config):
        quiet_ray_data(ray)
        batch = config.batch_size
        rows = [{"pos": i, "text": t} for i, t in enumerate(texts)]
        n_batches = -(-len(rows) // batch)
        actors = max(1, min(config.workers, n_batches))  # a small update does not start idle replicas
        embedded = ray_dataset(ray, rows, batch, actors).map_batches(
            _EmbedActor, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None,
            fn_constructor_kwargs={"name": embedder_name, "threads": int(config.cpus_per_worker),
                                   "device": "cuda" if config.gpus_per_worker else "cpu"})
        out: np.ndarray | None = None
        done = np.zeros(len(texts), dtype=bool)
        for b in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            if out is None:
                out = np.empty((len(texts), b["embedding"].shape[1]), np.float32)
            out[b["pos"]] = b["embedding"]
            done[b["pos"]] = True
    if out is None or not done.all():
        raise MedcbmError(f"the Ray workers returned {int(done.sum())} of {len(texts)} embeddings; rerun the ingest "
                          "(it resumes: chunks already stored are not embedded again)")
    logger.info("embedded %d chunks on %d Ray workers in %.1f s", len(texts), actors, time.perf_counter() - t0)
    return out
