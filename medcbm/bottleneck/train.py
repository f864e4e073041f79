"""Library entry points behind ``medcbm train``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medcbm._io import atomic_write_json, sha256_file, sha256_text
from medcbm.backbones import get_backbone_spec
from medcbm.backbones.features import extract_features
from medcbm.bottleneck.artifacts import backbone_from_meta, load_cbm, save_cbm
from medcbm.bottleneck.config import TrainConfig
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.methods import ph2_probes
from medcbm.bottleneck.priors import expert_prior_file, grounded_prior, load_prior_file
from medcbm.bottleneck.weights import nuisance_balance
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.errors import ConfigError, DataError
from medcbm.evaluation.metrics import split_metrics, subgroup_metrics
from medcbm.evaluation.protocols import load_protocol
from medcbm.evaluation.shift import load_protocol_manifest
from medcbm.evaluation.splits import build_splits

logger = logging.getLogger(__name__)


def _bank_path(ref: str) -> Path:
    from medcbm.concepts.schema import default_bank_path

    p = Path(ref)
    if p.suffix == ".json":
        return p
    modality, _, task = ref.partition("/")
    return default_bank_path(modality, task)


def _prior(cfg: TrainConfig, classes: list[str]) -> tuple[dict | None, dict]:
    """The class-concept prior the config asks for, and its provenance."""
    if cfg.prior is None:
        return None, {}
    if cfg.prior == "bank":
        from medcbm.concepts.schema import load_bank

        if not cfg.bank:
            raise ConfigError("prior: 'bank' needs a `bank` to mine the prior from")
        bp = _bank_path(cfg.bank)
        prior, prov = grounded_prior(load_bank(bp), classes)
        return prior, {"prior_source": "bank", "bank": str(bp), "bank_sha256": sha256_file(bp), **prov}
    path = expert_prior_file() if cfg.prior == "expert" else Path(cfg.prior)
    prior, refs = load_prior_file(path)
    unknown = sorted(set(prior) - set(classes))
    if unknown:
        raise ConfigError(f"prior {path} names classes {unknown}; the protocol's classes are {classes}")
    return prior, {"prior_source": str(path), "prior_sha256": sha256_file(path), "prior_references": refs}


def train_cbm(cfg: TrainConfig, *, data_root=None, cache_dir: str | os.PathLike | None = "runs/cache/features",
              progress: bool = True) -> tuple[KnowledgeCBM, dict]:
    """Train a CBM on the protocol's train/val split for ``cfg.seed`` and save it to the output folder."""
    proto = load_protocol(cfg.protocol)
    skips = SkipLog()
    manifest = load_protocol_manifest(proto, data_root, skips)
    sp = build_splits(manifest, proto, cfg.seed)
    spec = get_backbone_spec(cfg.grounding.backbone)
    ctx = {"data_root": data_root, "cache_dir": cache_dir, "progress": progress}
    probes = ph2_probes(ctx, spec.name, drop_weak=cfg.grounding.drop_weak)
    prior, bank_info = _prior(cfg, proto.classes)
    X, y = {}, {}
    for split, idx in sp.index.items():
        X[split] = extract_features(sp.manifest.subset(idx), spec, cache_dir=cache_dir, progress=progress).X
        y[split] = sp.y[idx]
    model = KnowledgeCBM(probes, classes=proto.classes, prior=prior, config=cfg.bottleneck,
                         concepts=cfg.grounding.concepts)
    frames = {s: sp.manifest.frame.iloc[sp.index[s]] for s in ("train", "val")}
    weights = nuisance_balance(proto, frames, y) if cfg.balance_nuisance else {}
    model.fit(X["train"], y["train"], X["val"], y["val"], **weights)
    metrics = {s: split_metrics(y[s], model.predict_proba(X[s]), n_boot=200) for s in ("val", "test_id", "test_ood")}
    provenance = {
        "config": cfg.model_dump(),
        "protocol": proto.name,
        "label_map": proto.label_map,
        "seed": cfg.seed,
        "split_hash": sp.fingerprint(),
        "data_hash": sha256_text(*sorted(sp.manifest.frame["id"]))[:16],
        "metrics": metrics,
        **bank_info,
    }
    out = cfg.resolved_out_dir()
    save_cbm(model, out, backbone=spec, provenance=provenance)
    atomic_write_json(out / "metrics.json", metrics)
    return model, provenance


def _mapped_labels(manifest: Manifest, meta: dict) -> tuple[Manifest, np.ndarray | None]:
    """Map raw labels to model classes with the stored label map; rows with unmapped labels are an error."""
    classes = meta["classes"]
    label_map = meta["provenance"].get("label_map") or {c: [c] for c in classes}
    raw_to = {r: i for i, c in enumerate(classes) for r in label_map.get(c, [c])}
    labels = manifest.frame["label"]
    bad = ~labels.isin(raw_to)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"label '{labels.iloc[i]}' is not one the model knows (classes {classes}, label map {label_map})",
                        path=manifest.source, row=i + 1, field="label")
    return manifest, labels.map(raw_to).to_numpy(int)


def evaluate_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, cache_dir=None, progress: bool = True) -> dict:
    """Accuracy/AUROC/ECE with CIs and per-subgroup results of a saved model on a labelled manifest."""
    model, meta = load_cbm(model_dir)
    spec = backbone_from_meta(meta)
    manifest, y = _mapped_labels(manifest, meta)
    X = extract_features(manifest, spec, cache_dir=cache_dir, progress=progress).X
    proba = model.predict_proba(X)
    res = split_metrics(y, proba)
    res["subgroups"] = subgroup_metrics(y, proba, manifest.frame)
    res["model"] = str(model_dir)
    return res


def predict_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, cache_dir=None, top_k: int = 3,
                progress: bool = True) -> pd.DataFrame:
    """Per-image class probabilities, concept probabilities and the top concept contributions."""
    model, meta = load_cbm(model_dir)
    X = extract_features(manifest, backbone_from_meta(meta), cache_dir=cache_dir, progress=progress).X
    proba = model.predict_proba(X)
    P = model.predict_concepts(X)
    contrib = model.contributions(X)
    pred = proba.argmax(1)
    rows = []
    for i in range(len(X)):
        c = contrib[i, pred[i]]
        order = np.argsort(-np.abs(c))[:top_k]
        rec = {"id": manifest.frame["id"].iloc[i], "prediction": model.classes[pred[i]]}
        rec.update({f"p_{k}": float(proba[i, j]) for j, k in enumerate(model.classes)})
        rec.update({f"concept_{k}": float(P[i, j]) for j, k in enumerate(model.concept_names_)})
        rec["top_concepts"] = "; ".join(f"{model.concept_names_[j]} {c[j]:+.2f}" for j in order)
        rows.append(rec)
    return pd.DataFrame(rows)
