"""Top-level ``medcbm train``, ``evaluate`` and ``predict`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medcbm._cli_options import engine_options

console = Console()


def register(app: typer.Typer) -> None:
    """Attach the model commands to the root app."""

    @app.command("train")
    @engine_options
    def train_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config YAML (see configs/cbm-*.yaml, "
                                              "configs/examples/); or give the data with the options below"),
        manifest: Optional[Path] = typer.Option(None, "--manifest", help="your labelled manifest (with --split)"),
        split: Optional[str] = typer.Option(None, "--split", help="column (its `split` column) or auto (patient-disjoint)"),
        train_manifest: Optional[Path] = typer.Option(None, "--train-manifest", help="separate training manifest"),
        val_manifest: Optional[Path] = typer.Option(None, "--val-manifest", help="separate validation manifest"),
        protocol: Optional[str] = typer.Option(None, "--protocol", help="a shipped protocol (its split for --seed)"),
        model_name: str = typer.Option("cbm", "--model", help="recipe: a method of configs/methods (cbm, cxr_cbm_reports)"),
        name: Optional[str] = typer.Option(None, "--name", help="model name (output folder runs/models/NAME); "
                                           "overrides the config's name"),
        force: bool = typer.Option(False, "--force", help="replace a model already saved under this name"),
        drop_unmapped: bool = typer.Option(False, "--drop-unmapped", help="leave out rows whose label the label map "
                                           "does not cover (counted in a warning) instead of stopping"),
        seed: int = typer.Option(0, "--seed"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Train a concept bottleneck model on a protocol or your own data and save it (safetensors + JSON)."""
        from medcbm._config import validate_model
        from medcbm.workflows.config import TrainConfig, load_train_config
        from medcbm.metrics import chance_sentence
        from medcbm.workflows.train import train_cbm

        if config is not None:
            cfg = load_train_config(config)
            if name is not None:
                cfg = validate_model(TrainConfig, {**cfg.model_dump(), "name": name, "out_dir": _named_out_dir(cfg)},
                                     "--name")
            if drop_unmapped:
                cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"drop_unmapped": True})})
        else:
            data = {"manifest": manifest and str(manifest), "split": split, "protocol": protocol, "seed": seed,
                    "train_manifest": train_manifest and str(train_manifest), "val_manifest": val_manifest and str(val_manifest),
                    "drop_unmapped": drop_unmapped or None}
            cfg = validate_model(TrainConfig, {"name": name or "model", "model": model_name,
                                          "data": {k: v for k, v in data.items() if v is not None}}, "train options")
        model, prov = train_cbm(cfg, data_root=data_root, cache_dir=cache_dir, force=force)
        t = Table(title=f"{cfg.name}: {len(model.concept_names_)} concepts")
        for col in ("split", "acc", "AUROC", "ECE"):
            t.add_column(col)
        for split, m in prov["metrics"].items():
            t.add_row(split, f"{m['acc']:.3f}", f"{m['auroc']:.3f}", f"{m['ece']:.3f}")
        console.print(t)
        for split, m in prov["metrics"].items():
            if note := chance_sentence(m, f"{split} split"):
                console.print(f"[bold yellow]warning:[/bold yellow] {escape(note)}")
        console.print(f"saved to {cfg.resolved_out_dir()}")

    @app.command("evaluate")
    @engine_options
    def evaluate_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="model (or adaptation) folder"),
        manifest: Path = typer.Option(..., "--manifest", help="labelled manifest (.csv/.parquet)"),
        baseline: Optional[Path] = typer.Option(None, "--baseline",
                                                help="compare with this model (e.g. the base of an adaptation), paired"),
        split: Optional[str] = typer.Option(None, "--split", help="score only the images that formed this split "
                                            "at training (test, val), found in --manifest by content"),
        json_path: Optional[Path] = typer.Option(None, "--json", help="write the metrics here"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Accuracy, AUROC, ECE with bootstrap CIs, per site/sex/age; with --baseline, the paired gain over it."""
        from medcbm._io import atomic_write_json
        from medcbm.data.manifest import load_manifest
        from medcbm.errors import ConfigError
        from medcbm.workflows.compare import compare_models
        from medcbm.workflows.train import evaluate_cbm

        m = load_manifest(manifest).check_files()
        if baseline is not None:
            if split is not None:
                raise ConfigError("--split and --baseline together are not supported: cut the split out first")
            res = compare_models(model, baseline, m, cache_dir=cache_dir, measured_on=f"manifest {manifest.name}")
            for name in ("baseline", "model"):
                r = res[name]
                console.print(f"{name:8s} n={res['n']} bal.acc={r['balanced_acc']:.3f} acc={r['acc']:.3f} "
                              f"AUROC={r['auroc']:.3f} ECE={r['ece']:.3f}")
            if res["changed_predictions"] == 0:
                console.print(f"the two models predict the same class on all {res['n']} images: nothing to compare")
            else:
                for key, label in (("balanced_acc_gain", "balanced accuracy"), ("acc_gain", "accuracy")):
                    g = res[key]
                    console.print(f"gain in {label}: {g['gain']:+.3f} [95 % interval {g['ci95'][0]:+.3f}, "
                                  f"{g['ci95'][1]:+.3f}] — {g['verdict']}")
                console.print(f"{res['changed_predictions']} of {res['n']} predictions differ")
        else:
            res = evaluate_cbm(model, m, split=split, cache_dir=cache_dir)
            console.print(f"{res['split']}: n={res['n']} acc={res['acc']:.3f} [{res['acc_ci95'][0]:.3f}, {res['acc_ci95'][1]:.3f}] "
                          f"AUROC={res['auroc']:.3f} ECE={res['ece']:.3f}")
            for site, sm in res["subgroups"].get("site", {}).items():
                console.print(f"  site {site}: n={sm['n']} acc={sm['acc']:.3f}")
        if json_path:
            atomic_write_json(json_path, res)

    @app.command("split-site")
    def split_site_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="the model to adapt (its classes and label map)"),
        manifest: Path = typer.Option(..., "--manifest", help="labelled manifest of the new site's images"),
        k: int = typer.Option(4, "--k", help="labelled images per class in the support"),
        seed: int = typer.Option(0, "--seed"),
        query_frac: float = typer.Option(0.5, "--query-frac", help="share of the site's patients held out as query"),
        out_dir: Path = typer.Option(..., "--out-dir", "-o", help="writes support.csv, unlabelled.csv, query.csv"),
    ) -> None:
        """Cut a new site's images by patient: k labelled per class, the rest unlabelled, a held-out query."""
        from medcbm.bottleneck.artifacts import read_model_meta
        from medcbm.data.manifest import load_manifest, save_manifest
        from medcbm.data.site_split import split_site
        from medcbm.bottleneck.metadata import mapped_labels

        meta = read_model_meta(model)
        site, y = mapped_labels(load_manifest(manifest), meta)
        parts = split_site(site, y, k=k, seed=seed, query_frac=query_frac, classes=meta["classes"]).manifests(site)
        for name, part in parts.items():
            path = save_manifest(part, out_dir / f"{name}.csv")
            console.print(f"{name:10s} {len(part.frame):5d} images -> {path}")
        console.print("adapt with the support (and unlabelled) images; compare on the query with "
                      "medcbm evaluate --baseline")

    @app.command("predict")
    @engine_options
    def predict_cmd(
        model: Path = typer.Option(..., "--model", "-m"),
        manifest: Path = typer.Option(..., "--manifest", help="manifest of images (labels not needed)"),
        out: Path = typer.Option(Path("predictions.csv"), "--out", "-o"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
        site: Optional[str] = typer.Option(None, "--site", help="every image's site, for a site-adjusted model "
                                           "whose manifest has no site column ('unknown': no adjustment)"),
    ) -> None:
        """Class and concept probabilities per image, the concepts that drove each prediction, and whether the
        image is within the model's scope (in_scope, scope_reason)."""
        from medcbm._io import atomic_write_bytes, safe_csv_bytes
        from medcbm.data.manifest import load_manifest
        from medcbm.workflows.train import predict_cbm

        df = predict_cbm(model, load_manifest(manifest).check_files(), cache_dir=cache_dir, site=site)
        atomic_write_bytes(out, safe_csv_bytes(df))
        console.print(df[["id", "prediction", "in_scope", "top_concepts"]].head(10).to_string(index=False))
        n_out = int((~df["in_scope"]).sum())
        console.print(f"wrote {out} ({len(df)} rows" + (f"; {n_out} outside the model's scope, see scope_reason)"
                                                        if n_out else ")"))


def _named_out_dir(cfg) -> str:
    """The config's output folder for another name: its ``{name}`` pattern, or the default when it is fixed."""
    from medcbm.workflows.config import TrainConfig

    return cfg.out_dir if "{name}" in cfg.out_dir else TrainConfig.model_fields["out_dir"].default


def register_adapt(app: typer.Typer) -> None:
    """Attach ``medcbm adapt`` and ``medcbm adaptations``."""

    @app.command("adapt")
    @engine_options
    def adapt_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="base model folder from medcbm train"),
        support: Optional[Path] = typer.Option(None, "--support", help="labelled manifest of a few images from the new site"),
        unlabelled: Optional[Path] = typer.Option(None, "--unlabelled",
                                                  help="manifest of the site's other images (labels not read)"),
        corrections: Optional[Path] = typer.Option(None, "--corrections", help="reviewed cases from medcbm review "
                                                   "--export: their diagnoses are the support, their concept answers "
                                                   "recalibrate the concepts (site adapter)"),
        site: str = typer.Option(..., "--site", help="name of the new site (names the adaptation)"),
        adapter: str = typer.Option("site", "--adapter",
                                    help="site (default), tfti, mask, ... (medcbm adaptations --list-adapters)"),
        k: Optional[int] = typer.Option(None, "--k", help="require at least K images of every class"),
        out: Optional[Path] = typer.Option(None, "--out", help="where to write it (default MODEL/adaptations/SITE)"),
        force: bool = typer.Option(False, "--force", help="replace an existing adaptation of this site"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Adapt a trained CBM to a new site from a few labelled images (the base model is not changed)."""
        from medcbm.data.manifest import load_manifest
        from medcbm.workflows.adapt import adapt_cbm

        fitted, path = adapt_cbm(model, support and load_manifest(support).check_files(), site=site, adapter=adapter,
                                 k=k, unlabelled=unlabelled and load_manifest(unlabelled).check_files(), out_dir=out,
                                 corrections=corrections and load_manifest(corrections).check_files(), force=force,
                                 cache_dir=cache_dir)
        _print_adaptation(fitted)
        console.print(f"saved to {path}")

    @app.command("adaptations")
    def adaptations_cmd(
        model: Optional[Path] = typer.Option(None, "--model", "-m", help="base model folder"),
        remove: Optional[str] = typer.Option(None, "--remove", help="delete this site's adaptation"),
        list_adapters_: bool = typer.Option(False, "--list-adapters", help="list the available adapters"),
    ) -> None:
        """List a model's adaptations (or remove one; or list the adapters)."""
        from medcbm.adapt import ADAPTERS
        from medcbm.adapt.store import list_adaptations, remove_adaptation
        from medcbm.errors import ConfigError

        if list_adapters_:
            for name in ADAPTERS.names():
                meta = ADAPTERS.meta(name)
                console.print(f"{name:18s} {meta['description']}")
            return
        if model is None:
            raise ConfigError("--model is required (or pass --list-adapters)")
        if remove:
            console.print(f"removed {remove_adaptation(model, remove)}")
            return
        t = Table(title=f"adaptations of {model.name}")
        for col in ("site", "adapter", "changed", "masked", "amplified", "estimated gain", "support"):
            t.add_column(col)
        for r in list_adaptations(model):
            t.add_row(r["site"], r["adapter"], str(r["changed"]), ", ".join(r["masked"]) or "-",
                      ", ".join(r["amplified"]) or "-",
                      "-" if r["estimated_gain"] is None else f"{r['estimated_gain']:+.3f}", str(r["n_support"]))
        console.print(t)


def _print_adaptation(fitted) -> None:
    """The concepts an adapter changed, with their statistic and clinical question, and the evidence for it."""
    links = getattr(fitted.model, "recipe_", {}).get("concept_links", {})
    if fitted.changes_:
        t = Table(title=f"{fitted.name}: {len(fitted.changes_)} concepts changed")
        for col in ("concept", "action", "statistic", "factor/shift", "clinical question"):
            t.add_column(col)
        for c in fitted.changes_:
            q = next((e["question"] for e in links.get(c.concept, []) if e.get("question")), "(no bank entry)")
            t.add_row(c.concept, c.action, f"{c.statistic:+.3f}", f"{c.factor:.2f}", q)
        console.print(t)
    estimate = getattr(fitted, "estimate_", None)
    if estimate is None and hasattr(fitted, "estimate_"):
        console.print("no labelled images: the gain is not estimated (check it with medcbm evaluate --baseline)")
    elif estimate is not None:
        console.print(f"estimated gain in balanced accuracy: {estimate.describe()} — {estimate.verdict}")
    else:
        sel = fitted.selection_
        console.print(f"leave-one-shot-out balanced accuracy: {sel.identity.balanced_acc:.3f} unadapted -> "
                      f"{sel.best.balanced_acc:.3f} best ({sel.best_params}); the best of several settings on the same "
                      f"images, so optimistic: {sel.gain:+.3f}")
    steps = getattr(fitted, "reasons_", None)
    for line in ([r for r in steps if not r.startswith("estimated gain")] if steps is not None else [fitted.reason_]):
        console.print(line)
