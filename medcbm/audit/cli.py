"""``medcbm audit`` (explain a saved model's predictions on a manifest) and ``medcbm acceptance`` (should it be
used at a site?): write the report files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from medcbm._cli_options import engine_options

console = Console()


def register(app: typer.Typer) -> None:
    """Attach ``audit`` and ``acceptance`` to the root app."""

    @app.command("audit")
    @engine_options
    def audit_cmd(
        model: Path = typer.Option(..., "--model", help="saved model folder (model.json + model.safetensors)"),
        manifest: Path = typer.Option(..., "--manifest", help="manifest CSV/Parquet of the images to audit"),
        out: Path = typer.Option(..., "--out", help="output folder (must not exist unless --force)"),
        cases: Optional[str] = typer.Option(None, "--cases", help="comma-separated case ids to explain "
                                            "(default: the first --max-cases rows)"),
        max_cases: int = typer.Option(100, "--max-cases", help="cases explained when --cases is not given"),
        force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
        salt: Optional[str] = typer.Option(None, "--salt", envvar="MEDCBM_AUDIT_SALT",
                                           help="secret salt for case-id hashes (default: random per report)"),
        raw_ids: bool = typer.Option(False, "--raw-ids", help="show raw case ids instead of salted hashes"),
        raw_sites: bool = typer.Option(False, "--raw-sites", help="show site names instead of 'site A', 'site B'"),
        no_thumbnails: bool = typer.Option(False, "--no-thumbnails", help="no image thumbnails at all"),
        dicom_thumbnails: bool = typer.Option(False, "--dicom-thumbnails", help="also show DICOM images (off by default)"),
        occlusion_cases: int = typer.Option(10, "--occlusion-cases", help="cases that get occlusion maps of their "
                                            "top concepts (17 backbone passes each; 0: none)"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
        id_map: Optional[Path] = typer.Option(None, "--id-map", help="also write salted case id -> manifest row and "
                                              "id to this CSV (keep it private; not allowed inside --out)"),
    ) -> None:
        """Per-case concept explanations, interventions, calibration and site drift: HTML + JSON + model card."""
        from medcbm.audit.report import write_audit_report

        ids = [c.strip() for c in cases.split(",") if c.strip()] if cases else None
        files = write_audit_report(model, manifest, out, cases=ids, force=force, max_cases=max_cases, salt=salt,
                                   raw_ids=raw_ids, raw_sites=raw_sites, thumbnails=not no_thumbnails,
                                   dicom_thumbnails=dicom_thumbnails, occlusion_cases=occlusion_cases,
                                   cache_dir=cache_dir, id_map=id_map)
        for kind, path in files.items():
            console.print(f"{kind:10s} {path}")


    @app.command("acceptance")
    @engine_options
    def acceptance_cmd(
        model: Path = typer.Option(..., "--model", help="model or adaptation folder to assess"),
        manifest: Path = typer.Option(..., "--manifest", help="labelled images of the site, not used to adapt "
                                      "(the query of medcbm split-site)"),
        out: Path = typer.Option(..., "--out", help="output folder (must not exist unless --force)"),
        site_name: str = typer.Option("the new site", "--site-name", help="how the report names the site "
                                      "(printed as given: leave the default to keep the institution out)"),
        baseline: Optional[Path] = typer.Option(None, "--baseline", help="compare with this model (default for an "
                                                "adaptation: its base model)"),
        ready_floor: float = typer.Option(0.75, "--ready-floor", help="lowest balanced accuracy called ready "
                                          "(the use's clinical requirement)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Site acceptance report: performance with intervals, calibration, concept drift, the adaptation's
        effect and a verdict (ready / adapt and re-check / do not deploy): HTML + JSON."""
        from medcbm.audit.acceptance import AcceptanceCriteria
        from medcbm.audit.acceptance_html import HEADLINE, write_acceptance_report
        from medcbm.data.manifest import load_manifest

        files = write_acceptance_report(model, load_manifest(manifest).check_files(), out, force=force,
                                        site=site_name, baseline_dir=baseline, cache_dir=cache_dir,
                                        criteria=AcceptanceCriteria(ready_floor=ready_floor))
        import json

        doc = json.loads(files["json"].read_text())
        console.print(f"{HEADLINE[doc['verdict']]}: " + "; ".join(doc["reasons"]))
        for kind, path in files.items():
            console.print(f"{kind:10s} {path}")


app = typer.Typer(help="Audit a model's predictions by clinical concept.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
register(app)
