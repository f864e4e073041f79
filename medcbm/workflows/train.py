"""Library entry points behind ``medcbm train``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medcbm._io import atomic_write_json
from medcbm.backbones import get_backbone_spec
from medcbm.backbones.features import extract_features
from medcbm.adapt.store import load_model
from medcbm.bottleneck.artifacts import backbone_from_meta, save_cbm
from medcbm.bottleneck.domain import check_domain
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.metadata import mapped_labels, model_groups, warn_foreign_modality
from medcbm.bottleneck.grounders import GroundingContext, concept_backbone
from medcbm.bottleneck.recipe import fit_cbm
from medcbm.data.manifest import Manifest
from medcbm.data.samples import LabelledSplit
from medcbm.metrics import split_metrics, subgroup_metrics
from medcbm.workflows.config import TrainConfig
from medcbm.workflows.data import training_data

logger = logging.getLogger(__name__)


def train_cbm(cfg: TrainConfig, *, data_root=None, cache_dir: str | os.PathLike | None = "runs/cache/features",
              progress: bool = True) -> tuple[KnowledgeCBM, dict]:
    """Train the config's CBM recipe on its data, score every split, and save the artifact.

    Returns:
        ``(model, provenance)``; provenance (also in ``model.json``) records the data, split and grounding.
    """
    recipe = cfg.recipe()
    data = training_data(cfg.data, data_root=data_root)
    ctx = GroundingContext(data_root=data_root, cache_dir=cache_dir, progress=progress)
    spec = get_backbone_spec(concept_backbone(recipe, ctx))  # fine-tuned first when the recipe asks for it
    frames = {s: m.absolute_frame() for s, m in data.manifests.items()}
    # one extraction for every split: the model set-up (trace, freeze) is paid once
    feats = extract_features(Manifest(pd.concat(frames.values(), ignore_index=True), source="training data"), spec,
                             cache_dir=cache_dir, progress=progress)
    ends = np.cumsum([len(f) for f in frames.values()])
    X = dict(zip(frames, np.split(feats.X, ends[:-1])))
    n_fit = len(frames["train"]) + len(frames["val"])  # the frames start with train, then val
    train, val = (LabelledSplit(X[s], data.y[s], frames[s], spec.name, data.groups[s]) for s in ("train", "val"))
    model = fit_cbm(recipe, train, val, classes=data.classes, ctx=ctx, seed=cfg.data.seed)
    metrics = {s: split_metrics(data.y[s], model.predict_proba(X[s], data.groups[s]), n_boot=200)
               for s in X if s != "train"}
    provenance = {
        "name": cfg.name,
        "data": data.provenance,
        "label_map": data.label_map,
        "nuisance": data.nuisance,
        "grounding": _grounding_provenance(model),
        "metrics": metrics,
        # content hashes (not ids or paths) let `medcbm adapt` warn when a support image was trained on
        "train_image_sha256": short_keys(feats.keys[:n_fit]),
    }
    out = cfg.resolved_out_dir()
    save_cbm(model, out, backbone=spec, provenance=provenance)
    atomic_write_json(out / "metrics.json", metrics)
    return model, provenance


def short_keys(keys: list[str]) -> list[str]:
    """Feature-cache keys (image content hashes) cut to 16 hex digits: enough to spot a reused image."""
    return [k[:16] for k in keys]


def _grounding_provenance(model: KnowledgeCBM) -> dict:
    """What the concept layer was fitted on: annotation datasets and their concepts, probe CV AUROC, flags."""
    from medcbm.methods.cbm import probe_summary

    sources = {k: v for p in model.grounder.leaves() for k, v in (getattr(p, "sources_", None) or {}).items()}
    return {"kind": model.grounder.kind, "sources": sources or None, **probe_summary(model.grounder)}


def evaluate_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, cache_dir=None, progress: bool = True) -> dict:
    """Accuracy/AUROC/ECE with CIs and per-subgroup results of a saved model (or adaptation) on a labelled manifest."""
    model, meta = load_model(model_dir)
    spec = backbone_from_meta(meta)
    manifest, y = mapped_labels(manifest, meta)
    warn_foreign_modality(manifest.frame, meta)
    X = extract_features(manifest, spec, cache_dir=cache_dir, progress=progress).X
    ood = check_domain(model, X)
    proba = model.predict_proba(X, model_groups(model, manifest.frame, meta))
    res = split_metrics(y, proba)
    # how many images lie beyond the training 99th percentile of feature distance (None: the model cannot say)
    res["n_unlike_training"] = None if ood is None else int((ood > 1.0).sum())
    res["subgroups"] = subgroup_metrics(y, proba, manifest.frame)
    res["model"] = str(model_dir)
    return res


def predict_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, cache_dir=None, top_k: int = 3,
                progress: bool = True) -> pd.DataFrame:
    """Per-image class probabilities, concept probabilities and the top concept contributions (base model or
    adaptation folder), and ``ood_score``: the image's feature distance to the training images over their 99th
    percentile (above 1: unlike the training data; absent for models saved before medcbm stored the summary)."""
    model, meta = load_model(model_dir)
    warn_foreign_modality(manifest.frame, meta)
    X = extract_features(manifest, backbone_from_meta(meta), cache_dir=cache_dir, progress=progress).X
    ood = check_domain(model, X)
    groups = model_groups(model, manifest.frame, meta)
    proba = model.predict_proba(X, groups)
    P = model.predict_concepts(X, groups)
    contrib = model.contributions(X, groups)
    pred = proba.argmax(1)
    rows = []
    for i in range(len(X)):
        c = contrib[i, pred[i]]
        order = np.argsort(-np.abs(c))[:top_k]
        rec = {"id": manifest.frame["id"].iloc[i], "prediction": model.classes[pred[i]]}
        rec.update({f"p_{k}": float(proba[i, j]) for j, k in enumerate(model.classes)})
        rec.update({f"concept_{k}": float(P[i, j]) for j, k in enumerate(model.concept_names_)})
        rec["top_concepts"] = "; ".join(f"{model.concept_names_[j]} {c[j]:+.2f}" for j in order)
        if ood is not None:  # above 1: farther from the training images than 99 % of them
            rec["ood_score"] = round(float(ood[i]), 4)
        rows.append(rec)
    return pd.DataFrame(rows)
