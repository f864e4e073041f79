"""``medcbm bench concepts`` where the concepts are read: HAM10000, per acquisition site.

Two numbers per concept layer (a backbone plus the recipe's PH2 + Derm7pt annotation probes):

- **pattern AUROC per site**: the whole-lesion pattern concepts that HAM10000's diagnoses define, each scored
  one-vs-rest against ``dx`` within every site (bootstrap 95 % interval, positives counted; a cell with fewer
  than :data:`MIN_POSITIVES` positives is flagged "cannot tell" and left out of the summary);
- **entanglement**: within each class of the protocol (benign / malignant), how well a cross-validated
  logistic regression predicts the site from the concept activations (macro one-vs-rest AUROC; 0.5 = the
  concepts carry no site information beyond chance). Also reported within each diagnosis, because the sites
  differ in their diagnosis mix inside a class and that alone makes the site readable from honest concepts.

The probes are fitted on PH2 + Derm7pt annotations only; HAM10000 is never used to fit them (the site
classifier of the entanglement number is a cross-validated read-out on HAM, not part of any model).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medcbm._io import sha256_text
from medcbm.concepts.grounding.probes import ConceptProbes, auc_columns
from medcbm.data.manifest import Manifest
from medcbm.metrics import auroc, bootstrap_ci

logger = logging.getLogger(__name__)

#: pattern concept -> (HAM10000 ``dx`` values that make it positive, ``dx`` values left out of its score).
#: ``keratosis_pattern`` is Derm7pt's seborrheic keratosis / lentigo / melanosis, i.e. HAM's ``bkl``
#: (seborrheic keratosis, solar lentigo, lichen-planus-like keratosis). ``akiec`` (actinic keratosis, Bowen's)
#: is keratinocytic too but not in the concept's definition, and neither source annotates it either way, so
#: it counts as neither positive nor negative there (the score with it as a negative is reported beside it).
PATTERN_DX: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "melanoma_pattern": (("mel",), ()),
    "bcc_pattern": (("bcc",), ()),
    "keratosis_pattern": (("bkl",), ("akiec",)),
    "vascular_lesion_pattern": (("vasc",), ()),
    "dermatofibroma_pattern": (("df",), ()),
}
MIN_POSITIVES = 10
TARGETS = {"pattern_mean_auroc": 0.85, "pattern_min_auroc": 0.70, "entanglement_max_auroc": 0.65}


@dataclass
class HamSubset:
    """The HAM10000 images scored: a label-mapped manifest (``label`` = dx), its protocol class, a description."""

    manifest: Manifest
    classes: np.ndarray
    info: dict


def stratified_sample(frame: pd.DataFrame, limit: int, *, by: tuple[str, ...] = ("site", "label"),
                      floor: int = MIN_POSITIVES, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a seeded sample of about ``limit`` rows, proportional per stratum.

    Every stratum keeps at least ``floor`` rows (all of them if it has fewer), so rare diagnoses at a site
    stay measurable; the sample can therefore exceed ``limit`` by a little.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in frame.groupby(list(by)).indices.items():
        k = min(len(idx), max(floor, round(limit * len(idx) / len(frame))))
        keep.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(keep))


def ham_subset(protocol: str = "ham10000-site-confounded", seeds: int = 5, *, limit: int | None = None,
               sample_seed: int = 0, data_root=None) -> HamSubset:
    """The images of a protocol's first ``seeds`` seeds (all their splits), optionally a stratified sample.

    The protocol supplies the class definition (its ``label_map``, e.g. benign = nv, bkl, df, vasc) and a
    documented, cached image set: ``bench shift`` has already extracted these images.
    """
    from medcbm.protocols import build_splits, load_protocol, load_protocol_manifest

    proto = load_protocol(protocol)
    manifest = load_protocol_manifest(proto, data_root)
    splits = [build_splits(manifest, proto, s) for s in list(proto.seeds)[:seeds]]
    base = splits[0].manifest  # every seed shares the label-mapped manifest
    used = np.unique(np.concatenate([np.concatenate(list(sp.index.values())) for sp in splits]))
    sampled = stratified_sample(base.frame.iloc[used], limit, seed=sample_seed) if limit else np.arange(len(used))
    rows = used[sampled]
    sub = base.subset(rows)
    classes = np.asarray(proto.classes)[splits[0].y[rows]]
    f = sub.frame
    info = {"dataset": proto.dataset, "protocol": proto.name, "seeds": list(proto.seeds)[:seeds],
            "images": "every image of the seeds' train/val/test_id/test_ood splits"
                      + (f", a stratified (site x dx) sample of about {limit} (seed {sample_seed})" if limit else ""),
            "n_images": len(sub), "ids_sha256": sha256_text(*sorted(f["id"].astype(str)))[:16],
            "class_map": proto.label_map,
            "counts": {s: g["label"].value_counts().sort_index().to_dict() for s, g in f.groupby("site")}}
    return HamSubset(sub, classes, info)


def recipe_probes(backbone: str, *, recipe: str = "cbm", data_root=None, cache_dir=None,
                  progress: bool = False) -> tuple[ConceptProbes, dict]:
    """The recipe's annotation probes (its PH2 + Derm7pt sources) on ``backbone``, and where they came from."""
    from medcbm.bottleneck.config import AnnotationSource
    from medcbm.bottleneck.grounders import GroundingContext, annotation_probes
    from medcbm.methods.cbm import load_method_recipe

    cfg = load_method_recipe(recipe).with_overrides({"grounding": {"backbone": backbone}})
    sources = [s for s in cfg.grounding.sources if isinstance(s, AnnotationSource)]
    ctx = GroundingContext(data_root=data_root, cache_dir=cache_dir, progress=progress)
    probes = annotation_probes(sources, cfg, ctx)
    info = {"recipe": recipe, "fitted_on": [s.dataset for s in sources],
            "fitted_on_note": "every annotated image of each source (the recipe's grounding); HAM10000 never",
            "min_auc": cfg.grounding.min_auc, "drop_weak": cfg.grounding.drop_weak,
            "kept": list(probes.concept_names_), "dropped": dict(probes.flagged_),
            "mean_cv_auc": float(np.mean(list(probes.cv_auc_.values())))}
    return probes, info


def _auc_with_ci(y: np.ndarray, s: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, list[float]]:
    fn = lambda yy, pp: float(auc_columns(yy, pp)[0])  # noqa: E731 - rank AUROC, fast enough to bootstrap
    return fn(y, s[:, None]), list(bootstrap_ci(y, s[:, None], fn=fn, n=n_boot, seed=seed))


def pattern_site_auroc(P: np.ndarray, names: list[str], dx: np.ndarray, site: np.ndarray, *, n_boot: int = 1000,
                       seed: int = 0, min_positives: int = MIN_POSITIVES) -> dict:
    """One-vs-rest AUROC of every :data:`PATTERN_DX` concept against ``dx``, per site and pooled.

    Returns:
        ``{"per_pattern": {pattern: {site | "pooled": cell}}, "summary": ...}``; a cell holds ``auroc``,
        ``ci95``, ``n_pos``, ``n_neg`` and ``cannot_tell`` (fewer than ``min_positives`` positives).
    """
    out: dict = {}
    cells = []
    for pattern, (pos, ignore) in PATTERN_DX.items():
        if pattern not in names:
            out[pattern] = {"missing": "not a kept concept of this grounding"}
            continue
        s = P[:, names.index(pattern)]
        out[pattern] = {}
        for where in [*sorted(set(site)), "pooled"]:
            m = np.ones(len(dx), bool) if where == "pooled" else site == where
            y_all = np.isin(dx[m], pos).astype(float)
            scored = ~np.isin(dx[m], ignore)
            y, n_pos = y_all[scored], int(y_all[scored].sum())
            cell = {"n_pos": n_pos, "n_neg": int(len(y) - n_pos), "cannot_tell": n_pos < min_positives}
            if 0 < n_pos < len(y):
                cell["auroc"], cell["ci95"] = _auc_with_ci(y, s[m][scored], n_boot=n_boot, seed=seed)
                if ignore:
                    cell[f"auroc_{'_'.join(ignore)}_as_negative"] = float(auc_columns(y_all, s[m][:, None])[0])
            out[pattern][where] = cell
            if where != "pooled" and not cell["cannot_tell"] and "auroc" in cell:
                cells.append((pattern, where, cell["auroc"]))
    vals = np.array([c[2] for c in cells])
    summary = {"n_cells": len(cells), "cells": "(pattern, site) pairs with >= %d positives" % min_positives,
               "mean_auroc": float(vals.mean()) if len(vals) else float("nan"),
               "min_auroc": float(vals.min()) if len(vals) else float("nan"),
               "below_0.70": [f"{p}@{w}" for p, w, a in cells if a < TARGETS["pattern_min_auroc"]],
               "cannot_tell": [f"{p}@{w}" for p, d in out.items() for w, c in d.items()
                               if isinstance(c, dict) and w != "pooled" and c.get("cannot_tell")]}
    return {"per_pattern": out, "summary": summary}


def site_entanglement(A: np.ndarray, site: np.ndarray, group: np.ndarray, *, n_folds: int = 5,
                      min_per_site: int = MIN_POSITIVES, n_boot: int = 200, seed: int = 0) -> dict:
    """Within each ``group`` value: cross-validated macro one-vs-rest AUROC of predicting ``site`` from ``A``.

    A standardised, class-balanced L2 logistic regression (C = 1) per fold; sites with fewer than
    ``min_per_site`` images in the group are left out of that group (listed). 0.5 means no site information.

    Returns:
        ``{"groups": {g: {auroc, ci95, n, sites, excluded_sites}}, "mean_auroc"}`` (mean over scored groups).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    res: dict = {}
    group, site = np.asarray(group).astype(str), np.asarray(site).astype(str)
    for g in sorted(set(group)):
        m = group == g
        counts = pd.Series(site[m]).value_counts().sort_index()
        ok = counts[counts >= max(min_per_site, n_folds)].index.tolist()
        rec: dict = {"n": 0, "sites": counts.to_dict(), "excluded_sites": sorted(set(counts.index) - set(ok))}
        if len(ok) < 2:
            rec["auroc"], rec["reason"] = float("nan"), f"fewer than two sites with >= {min_per_site} images"
            res[g] = rec
            continue
        m &= np.isin(site, ok)
        y = np.searchsorted(np.array(sorted(ok)), site[m])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
        cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on near-separable folds; the AUROC is what counts
            proba = cross_val_predict(clf, A[m], y, cv=cv, method="predict_proba")
        ci = bootstrap_ci(y, proba, fn=auroc, n=n_boot, seed=seed)
        rec.update(n=int(m.sum()), auroc=auroc(y, proba), ci95=list(ci))
        res[g] = rec
    scored = [r["auroc"] for r in res.values() if np.isfinite(r["auroc"])]
    return {"groups": res, "mean_auroc": float(np.mean(scored)) if scored else float("nan")}


def bench_ham_sites(backbones: list[str], *, protocol: str = "ham10000-site-confounded", seeds: int = 5,
                    limit: int | None = None, recipe: str = "cbm", n_boot: int = 1000, seed: int = 0, data_root=None,
                    cache_dir: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """Pattern AUROC per site and within-class site entanglement for each backbone, side by side."""
    from medcbm.bottleneck.grounders import GroundingContext, features_for

    ham = ham_subset(protocol, seeds, limit=limit, sample_seed=seed, data_root=data_root)
    f = ham.manifest.frame
    dx, site = f["label"].astype(str).to_numpy(), f["site"].astype(str).to_numpy()
    ctx = GroundingContext(data_root=data_root, cache_dir=cache_dir, progress=progress)
    out: dict = {"scored_on": ham.info, "pattern_dx": {k: {"positive": list(p), "ignored": list(i)}
                                                      for k, (p, i) in PATTERN_DX.items()},
                 "min_positives": MIN_POSITIVES, "targets": TARGETS, "backbones": {}}
    for name in backbones:
        probes, info = recipe_probes(name, recipe=recipe, data_root=data_root, cache_dir=cache_dir, progress=progress)
        # the activations the bottleneck reads (calibrated probabilities, before any site adjustment)
        X = features_for(ham.manifest, name, ctx)
        P = probes.predict_concepts(X)
        patterns = pattern_site_auroc(P, list(probes.concept_names_), dx, site, n_boot=n_boot, seed=seed)
        nb = min(n_boot, 200)  # the site classifier's interval only needs to show its width
        by_class = site_entanglement(P, site, ham.classes, n_boot=nb, seed=seed)
        ent = {"activations": f"calibrated probabilities of all {P.shape[1]} kept concepts (what the bottleneck reads)",
               "by_class": by_class, "by_dx": site_entanglement(P, site, dx, n_boot=nb, seed=seed),
               # the logits keep what the probability scale squashes near 0 and 1, so more site signal can show
               "by_class_logits": site_entanglement(probes.decision_function(X), site, ham.classes, n_boot=nb,
                                                    seed=seed)}
        s = patterns["summary"]
        s["meets_targets"] = bool(s["mean_auroc"] >= TARGETS["pattern_mean_auroc"]
                                  and s["min_auroc"] >= TARGETS["pattern_min_auroc"])
        worst = max((g["auroc"] for g in by_class["groups"].values() if np.isfinite(g["auroc"])), default=np.nan)
        by_class["meets_target"] = bool(worst <= TARGETS["entanglement_max_auroc"])
        out["backbones"][name] = {"probes": info, "patterns": patterns, "entanglement": ent}
        logger.info("%s: HAM pattern AUROC mean %.3f (min %.3f); within-class site AUROC %.3f", name,
                    patterns["summary"]["mean_auroc"], patterns["summary"]["min_auroc"], by_class["mean_auroc"])
    out["comparison"] = comparison(out)
    return out


def comparison(res: dict) -> dict[str, dict[str, float]]:
    """Row -> {backbone: value}: the headline numbers of every backbone, for a side-by-side table."""
    rows: dict[str, dict[str, float]] = {}
    for name, r in res["backbones"].items():
        s, ent = r["patterns"]["summary"], r["entanglement"]
        put = lambda k, v: rows.setdefault(k, {}).__setitem__(name, v)  # noqa: E731
        put("pattern AUROC, mean over sites", s["mean_auroc"])
        put("pattern AUROC, worst site", s["min_auroc"])
        for p, cells in r["patterns"]["per_pattern"].items():
            for w, c in cells.items():
                if isinstance(c, dict) and "auroc" in c:
                    put(f"{p} @ {w}" + (" (cannot tell)" if c["cannot_tell"] else ""), c["auroc"])
        put("site AUROC within class, mean", ent["by_class"]["mean_auroc"])
        for g, c in ent["by_class"]["groups"].items():
            put(f"site AUROC within {g}", c["auroc"])
        put("site AUROC within dx, mean", ent["by_dx"]["mean_auroc"])
        put("site AUROC within class, mean (logits)", ent["by_class_logits"]["mean_auroc"])
    return rows


def markdown_table(res: dict) -> str:
    """The comparison as a Markdown table (one column per backbone)."""
    names = list(res["backbones"])
    lines = ["| HAM10000 (" + res["scored_on"]["protocol"] + f", {res['scored_on']['n_images']} images) | "
             + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, vals in res["comparison"].items():
        lines.append(f"| {row} | " + " | ".join(f"{vals.get(n, float('nan')):.3f}" for n in names) + " |")
    return "\n".join(lines)
