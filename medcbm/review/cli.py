"""``medcbm review MODEL MANIFEST``: start the local review app (or, with ``--export``, write the reviewed cases)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Optional

import typer

logger = logging.getLogger(__name__)
LOCAL = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    """Attach ``review`` to the root app."""

    @app.command("review")
    def review_cmd(
        model: Path = typer.Argument(..., help="model or adaptation folder"),
        manifest: Path = typer.Argument(..., help="manifest CSV/Parquet of the cases to review (labels not needed)"),
        store: Optional[Path] = typer.Option(None, "--store", help="corrections file (SQLite; default "
                                             "runs/review/<model folder>-<fingerprint>.sqlite; created when "
                                             "missing)"),
        reviewer: str = typer.Option("reviewer", "--reviewer", help="name the corrections are recorded under "
                                     "(the page can change it)"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (anything but this computer needs "
                                 "--allow-remote)"),
        port: int = typer.Option(8765, "--port", help="port (0: any free one)"),
        allow_remote: bool = typer.Option(False, "--allow-remote", help="allow binding to a non-local address "
                                          "(anyone with the link on that network can then review)"),
        raw_ids: bool = typer.Option(False, "--raw-ids", help="show manifest ids instead of salted hashes"),
        id_map: Optional[Path] = typer.Option(None, "--id-map", help="also write salted case id -> manifest row and "
                                              "id to this CSV (keep it private)"),
        export: Optional[Path] = typer.Option(None, "--export", help="write the reviewed cases as a manifest "
                                              "(for medcbm adapt --corrections) and exit"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Review predictions by concept in the browser: answer concepts, watch the prediction follow, export."""
        from medcbm.data.manifest import load_manifest
        from medcbm.errors import ConfigError
        from medcbm.review.session import open_review

        if host not in LOCAL and not allow_remote:
            raise ConfigError(f"--host {host} would let other computers reach the review; pass --allow-remote "
                              "as well if that is intended")
        session = open_review(model, load_manifest(manifest).check_files(), store=store, cache_dir=cache_dir,
                              raw_ids=raw_ids)
        if id_map is not None:
            from medcbm.audit.privacy import CaseIds, write_id_map

            write_id_map(id_map, CaseIds(session.store.salt, raw=raw_ids), session.manifest.frame["id"].tolist())
            typer.echo(f"wrote the case id map to {id_map}")
        if export is not None:
            from medcbm.review.export import export_corrections

            path, n = export_corrections(session, export)
            typer.echo(f"wrote {n} reviewed case(s) to {path}")
            return
        serve(session, host=host, port=port, reviewer=reviewer)


def serve(session, *, host: str, port: int, reviewer: str) -> None:
    """Run the app until interrupted, printing the one URL (with its token) to open."""
    import socket

    import uvicorn

    from medcbm.review.app import create_app

    if host not in LOCAL:
        logger.warning("the review is bound to %s: anyone who can reach it and has the link can see the cases", host)
    token = secrets.token_urlsafe(24)
    from medcbm.errors import ConfigError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections queue from now on, before uvicorn starts accepting: the URL works at once
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port, or --port 0 "
                          "for any free one") from None
    shown = "127.0.0.1" if host in LOCAL else host
    hosts = ("127.0.0.1", "localhost", "::1") if host in LOCAL else (host, "127.0.0.1", "localhost")
    app = create_app(session, token=token, reviewer=reviewer, allowed_hosts=hosts)
    typer.echo(f"review {len(session.cases)} cases at http://{shown}:{sock.getsockname()[1]}/?token={token}")
    typer.echo(f"corrections are kept in {session.store.path} (stop with Ctrl-C; nothing is lost)")
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def register_bench(bench_app: typer.Typer) -> None:
    """Attach ``bench review-app`` (the review app's response times)."""

    @bench_app.command("review-app")
    def bench_review_app_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="model or adaptation folder"),
        manifest: Path = typer.Option(..., "--manifest", help="images to review (a seeded sample of --cases rows)"),
        cases: int = typer.Option(1000, "--cases", help="cases in the review"),
        answers: int = typer.Option(200, "--answers", help="concept answers timed"),
        json_path: Path = typer.Option(Path("runs/bench/review_app.json"), "--json"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
        no_browser: bool = typer.Option(False, "--no-browser", help="skip the headless-Chromium timing"),
    ) -> None:
        """Worklist, case page and concept-answer times of the review app over HTTP (and in Chromium)."""
        from medcbm._io import atomic_write_json, atomic_write_text
        from medcbm.data.manifest import load_manifest
        from medcbm.review.bench import markdown, run_review_app_benchmark

        res = run_review_app_benchmark(model, load_manifest(manifest).check_files(), cases=cases, answers=answers,
                                       cache_dir=cache_dir, browser=not no_browser)
        atomic_write_json(json_path, res)
        atomic_write_text(json_path.with_suffix(".md"), markdown(res))
        typer.echo(markdown(res))
        typer.echo(f"wrote {json_path} and {json_path.with_suffix('.md')}")
