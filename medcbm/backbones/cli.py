"""``medcbm features ...``: extract backbone features into the cache (locally or on a Ray cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from medcbm._cli_options import engine_options

app = typer.Typer(help="Extract and cache image features.", no_args_is_help=True)


@app.command("extract")
@engine_options
def extract_cmd(
    manifest: Path = typer.Argument(..., help="manifest (.csv or .parquet) of the images to encode"),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="a name from `medcbm backbones`"),
    cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir", help="feature cache (shared by "
                                   "every command; on a cluster, a folder all workers can write)"),
    batch_size: int = typer.Option(32, "--batch-size", help="images per forward pass (local engine)"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="record unreadable images in "
                                  "<manifest>.skipped.json instead of stopping"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the run's statistics here"),
) -> None:
    """Fill the feature cache for a manifest; a rerun extracts only new or changed images."""
    from medcbm._io import atomic_write_json
    from medcbm.backbones.features import extract_features
    from medcbm.data.manifest import SkipLog, load_manifest

    skips = SkipLog() if skip_bad else None
    feats = extract_features(load_manifest(manifest), backbone, cache_dir=cache_dir, batch_size=batch_size,
                             skips=skips)
    if skips is not None and len(skips):
        skips.write(manifest.with_suffix(".skipped.json"))
        typer.echo(f"{len(skips)} images skipped, listed in {manifest.with_suffix('.skipped.json')}")
    s = feats.stats
    typer.echo(f"{s['n']} images: {s['extracted']} extracted, {s['from_cache']} from the cache, {s['failed']} "
               f"failed, in {s['seconds']:.1f} s ({s['engine']})")
    if json_out is not None:
        atomic_write_json(json_out, s)
    else:
        typer.echo(json.dumps(s))
