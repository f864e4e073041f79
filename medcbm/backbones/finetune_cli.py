"""``medcbm finetune``: concept-supervised fine-tuning of a backbone, registered as ``finetuned:<name>``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from medcbm._cli_options import engine_options


def register(app: typer.Typer) -> None:
    """Add the ``finetune`` command to the top-level app."""

    @app.command("finetune")
    @engine_options
    def finetune_cmd(
        dataset: Optional[List[str]] = typer.Option(None, "--dataset", help="built-in concept-annotated dataset "
                                                    "(repeatable; default: ph2 and derm7pt)"),
        manifest: Optional[List[Path]] = typer.Option(None, "--manifest", help="a manifest with concept_<name> "
                                                      "columns (repeatable; a split column is honoured)"),
        base: str = typer.Option("efficientnet_lite0_lesion_cc", "--base", help="backbone to start from"),
        name: Optional[str] = typer.Option(None, "--name", help="artifact name (default: content-addressed)"),
        epochs: int = typer.Option(12, "--epochs", help="at most this many epochs (early stopping on select AUROC)"),
        train_from_block: int = typer.Option(5, "--train-from-block", help="first trained block (0 = all)"),
        views: int = typer.Option(3, "--views", help="decoded views per training image (1 = no augmentation)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
        seed: int = typer.Option(0, "--seed"),
        data_root: Optional[Path] = typer.Option(None, "--data-root", help="default: MEDCBM_DATA"),
        force: bool = typer.Option(False, "--force", help="train again even if the artifact exists"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="also write the run's record here"),
    ) -> None:
        """Fine-tune on concept labels; use the printed name wherever a backbone name goes.

        With --engine ray --workers N the epochs run data-parallel on N Ray Train workers (same weights as local).
        """
        from medcbm._io import atomic_write_json
        from medcbm.backbones.concept_finetune import FinetuneConfig
        from medcbm.backbones.finetuned import create_finetuned_backbone, read_record

        cfg = FinetuneConfig(base=base, epochs=epochs, train_from_block=train_from_block, views=views,
                             device=device, seed=seed)
        full = create_finetuned_backbone(datasets=tuple(dataset or ("ph2", "derm7pt")),
                                         manifests=tuple(str(m) for m in manifest or ()), config=cfg, name=name,
                                         data_root=data_root, force=force)
        record = read_record(full.partition(":")[2])
        for d, r in record["heldout"].items():
            typer.echo(f"{d}: held-out mean concept AUROC {r['mean_auroc_finetuned']} (frozen linear "
                       f"{r['mean_auroc_frozen_linear']}; {r['concepts_scored']} concepts, {r['images']} images)")
        workers = record.get("engine", {}).get("workers") if record.get("engine", {}).get("name") == "ray" else None
        typer.echo(f"best epoch {record['best_epoch']} of {record['epochs_run']}, {record['seconds']['total']} s on "
                   f"{record['device']}" + (f" ({workers} Ray Train workers)" if workers else ""))
        typer.echo(full)
        if json_out is not None:
            atomic_write_json(json_out, {k: v for k, v in record.items() if k != "trained_image_sha256"})
