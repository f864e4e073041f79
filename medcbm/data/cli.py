"""``medcbm data ...``: build and check manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(help="Build and validate image manifests.", no_args_is_help=True)
console = Console()


def _write(manifest, out: Path, skips, unit: str) -> None:
    """Save the manifest and, when rows were skipped, the skip list beside it."""
    from medcbm.data.manifest import manifest_summary, save_manifest

    save_manifest(manifest, out)
    if skips is not None and len(skips):
        skips.write(out.with_suffix(".skipped.json"))
        console.print(f"[yellow]{len(skips)} {unit} skipped[/yellow], listed in {out.with_suffix('.skipped.json')}")
    console.print(f"wrote {out}: {manifest_summary(manifest)}", markup=False)


@app.command("import")
def import_cmd(
    dataset: str = typer.Argument(..., help="ham10000, ph2, derm7pt or covid-cxr"),
    out: Path = typer.Option(..., "--out", "-o", help="manifest to write (.csv or .parquet)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="folder with the datasets (default: $MEDCBM_DATA or ../shared/data)"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="record bad rows in <out>.skipped.json instead of stopping"),
) -> None:
    """Write the manifest of a bundled dataset."""
    from medcbm.data.importers import import_dataset
    from medcbm.data.manifest import SkipLog

    skips = SkipLog() if skip_bad else None
    _write(import_dataset(dataset, data_root, skips=skips), out, skips, "rows")


@app.command("import-folder")
def import_folder_cmd(
    folder: Path = typer.Argument(..., help="folder of DICOM/JPEG/PNG files (labels from subfolders unless --labels-csv)"),
    out: Path = typer.Option(..., "--out", "-o"),
    labels_csv: Optional[Path] = typer.Option(None, "--labels-csv", help="CSV with an image column and a label column"),
    image_col: str = typer.Option("image", help="CSV column with file paths relative to FOLDER"),
    label_col: str = typer.Option("label", help="CSV column with labels"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="record unreadable files instead of stopping"),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers",
                                          help="store DICOM PatientID/InstitutionName as they are (default: keyed "
                                               "hashes; key in ~/.medcbm/pseudonym.key or $MEDCBM_PSEUDONYM_KEY)"),
) -> None:
    """Write a manifest for your own images (DICOM headers fill patient, sex, age, site, view; patient and
    institution pseudonymised)."""
    from medcbm.data.importers import import_folder
    from medcbm.data.manifest import SkipLog

    skips = SkipLog() if skip_bad else None
    _write(import_folder(folder, labels_csv=labels_csv, image_col=image_col, label_col=label_col, skips=skips,
                         keep_identifiers=keep_identifiers), out, skips, "files")


@app.command("validate")
def validate_cmd(
    manifest: Path = typer.Argument(..., help="manifest .csv/.parquet"),
    decode: bool = typer.Option(False, "--decode", help="also decode every image and mask (finds corrupt pixel data)"),
) -> None:
    """Check columns, ids, paths (none may leave the manifest's folder), and that every image and mask is a
    readable image file (headers; --decode: full decode)."""
    from medcbm.data.manifest import load_manifest, manifest_summary
    from medcbm.data.validate import validate_files

    m = load_manifest(manifest).check_files()
    counts = validate_files(m, decode=decode)
    files = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    detail = f"{manifest}: {manifest_summary(m)}; {'decoded' if decode else 'headers read'}: {files}"
    console.print(f"[green]ok[/green] {escape(detail)}")
