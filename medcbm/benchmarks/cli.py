"""Benchmark commands registered on ``medcbm bench``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from medcbm._cli_options import engine_options

console = Console()


def register_bench(bench_app: typer.Typer) -> None:
    """Attach ``bench shift``, ``adapt``, ``interventions``, ``review``, ``concepts``, ``features``, ``scale`` and
    ``scope``."""

    @bench_app.command("shift")
    @engine_options
    def bench_shift(
        protocol: str = typer.Option("ham10000-site-confounded", "--protocol", "-p", help="shipped protocol name or YAML path"),
        seeds: int = typer.Option(5, "--seeds", help="number of seeds (the protocol's first N)"),
        json_path: Path = typer.Option(Path("runs/bench/shift.json"), "--json", help="where to write the results"),
        methods: Optional[List[str]] = typer.Option(None, "--method", "-m", help="methods to run (default: all registered)"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """ID/OOD accuracy, gap and avg for every method on a shift protocol (mean ± std over seeds)."""
        from medcbm._io import atomic_write_json
        from medcbm.benchmarks.bench_shift import markdown_table, run_shift_benchmark
        from medcbm.methods import list_methods
        from medcbm.protocols import load_protocol

        preds = json_path.with_name(f"{json_path.stem}_predictions.parquet")
        res = run_shift_benchmark(protocol, methods=methods or list_methods(load_protocol(protocol).dataset), seeds=seeds,
                                  data_root=data_root, cache_dir=cache_dir, predictions_path=preds,
                                  out_dir=json_path.parent / f"{json_path.stem}_run")
        atomic_write_json(json_path, res)
        console.print(markdown_table(res))
        console.print(f"wrote {json_path} and {preds}")

    @bench_app.command("adapt")
    @engine_options
    def bench_adapt_cmd(
        protocol: str = typer.Option("ham10000-site-confounded", "--protocol", "-p",
                                     help="its test_ood split is the new site (e.g. ham10000-rosendahl-holdout)"),
        method: str = typer.Option("cbm", "--method", "-m", help="the source CBM recipe (cbm, cbm_no_balance, ...)"),
        seeds: int = typer.Option(5, "--seeds", help="source models (the protocol's first N seeds)"),
        ks: Optional[List[int]] = typer.Option(None, "--k", help="labelled images per class (default 0 1 2 4 8 16; 0 = unlabelled only)"),
        draws: int = typer.Option(50, "--draws", help="seeded support sets per k, shared by every adapter"),
        adapters: Optional[List[str]] = typer.Option(None, "--adapter", "-a", help="adapters (default: all registered)"),
        json_path: Path = typer.Option(Path("runs/bench/adapt.json"), "--json", help="where to write the results"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Few-shot adaptation: every adapter x k on paired support draws; query balanced accuracy, gain with CI, ID change."""
        from medcbm._io import atomic_write_json, atomic_write_text
        from medcbm.benchmarks.bench_adapt import estimate_table, markdown_table, run_adapt_benchmark

        ks = tuple(ks or (0, 1, 2, 4, 8, 16))
        res = run_adapt_benchmark(protocol, method=method, seeds=seeds, ks=ks, draws=draws, adapters=adapters,
                                  data_root=data_root, cache_dir=cache_dir)
        atomic_write_json(json_path, res)
        md = "\n".join(markdown_table(res, k) for k in ks) + estimate_table(res)
        atomic_write_text(json_path.with_suffix(".md"), md)
        console.print(md)
        console.print(f"wrote {json_path} and {json_path.with_suffix('.md')}")

    @bench_app.command("interventions")
    @engine_options
    def bench_interventions_cmd(
        json_path: Path = typer.Option(Path("runs/bench/interventions.json"), "--json"),
        datasets: Optional[List[str]] = typer.Option(None, "--dataset", help="derm7pt and/or ph2 (default: both)"),
        backbone: str = typer.Option("efficientnet_lite0_lesion_cc", "--backbone"),
        n_random: int = typer.Option(5, "--n-random", help="seeded random-order trials"),
        seed: int = typer.Option(0, "--seed"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Accuracy vs concepts corrected (random, uncertainty, contribution, oracle) on Derm7pt and PH2."""
        from medcbm._io import atomic_write_json
        from medcbm.benchmarks.bench_interventions import run_interventions_benchmark

        res = run_interventions_benchmark(datasets, backbone=backbone, data_root=data_root, cache_dir=cache_dir,
                                          n_random=n_random, seed=seed)
        atomic_write_json(json_path, res)
        for name, r in res["datasets"].items():
            for mode in ("binary", "percentile"):
                m = r[mode]
                console.print(f"{name} ({mode} values): accuracy {m['base_accuracy']:.3f} -> {m['all_true_accuracy']:.3f} "
                              f"with every concept corrected; AUC " + ", ".join(f"{k} {v:.3f}" for k, v in m["auc"].items()))
        console.print(f"wrote {json_path}")

    @bench_app.command("review")
    @engine_options
    def bench_review_cmd(
        json_path: Path = typer.Option(Path("runs/bench/review.json"), "--json", help="where to write the results "
                                       "(a .md beside it)"),
        seeds: int = typer.Option(5, "--seeds", help="seeds 0..N-1: one model fit and its own draws each"),
        draws: int = typer.Option(20, "--draws", help="reviewed-case draws per seed for the adaptation part"),
        per_class: int = typer.Option(10, "--per-class", help="reviewed cases per class in a draw"),
        n_random: int = typer.Option(5, "--n-random", help="seeded random-order trials"),
        backbone: str = typer.Option("efficientnet_lite0_lesion_cc", "--backbone"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """A simulated reviewer answers the review app's questions with Derm7pt's expert annotations: the gain on
        reviewed cases, and adaptation from reviewed cases (labels, concept corrections, both) on held-out ones."""
        from medcbm._io import atomic_write_json, atomic_write_text
        from medcbm.benchmarks.bench_review import run_review_benchmark
        from medcbm.benchmarks.review_tables import markdown_table

        res = run_review_benchmark(seeds, backbone=backbone, draws=draws, per_class=per_class, n_random=n_random,
                                   data_root=data_root, cache_dir=cache_dir)
        atomic_write_json(json_path, res)
        md = markdown_table(res)
        atomic_write_text(json_path.with_suffix(".md"), md)
        console.print(md)
        console.print(f"wrote {json_path} and {json_path.with_suffix('.md')}")

    @bench_app.command("concepts")
    @engine_options
    def bench_concepts_cmd(
        json_path: Path = typer.Option(Path("runs/bench/concepts.json"), "--json"),
        backbones: Optional[List[str]] = typer.Option(None, "--backbone", help="concept-grounding backbone, repeatable "
                                                      "(e.g. frozen and fine-tuned, side by side; default: the "
                                                      "dermoscopy CBM's efficientnet_lite0_lesion_cc)"),
        datasets: Optional[List[str]] = typer.Option(None, "--dataset", help="ph2, derm7pt (CV probe quality) and/or "
                                                     "ham10000 (per-site, where read); default: all three"),
        repeats: int = typer.Option(3, "--repeats", help="timing repeats of both fits (medians reported)"),
        ham_protocol: str = typer.Option("ham10000-site-confounded", "--ham-protocol",
                                         help="HAM10000 images scored: every image of this protocol's seeds"),
        ham_seeds: int = typer.Option(5, "--ham-seeds", help="the protocol's first N seeds"),
        ham_limit: Optional[int] = typer.Option(None, "--ham-limit", help="a seeded site x dx stratified sample of "
                                                "about this many of those images (default: all)"),
        recipe: str = typer.Option("cbm", "--recipe", help="method recipe whose annotation sources give the probes"),
        n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples of the per-site AUROC intervals"),
        seed: int = typer.Option(0, "--seed", help="bootstrap, sample and cross-validation seed"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Concept probes: CV AUROC on PH2 and Derm7pt (batched vs scikit-learn loop), and on HAM10000 per site:
        pattern-concept AUROC against the diagnoses and the site's predictability within a class."""
        from medcbm._io import atomic_write_json
        from medcbm.benchmarks.bench_concepts import run_concepts_benchmark
        from medcbm.benchmarks.bench_concepts_sites import markdown_table

        ham = {"protocol": ham_protocol, "seeds": ham_seeds, "limit": ham_limit, "recipe": recipe, "n_boot": n_boot,
               "seed": seed}
        res = run_concepts_benchmark(datasets or ["ph2", "derm7pt", "ham10000"],
                                     backbones or ["efficientnet_lite0_lesion_cc"], repeats=repeats,
                                     data_root=data_root, cache_dir=cache_dir, ham=ham)
        atomic_write_json(json_path, res)
        for backbone, q in res.get("probe_quality", {}).items():
            for name, r in q["datasets"].items():
                console.print(f"{backbone} {name}: {r['n_concepts']} criteria, mean CV AUROC {r['mean_cv_auc']:.3f}"
                              + (f"; patterns {r['patterns_mean_cv_auc']:.3f}" if r.get("patterns_mean_cv_auc") else "")
                              + f"; batched {r['batched_fit_s']} s vs loop {r['sklearn_loop_fit_s']} s ({r['speedup']}x)")
        if "ham_sites" in res:
            console.print(markdown_table(res["ham_sites"]), soft_wrap=True)
        console.print(f"wrote {json_path}")

    @bench_app.command("features")
    def bench_features_cmd(
        json_path: Path = typer.Option(Path("runs/bench/features.json"), "--json"),
        backbone: str = typer.Option("efficientnet_lite0", "--backbone"),
        n_images: int = typer.Option(512, "--n", help="images to time"),
        batch_size: int = typer.Option(32, "--batch-size"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
    ) -> None:
        """Throughput of feature extraction (forward-only, naive, end-to-end) on HAM10000 images."""
        from medcbm._io import atomic_write_json
        from medcbm.data.importers import import_dataset
        from medcbm.benchmarks.bench_features import bench_features

        res = bench_features(import_dataset("ham10000", data_root), backbone, n_images=n_images, batch_size=batch_size)
        atomic_write_json(json_path, res)
        console.print_json(data=res)
        console.print(f"wrote {json_path}")

    @bench_app.command("scale")
    def bench_scale_cmd(
        json_path: Path = typer.Option(Path("runs/bench/scale.json"), "--json"),
        n_images: int = typer.Option(512, "--n", help="HAM10000 images extracted per Ray run"),
        workers: Optional[List[int]] = typer.Option(None, "--workers", help="Ray worker counts to compare "
                                                    "(repeatable; default 1 and 2)"),
        cluster: Optional[List[int]] = typer.Option(None, "--estimate-workers", help="worker counts to estimate "
                                                    "the archive workloads for (repeatable; default 1, 16, 64)"),
        storage_mb_s: float = typer.Option(1000.0, "--storage-mb-s", help="assumed aggregate read bandwidth"),
        store_servers: int = typer.Option(1, "--store-servers", help="Chroma servers taking inserts"),
        skip_ray: bool = typer.Option(False, "--skip-ray", help="only calibrate and estimate"),
        manifest: Optional[Path] = typer.Option(None, "--manifest", help="calibrate on your own images (default: "
                                                "HAM10000 from --data-root; file size drives the storage estimate)"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
    ) -> None:
        """Ray speed-up on real images, a per-core calibration, and estimates for 1M JPEGs, 1M DICOMs and 10M
        text chunks (wall time, CPU-hours, RAM, disk, bottleneck)."""
        from medcbm._io import atomic_write_json
        from medcbm.benchmarks.bench_scale import bench_scale
        from medcbm.data.importers import import_dataset
        from medcbm.data.manifest import load_manifest

        images = load_manifest(manifest).check_files() if manifest else import_dataset("ham10000", data_root)
        res = bench_scale(images, n_images=n_images,
                          workers=workers, cluster_workers=cluster, storage_mb_s=storage_mb_s,
                          store_servers=store_servers, skip_ray=skip_ray)
        atomic_write_json(json_path, res)
        for w, r in res.get("ray", {}).items():
            console.print(f"ray {w} worker(s): {r['img_s']} img/s, speed-up {r['speedup']}x (after start-up "
                          f"{r['steady_img_s']} img/s, {r['steady_speedup']}x) "
                          f"(start {r['worker_start_s']:.1f} s, decode {r['decode_cpu_s']:.1f} s, "
                          f"model {r['model_cpu_s']:.1f} s)")
        for e in res["estimates"]:
            console.print(f"{e['workload']:16s} {e['workers']:4d} workers: {e['wall_hours']:8.2f} h wall, "
                          f"{e['cpu_hours']:8.1f} CPU-h, {e['ram_gb']:6.1f} GB RAM, {e['disk_gb']:6.1f} GB disk; "
                          f"bottleneck: {e['bottleneck']}")
        console.print(f"wrote {json_path}")

    @bench_app.command("scope")
    def bench_scope_cmd(
        protocol: str = typer.Option("ham10000-vidir-modern-holdout", "--protocol", "-p",
                                     help="its train/val fit and calibrate the domain; test_id and test_ood are scored"),
        seeds: int = typer.Option(3, "--seeds", help="the protocol's first N seeds"),
        json_path: Path = typer.Option(Path("runs/bench/scope.json"), "--json", help="where to write the results"),
        data_root: Optional[Path] = typer.Option(None, "--data-root"),
        cache_dir: Path = typer.Option(Path("runs/cache/features"), "--cache-dir"),
    ) -> None:
        """Scope verdicts: share of in-domain test images flagged (should be <= 2 %) and of foreign images
        (every pydicom-data image, COVID-CXR radiographs) flagged (should be 100 %)."""
        from medcbm.benchmarks.bench_scope import markdown_table, run_scope_benchmark, write_scope_benchmark

        res = run_scope_benchmark(protocol, seeds=seeds, data_root=data_root, cache_dir=cache_dir)
        write_scope_benchmark(json_path, res)
        console.print(markdown_table(res))
        console.print(f"wrote {json_path}")
