"""The ``medcbm`` command-line app (typer). Library code lives in the subpackages; this file only wires commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from medcbm._cli_options import engine_options
from medcbm.errors import MedcbmError

app = typer.Typer(
    name="medcbm",
    help="Knowledge-grounded concept bottleneck models for medical imaging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that write JSON results.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# --- sub-apps owned by subpackages (each registers its own commands) -----------------------------
# (keep this block sorted; one line per subpackage)
from medcbm.audit.cli import register as register_audit  # noqa: E402
from medcbm.backbones.cli import app as features_app  # noqa: E402
from medcbm.backbones.finetune_cli import register as register_finetune  # noqa: E402
from medcbm.benchmarks.cli import register_bench as register_model_bench  # noqa: E402
from medcbm.concepts.cli import app as concepts_app  # noqa: E402
from medcbm.data.cli import app as data_app  # noqa: E402
from medcbm.knowledge.cli import app as knowledge_app  # noqa: E402
from medcbm.knowledge.cli import register_bench as register_knowledge_bench  # noqa: E402
from medcbm.review.cli import register as register_review  # noqa: E402
from medcbm.review.cli import register_bench as register_review_bench  # noqa: E402
from medcbm.workflows.cli import register as register_model_commands  # noqa: E402
from medcbm.workflows.cli import register_adapt as register_adapt_commands  # noqa: E402

app.add_typer(concepts_app, name="concepts")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(knowledge_app, name="knowledge")
register_model_bench(bench_app)
register_audit(app)
register_finetune(app)
register_model_commands(app)
register_adapt_commands(app)
register_knowledge_bench(bench_app)
register_review(app)
register_review_bench(bench_app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
@engine_options
def quickstart(
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="datasets folder (default: $MEDCBM_DATA, then ../shared/data)"),
    run_dir: Path = typer.Option(Path("runs/quickstart"), "--run-dir", help="where the models, manifests and report go"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="feature cache (default: RUN_DIR/features)"),
    k: int = typer.Option(4, "--k", help="labelled new-site images per class for adaptation"),
    cases: int = typer.Option(6, "--cases", help="out-of-domain cases explained in the audit report"),
) -> None:
    """Train a CBM and a black box, adapt the CBM to a new site, audit it; print what was found and written.

    Finished stages are reused: an interrupted run resumes, a finished one only re-prints.
    """
    from medcbm.quickstart import render_summary, run_quickstart

    res = run_quickstart(data_root=data_root, run_dir=run_dir, cache_dir=cache_dir, k=k, n_cases=cases)
    typer.echo(render_summary(res))


@app.command("backbones")
def backbones_cmd() -> None:
    """List registered backbones."""
    from medcbm.backbones import get_backbone_spec, list_backbones

    for name in list_backbones():
        desc = get_backbone_spec(name).description if not name.endswith("...") else "dynamic name"
        Console().print(f"{name:28s} {desc}")


@app.command("methods")
def methods_cmd(dataset: Optional[str] = typer.Option(None, "--dataset", help="only methods that apply to this dataset"),
                pattern: Optional[str] = typer.Option(None, "--filter", help="glob on the name, e.g. 'cbm_src_*'")) -> None:
    """List benchmark methods (the CBM recipes and ablations come from configs/methods/*.yaml)."""
    from medcbm.methods import METHODS, list_methods

    for name in list_methods(dataset, pattern):
        typer.echo(f"{name:28s} {METHODS.meta(name).get('description', '')}")


@app.command("protocols")
def protocols_cmd() -> None:
    """List shipped benchmark protocols (configs/protocols)."""
    from medcbm.protocols import list_protocols, load_protocol

    for name in list_protocols():
        Console().print(f"{name:32s} {load_protocol(name).description}")


def main() -> None:
    """Console-script entry point: user errors print one clear line and exit 2, never a traceback."""
    try:
        app()
    except MedcbmError as exc:
        # escape: messages contain "[file ..., manifest row N]", which rich would eat as markup
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow] (completed work is kept; rerun to resume)")
        sys.exit(130)


if __name__ == "__main__":
    main()
