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
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.metadata import mapped_labels, model_groups
from medcbm.bottleneck.grounders import GroundingContext, concept_backbone
from medcbm.bottleneck.recipe import fit_cbm
from medcbm.bottleneck.scope import assess_scope, scope_counts
from medcbm.data.image_facts import dicom_modalities
from medcbm.data.manifest import Manifest
from medcbm.data.samples import LabelledSplit
from medcbm.errors import ConfigError
from medcbm.metrics import split_metrics, subgroup_metrics
from medcbm.workflows.config import TrainConfig
from medcbm.workflows.data import training_data

logger = logging.getLogger(__name__)


def train_cbm(cfg: TrainConfig, *, data_root=None, cache_dir: str | os.PathLike | None = "runs/cache/features",
              progress: bool = True, force: bool = False) -> tuple[KnowledgeCBM, dict]:
    """Train the config's CBM recipe on its data, score every split, and save the artifact.

    Args:
        force: replace a model already saved in the output folder (its adaptations stop loading).

    Returns:
        ``(model, provenance)``; provenance (also in ``model.json``) records the data, split and grounding.

    Raises:
        ConfigError: the output folder already holds a model and ``force`` is not set (checked before training).
    """
    out = cfg.resolved_out_dir()
    check_can_write_model(out, force=force)
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
        # ... and `medcbm evaluate --split test` find the held-out images again in the user's manifest
        "split_image_sha256": {s: short_keys(k) for s, k in zip(frames, np.split(np.asarray(feats.keys), ends[:-1]))
                               if s != "train"},
        # the DICOM modalities trained on stay within the model's scope (medcbm.bottleneck.scope)
        "dicom_modalities": dicom_modalities(pd.concat([frames["train"], frames["val"]])["image"]),
    }
    save_cbm(model, out, backbone=spec, provenance=provenance)
    atomic_write_json(out / "metrics.json", metrics)
    return model, provenance


def check_can_write_model(out: Path, *, force: bool) -> None:
    """Refuse to replace a saved model silently: its adaptations are tied to its weights."""
    if force or not (out / "model.json").is_file():
        return
    n = len(list((out / "adaptations").glob("*/adaptation.json")))
    extra = f" and its {n} adaptation(s) would stop loading" if n else ""
    raise ConfigError(f"{out} already holds a trained model{extra}; pass --force to replace it, or choose "
                      "another --name")


def short_keys(keys: list[str]) -> list[str]:
    """Feature-cache keys (image content hashes) cut to 16 hex digits: enough to spot a reused image."""
    return [k[:16] for k in keys]


def _grounding_provenance(model: KnowledgeCBM) -> dict:
    """What the concept layer was fitted on: annotation datasets and their concepts, probe CV AUROC, flags."""
    from medcbm.methods.cbm import probe_summary

    sources = {k: v for p in model.grounder.leaves() for k, v in (getattr(p, "sources_", None) or {}).items()}
    return {"kind": model.grounder.kind, "sources": sources or None, **probe_summary(model.grounder)}


def evaluate_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, split: str | None = None, cache_dir=None,
                 progress: bool = True) -> dict:
    """Accuracy/AUROC/ECE with CIs and per-subgroup results of a saved model (or adaptation) on a labelled manifest.

    Args:
        split: score only the manifest's images that formed this split at training (``test``, ``val``, or a
            named test set), found by content hash — e.g. the test set of an automatic split.
    """
    model, meta = load_model(model_dir)
    spec = backbone_from_meta(meta)
    if split is None:
        mapped_labels(manifest, meta)  # a bad label is reported before any image is read
    feats = extract_features(manifest, spec, cache_dir=cache_dir, progress=progress)
    X, manifest = feats.X, feats.manifest
    if split is not None:
        keep = split_rows(meta, split, feats.keys, source=manifest.source)
        X, manifest = X[keep], manifest.subset(keep)
    manifest, y = mapped_labels(manifest, meta)
    scope = assess_scope(model, meta, manifest.image_paths(), X)
    proba = model.predict_proba(X, model_groups(model, manifest.frame, meta))
    res = split_metrics(y, proba)
    # out-of-scope images are scored with the rest (the user asked for this manifest) and counted here
    res["scope"] = scope_counts(scope)
    res["subgroups"] = subgroup_metrics(y, proba, manifest.frame)
    res["model"] = Path(model_dir).name
    res["split"] = split or "the whole manifest"
    return res


def split_rows(meta: dict, split: str, keys: list[str], *, source=None) -> np.ndarray:
    """Rows of a manifest (by image content hash) that formed ``split`` when the model was trained.

    Raises:
        ConfigError: the model did not record that split (the message lists the ones it did).
        DataError: none of the manifest's images belong to it.
    """
    stored = ((meta.get("provenance") or {}).get("split_image_sha256")) or {}
    if split not in stored:
        have = ", ".join(stored) or "none (trained before medcbm recorded them; retrain to get them)"
        raise ConfigError(f"--split {split}: the model records the images of these splits: {have}")
    want = set(stored[split])
    keep = np.flatnonzero([k in want for k in short_keys(keys)])
    if not len(keep):
        raise DataError(f"none of this manifest's images were in the model's {split} split; pass the manifest the "
                        "model was trained from", path=source)
    if len(keep) < len(want):
        logger.warning("%d of the %d images of the %s split were found in the manifest; scoring those",
                       len(keep), len(want), split)
    return keep


def predict_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, cache_dir=None, top_k: int = 3,
                site: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Per-image class probabilities, concept probabilities and the top concept contributions (base model or
    adaptation folder), with the image's scope verdict (:mod:`medcbm.bottleneck.scope`): ``in_scope``,
    ``scope_reason`` (empty when in scope) and ``ood_score``, its feature distance to the training images over
    the limit calibrated on held-out images (above 1: unlike them; absent for models saved before medcbm
    stored the summary). ``site``: every image's site for a site-adjusted model, instead of the manifest's
    column (``"unknown"``: no adjustment)."""
    model, meta = load_model(model_dir)
    feats = extract_features(manifest, backbone_from_meta(meta), cache_dir=cache_dir, progress=progress)
    X, manifest = feats.X, feats.manifest
    scope = assess_scope(model, meta, manifest.image_paths(), X)
    groups = model_groups(model, manifest.frame, meta, site=site)
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
        rec.update(in_scope=scope[i].in_scope, scope_reason=scope[i].reason)
        if scope[i].ood_score is not None:
            rec["ood_score"] = scope[i].ood_score
        rows.append(rec)
    return pd.DataFrame(rows)
