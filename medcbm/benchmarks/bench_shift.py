"""Run a shift protocol end to end: manifest -> splits per seed -> features -> methods -> metrics."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pandas as pd

from medcbm._io import atomic_write_bytes, atomic_write_json, atomic_write_text, json_safe
from medcbm.backbones import get_backbone_spec
from medcbm.backbones._registry import BackboneSpec
from medcbm.backbones.features import Features, extract_features
from medcbm.data.manifest import Manifest, SkipLog, save_manifest
from medcbm.data.samples import LabelledSplit, UnlabelledSplit
from medcbm.methods.registry import MethodContext, MethodInput, MethodOutput, get_method
from medcbm.metrics import mean_std, shift_summary, split_metrics, subgroup_metrics
from medcbm.protocols import Protocol, Splits, build_splits, load_protocol, load_protocol_manifest, nuisance_groups

logger = logging.getLogger(__name__)

HEADLINE = ("id_acc", "ood_acc", "gap", "avg")
TEST_SPLITS = ("test_id", "test_ood")


def method_input(proto: Protocol, sp: Splits, X: dict[str, np.ndarray], frames: dict[str, pd.DataFrame],
                 context: MethodContext) -> MethodInput:
    """One seed's method input: labelled train/val; test splits with label-free metadata and no labels.

    The test labels stay with the harness (``sp.y``); nothing derived from them is handed to the method.
    """
    name = context.backbone.name

    def labelled(s: str) -> LabelledSplit:
        return LabelledSplit(X[s], sp.y[sp.index[s]], frames[s], name, nuisance_groups(proto, frames[s]))

    test = {s: UnlabelledSplit.from_frame(X[s], frames[s], name, keep=(proto.split.nuisance,),
                                          groups=nuisance_groups(proto, frames[s])) for s in TEST_SPLITS}
    return MethodInput(labelled("train"), labelled("val"), test, proto.classes, sp.seed, context)


@dataclass
class ProtocolData:
    """A protocol's label-mapped manifest, per-seed splits and the features of every image they use."""

    proto: Protocol
    spec: BackboneSpec
    splits: dict[int, Splits]
    base: Manifest
    feats: Features
    pos: np.ndarray
    frame: pd.DataFrame
    context: MethodContext
    skips: SkipLog

    def seed_data(self, seed: int) -> tuple[dict, dict, dict, MethodInput]:
        """``(X, y, frames, method input)`` per split of one seed; ``y`` stays with the harness."""
        sp = self.splits[seed]
        X = {k: self.feats.X[self.pos[v]] for k, v in sp.index.items()}
        y = {k: sp.y[v] for k, v in sp.index.items()}
        frames = {k: self.frame.iloc[v].reset_index(drop=True) for k, v in sp.index.items()}
        return X, y, frames, method_input(self.proto, sp, X, frames, self.context)


def load_protocol_data(protocol: str | Protocol, *, seeds: list[int] | int | None = None, data_root=None,
                       cache_dir: str | os.PathLike | None = "runs/cache/features", progress: bool = True) -> ProtocolData:
    """Build the protocol's splits for ``seeds`` (explicit, a count, or ``None`` = all) and extract features."""
    proto = load_protocol(protocol) if not isinstance(protocol, Protocol) else protocol
    if seeds is None:
        seed_list = list(proto.seeds)
    elif isinstance(seeds, int):
        seed_list = (list(proto.seeds) + list(range(max(proto.seeds) + 1, max(proto.seeds) + 1 + seeds)))[:seeds]
    else:
        seed_list = list(seeds)
    skips = SkipLog()
    manifest = load_protocol_manifest(proto, data_root, skips)
    splits = {s: build_splits(manifest, proto, s) for s in seed_list}
    base = splits[seed_list[0]].manifest  # every seed shares the label-mapped manifest
    used = np.unique(np.concatenate([np.concatenate(list(sp.index.values())) for sp in splits.values()]))
    spec = get_backbone_spec(proto.backbone)
    sub = base.subset(used)
    feats = extract_features(sub, spec, cache_dir=cache_dir, progress=progress, skips=skips)
    if len(feats.manifest) != len(sub):
        lost = set(sub.frame["id"]) - set(feats.manifest.frame["id"])
        raise RuntimeError(f"{len(lost)} images failed to load; see the skip log")
    pos = np.full(len(base), -1)
    pos[used] = np.arange(len(used))
    ctx = MethodContext(backbone=spec, data_root=data_root, cache_dir=cache_dir, progress=progress)
    # methods may re-read images, so they get absolute paths
    return ProtocolData(proto, spec, splits, base, feats, pos, base.absolute_frame(), ctx, skips)


def prediction_rows(out: MethodOutput, frames: dict[str, pd.DataFrame], classes: list[str], *, seed: int,
                    method: str) -> pd.DataFrame:
    """Per-sample predictions of one method and seed: id, seed, split, method, class and concept probabilities."""
    parts = []
    for split, P in out.proba.items():
        df = pd.DataFrame({"id": frames[split]["id"].to_numpy(), "seed": seed, "split": split, "method": method})
        df[[f"p_{c}" for c in classes]] = np.asarray(P, dtype=float)
        if out.concepts is not None and split in out.concepts:
            df[[f"c_{k}" for k in out.concept_names]] = np.asarray(out.concepts[split], dtype=float)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def write_predictions(frames: list[pd.DataFrame], path: str | os.PathLike) -> Path:
    """All methods' per-sample predictions as one Parquet file (concept columns NaN where a method has none)."""
    import io

    buf = io.BytesIO()
    pd.concat(frames, ignore_index=True, sort=False).to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def run_shift_benchmark(
    protocol: str | Protocol,
    *,
    methods: list[str] = ("linear_probe",),
    seeds: list[int] | int | None = None,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = "runs/cache/features",
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    n_boot: int = 1000,
    predictions_path: str | os.PathLike | None = None,
) -> dict:
    """Evaluate ``methods`` on a protocol over seeds.

    Args:
        protocol: shipped name or YAML path (or a loaded protocol).
        methods: registered method names (see :func:`medcbm.methods.list_methods`).
        seeds: explicit seeds, a count (first N of the protocol's seeds), or ``None`` for all.
        data_root: where the datasets live.
        cache_dir: feature cache root.
        out_dir: when given, writes ``manifest.csv``, ``splits.json``, ``metrics.json``, ``metrics.md`` and
            ``predictions.parquet`` (per sample: id, seed, split, method, class and concept probabilities).
        n_boot: bootstrap resamples for confidence intervals.
        predictions_path: also write the per-sample predictions Parquet here (e.g. next to a results JSON).

    Returns:
        The results dict (the same content as ``metrics.json``).
    """
    t0 = time.perf_counter()
    pdata = load_protocol_data(protocol, seeds=seeds, data_root=data_root, cache_dir=cache_dir, progress=progress)
    proto, spec, splits, feats, skips = pdata.proto, pdata.spec, pdata.splits, pdata.feats, pdata.skips
    seed_list = list(splits)
    fns = {m: get_method(m) for m in methods}
    per_seed: dict[str, list[dict]] = {m: [] for m in methods}
    predictions: list[pd.DataFrame] = []
    for seed, sp in splits.items():
        X, y, frames, data = pdata.seed_data(seed)
        for name, fn in fns.items():
            ts = time.perf_counter()
            out = fn(data)
            rec = {"seed": seed, **shift_summary(y["test_id"], out.proba["test_id"], y["test_ood"], out.proba["test_ood"])}
            for split in TEST_SPLITS:
                rec[split] = split_metrics(y[split], out.proba[split], n_boot=n_boot, seed=seed)
                rec[split]["subgroups"] = subgroup_metrics(y[split], out.proba[split], frames[split])
            rec["info"] = out.info
            if out.concepts is not None and hasattr(out.model, "intervene_concepts"):
                rec["interventions"] = intervention_checks(out, y)
            rec["seconds"] = round(time.perf_counter() - ts, 3)
            per_seed[name].append(rec)
            predictions.append(prediction_rows(out, frames, proto.classes, seed=seed, method=name))
            logger.info("seed %d %s: ID %.3f OOD %.3f", seed, name, rec["id_acc"], rec["ood_acc"])
    results = {
        "protocol": proto.name,
        "dataset": proto.dataset,
        "backbone": spec.name,
        "classes": proto.classes,
        "seeds": seed_list,
        "split_counts": {str(s): sp.counts() for s, sp in splits.items()},
        "split_hashes": {str(s): sp.fingerprint() for s, sp in splits.items()},
        "methods": {m: aggregate(recs) for m, recs in per_seed.items()},
        "per_seed": per_seed,
        "features": feats.stats,
        "skipped": skips.shareable_records(_data_root_or_none(data_root)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    results = json_safe(results)
    if predictions_path is not None:
        write_predictions(predictions, predictions_path)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_manifest(pdata.base, out / "manifest.csv")
        atomic_write_json(out / "splits.json", {str(s): {k: sp.manifest.frame["id"].iloc[v].tolist()
                                                          for k, v in sp.index.items()} for s, sp in splits.items()})
        atomic_write_json(out / "metrics.json", results)
        atomic_write_text(out / "metrics.md", markdown_table(results))
        write_predictions(predictions, out / "predictions.parquet")
        if len(skips):
            skips.write(out / "skipped.json")
    return results


def intervention_checks(out: MethodOutput, y: dict[str, np.ndarray]) -> dict:
    """Per test split, whether setting each concept present moves P(positive class) the prior's way on every image,
    and the largest fraction of one class's predictions a single concept set to 0 or 1 flips (and which)."""
    from medcbm.benchmarks.bench_interventions import single_concept_effects

    res = {}
    for split in TEST_SPLITS:
        eff = single_concept_effects(out.model, out.concepts[split], y[split])
        worst = max(eff["concepts"], key=lambda k: eff["concepts"][k]["max_flip"])
        res[split] = {"min_prior_way": eff["min_prior_way"], "max_flip": eff["max_flip"], "max_flip_concept": worst}
    return res


def aggregate(recs: list[dict]) -> dict:
    """Mean ± std over seeds of the headline and secondary metrics."""
    agg = {k: mean_std([r[k] for r in recs]) for k in HEADLINE}
    for split in ("test_id", "test_ood"):
        for k in ("balanced_acc", "auroc", "ece"):
            agg[f"{split}_{k}"] = mean_std([r[split][k] for r in recs])
    if all("interventions" in r for r in recs):  # the worst seed: the checks must hold on every one
        ways = [r["interventions"][s]["min_prior_way"] for r in recs for s in TEST_SPLITS]
        agg["interventions"] = {"min_prior_way": None if None in ways else min(ways),
                                "max_flip": max(r["interventions"][s]["max_flip"] for r in recs for s in TEST_SPLITS)}
    return agg


def _fmt(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def markdown_table(results: dict) -> str:
    """The headline table: one row per method, mean ± std over seeds."""
    cols = [("ID acc", "id_acc"), ("OOD acc", "ood_acc"), ("gap", "gap"), ("avg", "avg"),
            ("ID AUROC", "test_id_auroc"), ("OOD AUROC", "test_ood_auroc"), ("OOD bal. acc", "test_ood_balanced_acc"),
            ("OOD ECE", "test_ood_ece")]
    lines = [f"### {results['protocol']} — {results['backbone']}, {len(results['seeds'])} seeds",
             "", "| method | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, agg in results["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(agg.get(k)) for _, k in cols) + " |")
    return "\n".join(lines) + "\n"


def _data_root_or_none(data_root) -> Path | None:
    """The datasets' root when it can be found (skip paths are written relative to it)."""
    from medcbm.data.paths import resolve_data_root
    from medcbm.errors import DataError

    try:
        return resolve_data_root(data_root)
    except DataError:
        return None
