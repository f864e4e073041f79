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
# the probe baselines, the CBM and its previous (PH2-only) recipe; every ablation is in `make bench`
CORE_METHODS = ("linear_probe", "linear_probe_balanced", "cbm", "cbm_ph2_only")


def run_quickstart(
    *,
    data_root: str | os.PathLike | None = None,
    run_dir: str | os.PathLike = "runs/quickstart",
    seeds: int = 5,
    methods: list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Import HAM10000, extract (cached) features, run the core methods (``CORE_METHODS``) on the confounded protocol.

    Writes into ``run_dir``: ``manifest.csv``, ``features/`` (cache), ``splits.json``, ``metrics.json``,
    ``metrics.md``, ``predictions.parquet`` and ``quickstart.json`` (what ran, how long). ``cache_dir`` overrides where features
    are cached (default ``run_dir/features``), e.g. to share one cache between runs.

    Returns:
        The shift-benchmark results.
    """
    from medcbm.benchmarks.bench_shift import run_shift_benchmark

    root = resolve_data_root(data_root)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    knowledge = knowledge_stage(run / "knowledge")
    res = run_shift_benchmark(PROTOCOL, methods=methods or list(CORE_METHODS), seeds=seeds, data_root=root,
                              cache_dir=Path(cache_dir) if cache_dir else run / "features", out_dir=run, progress=progress,
                              predictions_path=run / "predictions.parquet")
    atomic_write_json(run / "quickstart.json", {"data_root": str(root), "protocol": PROTOCOL, "seeds": res["seeds"],
                                                "methods": list(res["methods"]), "knowledge": knowledge,
                                                "seconds": round(time.perf_counter() - t0, 1)})
    return res


def knowledge_stage(store_dir: Path) -> dict:
    """Build (or reuse) the knowledge store from ``knowledge/corpus`` and load the shipped concept banks."""
    from medcbm.concepts.schema import default_bank_path, load_bank
    from medcbm.knowledge import build_default_store

    store = build_default_store(store_dir)
    hits = store.search("blue-whitish veil melanoma", k=3, mode="hybrid")
    banks = {}
    for modality, task in (("dermoscopy", "benign_malignant"), ("dermoscopy", "ham10000"), ("chest_xray", "covid")):
        bank = load_bank(default_bank_path(modality, task))
        grounded = sum(c.grounding.status == "annotation" for c in bank.concepts)
        banks[f"{modality}/{task}"] = {"concepts": len(bank.concepts), "grounded": grounded}
    logger.info("knowledge store: %d chunks; banks: %s", len(store), banks)
    return {"store": str(store_dir), "chunks": len(store), "corpus_hash": store.corpus_hash,
            "example_query": {"query": "blue-whitish veil melanoma", "top_doc_ids": [h.doc_id for h in hits]},
            "banks": banks}
