"""Option sets shared by several commands (typer has no option groups; a decorator adds them once)."""

import functools
import inspect
from typing import Callable, Optional

import typer

ENGINE_PARAMS = [
    ("engine", str, typer.Option("local", "--engine", help="where feature extraction, embedding and fine-tuning "
                                 "epochs run: local (this process) or ray (a Ray cluster; needs the ray extra of medcbm)")),
    ("address", Optional[str], typer.Option(None, "--address", help="Ray cluster: auto (the running one) or "
                                            "HOST:PORT (default: start a local one)")),
    ("workers", int, typer.Option(1, "--workers", help="Ray: model replicas (actors; data-parallel "
                                  "Ray Train workers when fine-tuning)")),
    ("cpus_per_worker", float, typer.Option(1.0, "--cpus-per-worker", help="Ray: CPUs (and torch threads) per worker")),
    ("gpus_per_worker", float, typer.Option(0.0, "--gpus-per-worker", help="Ray: GPUs per worker")),
]


def engine_options(fn: Callable) -> Callable:
    """Add ``--engine --address --workers --cpus-per-worker --gpus-per-worker`` to a command; its body runs
    inside :func:`medcbm.engines.engine_scope` (one cluster session for every extraction it does)."""
    names = [name for name, _, _ in ENGINE_PARAMS]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from medcbm._config import validate_model
        from medcbm.engines import EngineConfig, engine_scope

        cfg = validate_model(EngineConfig, {n: kwargs.pop(n) for n in names}, "engine options")
        with engine_scope(cfg):
            return fn(*args, **kwargs)

    sig = inspect.signature(fn)
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, t, d in ENGINE_PARAMS]
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), **{n: t for n, t, _ in ENGINE_PARAMS}}
    return wrapper
