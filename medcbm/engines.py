"""Where heavy work runs: in this process (``local``, the default) or on a Ray cluster (``ray``).

One :class:`EngineConfig` describes the choice; :func:`use_engine` makes it the default for everything called
inside it (feature extraction in training, evaluation, prediction, audit; knowledge ingestion), so a command
needs one option set, not a parameter threaded through every layer. ``local`` never imports Ray.

A ``torchrun`` engine for HPC clusters without Ray would be one more ``Literal`` value and one more runner
behind the same interface (see :mod:`medcbm.backbones.engines`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medcbm.errors import ConfigError, MedcbmError

logger = logging.getLogger(__name__)

RAY_HINT = "install the Ray extra: pip install 'medcbm[ray]'"


class EngineConfig(BaseModel):
    """How to run extraction/ingestion.

    Attributes:
        engine: ``local`` (this process, DataLoader workers) or ``ray`` (a Ray cluster).
        address: Ray cluster: ``None`` starts a private local cluster, ``auto`` joins the running one
            (``ray start --head`` or ``RAY_ADDRESS``), ``HOST:PORT`` joins that one.
        workers: model replicas (Ray actors); each loads the model once.
        cpus_per_worker: CPUs reserved per actor; also its torch thread count (Ray sets ``OMP_NUM_THREADS=1``).
        gpus_per_worker: GPUs reserved per actor (0: CPU inference).
        batch_size: images (or texts) per model call and per cache shard written by a worker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "auto" or v.startswith("ray://"):
            return v
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {v!r} is not auto, HOST:PORT or ray://HOST:PORT")
        return v


_CURRENT: ContextVar[EngineConfig] = ContextVar("medcbm_engine", default=EngineConfig())


def current_engine() -> EngineConfig:
    """The engine set by the innermost :func:`use_engine` (``local`` outside any)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_engine(config: EngineConfig) -> Iterator[EngineConfig]:
    """Make ``config`` the default engine inside the ``with`` block."""
    token = _CURRENT.set(config)
    try:
        yield config
    finally:
        _CURRENT.reset(token)


def import_ray():
    """``ray`` or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError:
        raise MedcbmError(f"--engine ray needs Ray Data, which is not installed; {RAY_HINT}") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds with a clear line, instead of ray.init's long retry loop, when HOST:PORT is down."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at --address {address} ({exc.strerror or exc}); start it "
                          "with `ray start --head` on that host, or use --address auto / leave it out") from None


# set by engine_scope: clusters started inside it stay up until the scope ends (one start per command)
_SCOPE: ContextVar[list | None] = ContextVar("medcbm_ray_scope", default=None)


@contextlib.contextmanager
def ray_session(config: EngineConfig) -> Iterator[object]:
    """Connect to (or start) the cluster ``config`` names, on first use; shut down only what this call started
    (or, inside :func:`engine_scope`, what the scope started, when it ends)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if config.address is None:
        kwargs["num_cpus"] = max(1, int(round(config.workers * config.cpus_per_worker)))
        if config.gpus_per_worker:
            kwargs["num_gpus"] = int(round(config.workers * config.gpus_per_worker + 0.499))
    else:
        if config.address != "auto":
            _check_reachable(config.address)
        kwargs["address"] = config.address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to a Ray cluster at --address {config.address}: {exc}") from None
    scope = _SCOPE.get()
    if scope is not None:
        scope.append(ray)
        yield ray
        return
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet_ray_data(ray) -> None:
    """Ray Data without its own progress bars and INFO logs (medcbm draws one bar on the driver)."""
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


def ray_dataset(ray, rows: list[dict], batch: int, workers: int):
    """``rows`` as a Ray dataset with enough blocks to keep every worker busy, none smaller than a batch."""
    blocks = max(1, min(len(rows), max(2 * workers, -(-len(rows) // batch))))
    return ray.data.from_items(rows, override_num_blocks=blocks)


def hash_files_batch(batch: dict) -> dict:
    """Ray Data task: SHA-256 of each ``path`` (``""`` when missing). Lives here, in a module that imports no
    torch, so hashing workers start in a second rather than importing the model stack."""
    import numpy as np

    from medcbm._io import sha256_file_or_none

    hashes = [sha256_file_or_none(str(p)) or "" for p in batch["path"]]
    return {"pos": batch["pos"], "sha256": np.array(hashes, dtype=object)}


@contextlib.contextmanager
def engine_scope(config: EngineConfig) -> Iterator[EngineConfig]:
    """:func:`use_engine` for a whole command: a cluster it starts (only if some step needs one) stays up for
    every later step and is shut down at the end, so a command that extracts several times connects once and a
    rerun with nothing to do never starts Ray."""
    token = _SCOPE.set([])
    try:
        with use_engine(config):
            yield config
    finally:
        started = _SCOPE.get() or []
        _SCOPE.reset(token)
        for ray in started:
            ray.shutdown()
