"""The fine-tuning epochs data-parallel on Ray Train (``--engine ray``); only imported when the engine is ``ray``.

The driver has already decoded the images, cached the frozen trunk and fitted the linear-probe head
(:func:`~medcbm.backbones.concept_finetune.finetune_concepts`); it puts the cached maps, pools, labels and the
initial states into the object store once, and every Ray Train worker runs the shared
:func:`~medcbm.backbones.finetune_loop.train_epochs` on its slice of each batch. Rank 0 writes the best states
as safetensors into its checkpoint, which the driver reads back.

Gradients are summed with one ``all_reduce`` of a flat buffer rather than by DDP: each worker's loss is already
divided by the whole batch's annotated-entry count, so the exact full-batch gradient is a *sum* (DDP averages),
the forward runs through two modules (``net.top`` and the head) that DDP would have to wrap as one, and one
buffer makes one message per step, the batch's loss included.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from medcbm.backbones._registry import BackboneSpec
from medcbm.backbones.finetune_loop import Cache, LoopResult, LoopState, Shard, train_epochs
from medcbm.backbones.finetune_net import ConceptHead, SplitNet
from medcbm.engines import RAY_HINT, EngineConfig, ray_session
from medcbm.errors import ConfigError, MedcbmError

logger = logging.getLogger(__name__)

# a multi-node cluster needs storage every node can write (NFS folder or s3://...); default: a temporary folder
STORAGE_ENV = "MEDCBM_RAY_STORAGE"
MODEL, HEAD, HISTORY = "backbone.safetensors", "concept_head.safetensors", "history.json"


class _WorkerShard(Shard):
    """Rank ``rank`` of ``world`` Ray Train workers: sums gradients and gathers scores with torch.distributed."""

    def __init__(self, rank: int, world: int, dev: torch.device):
        self.rank, self.world, self.dev = rank, world, dev

    def sum_grads(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        # a worker without rows this step has no gradients: it contributes zeros
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(self.dev)])
        dist.all_reduce(flat)  # SUM: every worker receives the same buffer, so the replicas stay identical
        i = 0
        for p in params:
            p.grad = flat[i:i + p.numel()].view_as(p)
            i += p.numel()
        return flat[-1]

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        import torch.distributed as dist

        m = -(-n // self.world)  # all_gather needs equal sizes: pad every part to the largest
        buf = torch.zeros(m, part.shape[1], device=self.dev)
        buf[:len(part)] = part.to(self.dev)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        out = torch.empty(n, part.shape[1])
        for r, p in enumerate(parts):
            out[r::self.world] = p[:len(range(r, n, self.world))].cpu()
        return out


def check_resources(ray, engine: EngineConfig) -> None:
    """Refuse, in one line, a worker set the cluster cannot hold: Ray Train would wait for it forever."""
    have = ray.cluster_resources()
    for kind, per, flag in (("CPU", engine.cpus_per_worker, "--cpus-per-worker"),
                            ("GPU", engine.gpus_per_worker, "--gpus-per-worker")):
        need = engine.workers * per
        if need > have.get(kind, 0) + 1e-9:
            raise ConfigError(f"--workers {engine.workers} x {flag} {per:g} needs {need:g} {kind}s but the Ray cluster "
                              f"has {have.get(kind, 0):g}; Ray Train would wait for them forever: lower --workers")


@contextlib.contextmanager
def ray_epochs(engine: EngineConfig) -> Iterator[Callable[[LoopState, BackboneSpec], LoopResult]]:
    """Open the cluster session, check it can hold the workers, and yield :func:`train_on_ray` bound to it.

    Raises:
        ConfigError: the cluster has fewer CPUs/GPUs than the workers need.
        MedcbmError: Ray Train is not installed.
    """
    with ray_session(engine) as ray:
        try:
            import ray.train.torch  # noqa: F401 - Ray Train and its torch support, not only Ray Data
        except ImportError:
            raise MedcbmError(f"--engine ray fine-tuning needs Ray Train, which is not installed; {RAY_HINT}") from None
        check_resources(ray, engine)
        yield functools.partial(train_on_ray, engine=engine)


def train_on_ray(state: LoopState, spec: BackboneSpec, *, engine: EngineConfig) -> LoopResult:
    """Run :func:`train_epochs` on ``engine.workers`` Ray Train workers (inside :func:`ray_epochs`); returns
    rank 0's result.

    Raises:
        MedcbmError: a worker failed.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    s = state
    payload = ray.put({
        "maps": s.cache.maps, "pools": s.cache.pools, "Y": s.Y, "pw": s.pw, "labels": s.labels, "tr": s.tr,
        "se": s.se, "model": {k: v.cpu() for k, v in s.net.model.state_dict().items()},
        "head": {k: v.cpu() for k, v in s.head.state_dict().items()}})
    loop_config = {"payload": payload, "config": s.config.model_dump(mode="json"), "arch": spec.model,
                   "pooling": spec.pooling, "lp_select": s.lp_select, "threads": max(1, int(engine.cpus_per_worker)),
                   "gpu": engine.gpus_per_worker > 0}
    resources = {"CPU": engine.cpus_per_worker, **({"GPU": engine.gpus_per_worker} if engine.gpus_per_worker else {})}
    storage = os.environ.get(STORAGE_ENV)
    own = storage is None
    storage = storage or tempfile.mkdtemp(prefix="medcbm-finetune-ray-")
    try:
        trainer = TorchTrainer(
            _worker_loop, train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=engine.workers, use_gpu=loop_config["gpu"],
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(storage_path=storage, name=f"finetune-{uuid.uuid4().hex[:8]}"))
        try:
            result = trainer.fit()
        except getattr(ray.train, "TrainingFailedError", RuntimeError) as exc:  # Train v2's name (Ray >= 2.43)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MedcbmError(f"fine-tuning on Ray Train failed: {first}") from None
        return _read_checkpoint(result.checkpoint)
    finally:
        if own:
            shutil.rmtree(storage, ignore_errors=True)


def _read_checkpoint(checkpoint) -> LoopResult:
    """Rank 0's history and best states from its checkpoint folder (safetensors and JSON, no pickle)."""
    from safetensors.torch import load_file

    with checkpoint.as_directory() as d:
        d = Path(d)
        meta = json.loads((d / HISTORY).read_text())
        return LoopResult(meta["history"], meta["best_epoch"], load_file(str(d / MODEL)), load_file(str(d / HEAD)))


def _worker_loop(cfg: dict) -> None:
    """One Ray Train worker: rebuild the split net and head from the driver's states, train its shard."""
    import ray
    import ray.train
    import ray.train.torch
    import timm
    from safetensors.torch import save_file

    from medcbm.backbones.concept_finetune import FinetuneConfig

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])  # Ray sets OMP_NUM_THREADS=1 in workers
    dev = ray.train.torch.get_device() if cfg["gpu"] else torch.device("cpu")
    data = ray.get(cfg["payload"])
    config = FinetuneConfig.model_validate(cfg["config"])
    # the architecture only: the weights come from the driver, so workers need no weight files
    model = timm.create_model(cfg["arch"], pretrained=False, num_classes=0)
    model.load_state_dict(data["model"], strict=True)
    net = SplitNet(model.to(dev).eval(), config.train_from_block, cfg["pooling"])  # eval: BatchNorm stays frozen
    h = data["head"]
    head = ConceptHead(h["mean"], h["std"], h["linear.weight"].shape[0])
    head.load_state_dict(h)
    state = LoopState(net, head.to(dev), Cache(data["maps"], data["pools"]), data["Y"], data["pw"],
                      np.asarray(data["labels"]), np.asarray(data["tr"]), np.asarray(data["se"]), cfg["lp_select"],
                      config, dev)
    out = train_epochs(state, _WorkerShard(rank, world, dev))
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:  # every replica holds the same states; one writes them
            save_file({k: v.detach().cpu().contiguous() for k, v in out.model_state.items()}, os.path.join(d, MODEL))
            save_file({k: v.detach().cpu().contiguous() for k, v in out.head_state.items()}, os.path.join(d, HEAD))
            Path(d, HISTORY).write_text(json.dumps({"history": out.history, "best_epoch": out.best_epoch}))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"best_epoch": out.best_epoch}, checkpoint=checkpoint)
