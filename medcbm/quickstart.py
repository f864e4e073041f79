"""The main job: every stage of the current pipeline on the shared HAM10000, in one run directory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from medcbm._io import atomic_write_json
from medcbm.data.paths import resolve_data_root

logger = logging.getLogger(__name__)

PROTOCOL = "ham10000-site-confounded"


def run_quickstart(
    *,
    data_root: str | os.PathLike | None = None,
    run_dir: str | os.PathLike = "runs/quickstart",
    seeds: int = 5,
    methods: list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Import HAM10000, extract (cached) features, run every registered method on the confounded protocol.

    Writes into ``run_dir``: ``manifest.csv``, ``features/`` (cache), ``splits.json``, ``metrics.json``,
    ``metrics.md`` and ``quickstart.json`` (what ran, how long). ``cache_dir`` overrides where features
    are cached (default ``run_dir/features``), e.g. to share one cache between runs.

    Returns:
        The shift-benchmark results.
    """
    from medcbm.evaluation.methods import list_methods
    from medcbm.evaluation.shift import run_shift_benchmark

    root = resolve_data_root(data_root)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run_shift_benchmark(PROTOCOL, methods=methods or list_methods(), seeds=seeds, data_root=root,
                              cache_dir=Path(cache_dir) if cache_dir else run / "features", out_dir=run, progress=progress)
    atomic_write_json(run / "quickstart.json", {"data_root": str(root), "protocol": PROTOCOL, "seeds": res["seeds"],
                                                "methods": list(res["methods"]), "seconds": round(time.perf_counter() - t0, 1)})
    return res
