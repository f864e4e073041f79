"""The ``medcbm`` command-line app (typer). Library code lives in the subpackages; this file only wires commands."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

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
from medcbm.concepts.cli import app as concepts_app  # noqa: E402
from medcbm.knowledge.cli import app as knowledge_app, register_bench as _knowledge_bench  # noqa: E402

app.add_typer(concepts_app, name="concepts")
app.add_typer(knowledge_app, name="knowledge"); _knowledge_bench(bench_app)  # noqa: E702


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main() -> None:
    """Console-script entry point: user errors print one clear line and exit 2, never a traceback."""
    try:
        app()
    except MedcbmError as exc:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow] (completed work is kept; rerun to resume)")
        sys.exit(130)


if __name__ == "__main__":
    main()
