"""``medcbm concepts ...``: generate, show and inspect concept banks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Concept banks: generation with provenance, inspection, class–concept priors.",
                  no_args_is_help=True)


@app.command()
def generate(
    classes: list[str] = typer.Option(..., "--classes", help="Class specs 'key=Name|synonym', repeatable or comma-separated."),
    modality: str = typer.Option(..., "--modality", help="dermoscopy or chest_xray (selects lexicon, filter, grounding)."),
    store: Path = typer.Option(Path("runs/knowledge"), "--store", help="Knowledge store folder (built from knowledge/ if empty)."),
    out: Path = typer.Option(..., "--out", help="Bank JSON to write."),
    backend: str = typer.Option("extractive", "--backend", help="extractive (offline default) or openai."),
    base_url: str = typer.Option("", "--base-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1."),
    model: str = typer.Option("", "--model", help="Model name for the openai backend."),
    target_size: int = typer.Option(40, "--target-size", help="Stop when the bank has this many concepts."),
    k: int = typer.Option(8, "-k", help="Passages retrieved per query."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per LLM request."),
    name: str = typer.Option("", "--name", help="Bank name recorded in the file."),
    all_modalities: bool = typer.Option(False, "--all-modalities", help="Do not restrict retrieval to passages of --modality."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Backend response cache (default: <out>.cache/)."),
) -> None:
    """Run the KnoBo generation loop and write a bank with provenance, priors and grounding."""
    from medcbm.concepts.backends import get_backend
    from medcbm.concepts.generate import build_bank, parse_classes
    from medcbm.concepts.schema import GenerationConfig, save_bank
    from medcbm.knowledge import build_default_store, open_store

    cls = parse_classes(classes)
    kb = open_store(store)
    if len(kb) == 0:
        kb = build_default_store(store)
    cache = cache_dir or out.with_suffix(".cache")
    opts = {"cache_dir": cache}
    if backend == "openai":
        opts.update(base_url=base_url or "http://127.0.0.1:8000/v1", model=model or "default", timeout=timeout)
    be = get_backend(backend, **opts)
    cfg = GenerationConfig(classes=cls, modality=modality, target_size=target_size, k=k, backend=backend,
                           model=be.model, base_url=base_url, store=str(store), corpus_hash=kb.corpus_hash,
                           embedder=kb.embedder_name or "", where={} if all_modalities else {"modality": modality})
    state = out.with_suffix(".state.json")
    bank = build_bank(kb, cfg, backend=be, state_path=state, name=name)
    save_bank(bank, out)
    state.unlink(missing_ok=True)  # the run is complete; the state file only serves interrupted runs
    Console().print(f"wrote {out}: {len(bank.concepts)} concepts, {len(bank.rejected)} rejected candidates "
                    f"(stopped: {bank.stats.get('stopped')})")


@app.command()
def show(bank_path: Path = typer.Argument(..., help="Bank JSON."),
         rejected: bool = typer.Option(False, "--rejected", help="Also list rejected candidates.")) -> None:
    """Print the concepts with their sources as a table."""
    from medcbm.concepts.schema import load_bank

    bank = load_bank(bank_path)
    con = Console()
    t = Table(title=f"{bank.name or bank_path.name}: {len(bank.concepts)} {bank.modality} concepts", show_lines=True)
    for col in ("id", "question", "source (doc: sentence)", "grounding", "generator"):
        t.add_column(col, overflow="fold")
    for c in bank.concepts:
        g = c.grounding.source or c.grounding.status
        t.add_row(c.id, c.question, f"[bold]{c.provenance.doc_id}[/bold]: {c.provenance.reference}", g,
                  f"{c.generator.backend}/{c.generator.model}")
    con.print(t)
    if rejected:
        r = Table(title=f"{len(bank.rejected)} rejected candidates")
        for col in ("name", "reason", "detail", "query"):
            r.add_column(col, overflow="fold")
        for x in bank.rejected:
            r.add_row(x.name, x.reason, x.detail, x.query)
        con.print(r)


@app.command()
def prior(bank_path: Path = typer.Argument(..., help="Bank JSON."),
          evidence: bool = typer.Option(False, "--evidence", help="Print the evidence sentences too.")) -> None:
    """Print the class–concept prior (+1 / −1 / 0) as a concepts × classes table."""
    from medcbm.concepts.schema import load_bank

    bank = load_bank(bank_path)
    mat = bank.prior_matrix()
    t = Table(title=f"class–concept prior ({bank_path.name})")
    t.add_column("concept")
    for c in bank.classes:
        t.add_column(c.key, justify="center")
    sym = {1: "[green]+1[/green]", -1: "[red]-1[/red]", 0: "[dim]0[/dim]"}
    for j, c in enumerate(bank.concepts):
        t.add_row(c.id, *[sym[mat[i][j]] for i in range(len(bank.classes))])
    con = Console()
    con.print(t)
    if evidence:
        for c in bank.concepts:
            for a in c.classes:
                for e in a.evidence:
                    con.print(f"{c.id} / {a.class_key} ({e.polarity:+d}) [{e.doc_id}] {e.sentence}", highlight=False)


@app.command()
def align(bank_path: Path = typer.Argument(..., help="Bank JSON."),
          out: Optional[Path] = typer.Option(None, "--out", help="Bank JSON to write (default: rewrite BANK_PATH)."),
          threshold: Optional[float] = typer.Option(None, "--threshold",
                                                    help="Minimum cosine similarity for an embedding match (default 0.75).")) -> None:
    """Re-ground a bank's concepts with the current mapping files (knowledge/mappings/); nothing else changes."""
    from collections import Counter

    from medcbm.concepts.alignment import DEFAULT_THRESHOLD, align_bank
    from medcbm.concepts.schema import load_bank, save_bank

    bank = align_bank(load_bank(bank_path), threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
    save_bank(bank, out or bank_path)
    per_vocab = Counter(s.split(":", 1)[0] for c in bank.concepts for s in c.grounding.sources)
    Console().print(f"wrote {out or bank_path}: {sum(bool(c.grounding.sources) for c in bank.concepts)} of "
                    f"{len(bank.concepts)} concepts grounded to annotations; per vocabulary {dict(per_vocab)}",
                    markup=False)


@app.command()
def quality(bank_path: Path = typer.Argument(..., help="Bank JSON.")) -> None:
    """Print size, provenance completeness, duplicate rate and grounding coverage as JSON."""
    import json

    from medcbm.concepts.quality import bank_quality
    from medcbm.concepts.schema import load_bank

    typer.echo(json.dumps(bank_quality(load_bank(bank_path)), indent=2))


@app.command()
def cite(bank_path: Path = typer.Argument(..., help="Bank JSON."),
         out: Optional[Path] = typer.Option(None, "--out", help="Bank JSON to write (default: rewrite BANK_PATH)."),
         corpus: Optional[list[Path]] = typer.Option(None, "--corpus",
                                                      help="Tagged corpus JSONL (repeatable; default: knowledge/corpus/*.jsonl).")) -> None:
    """Give every vocabulary concept a bank entry and stance-labelled citations from the tagged corpus."""
    from medcbm.concepts.citations import cite_bank, corpus_documents, corpus_hash
    from medcbm.concepts.schema import load_bank, save_bank

    bank = load_bank(bank_path)
    docs = [d for d in corpus_documents(corpus) if d.modality in ("", bank.modality)]
    cited = cite_bank(bank, docs, corpus_sha=corpus_hash(corpus))  # provenance names the corpus actually read
    save_bank(cited, out or bank_path)
    seeded = [c.id for c in cited.concepts if c.generator.backend == "vocabulary" and c.id not in {x.id for x in bank.concepts}]
    Console().print(f"wrote {out or bank_path}: {len(cited.concepts)} concepts ({len(seeded)} new from the vocabulary), "
                    f"{sum(len(c.citations) for c in cited.concepts)} citations", markup=False)
    _print_coverage(cited)


@app.command()
def coverage(bank_path: Path = typer.Argument(..., help="Bank JSON."),
             min_citations: int = typer.Option(2, "--min-citations", help="Citations a concept needs to count as covered.")) -> None:
    """Which vocabulary concepts (the ones models use) have bank entries and cited passages; exits 1 if any is uncovered."""
    from medcbm.concepts.schema import load_bank

    if _print_coverage(load_bank(bank_path), min_citations):
        raise typer.Exit(1)


def _print_coverage(bank, min_citations: int = 2) -> list[str]:
    """Print the coverage table of ``bank``; return the uncovered target sources."""
    from medcbm.concepts.citations import target_coverage

    rows = target_coverage(bank)
    t = Table(title=f"{bank.name or 'bank'}: vocabulary coverage")
    for col in ("target", "bank entries", "cited passages", "stances"):
        t.add_column(col, overflow="fold")
    uncovered = []
    for src, entries, cites in rows:
        if len({c.doc_id for c in cites}) < min_citations:
            uncovered.append(src)
        stances = ", ".join(sorted({c.stance for c in cites if c.stance}))
        t.add_row(src, ", ".join(entries) or "[red]none[/red]", str(len({c.doc_id for c in cites})), stances)
    con = Console()
    con.print(t)
    con.print(f"{len(rows) - len(uncovered)} of {len(rows)} concepts have >= {min_citations} cited passages"
              + (f"; uncovered: {', '.join(uncovered)}" if uncovered else ""), markup=False)
    return uncovered
