"""Assemble the labelled splits ``medcbm train`` fits on: a protocol, a manifest's split column, an automatic
patient-disjoint split, or separate train/val manifests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medcbm._io import sha256_file, sha256_text
from medcbm.bottleneck.metadata import nuisance_groups_of
from medcbm.data.manifest import Manifest, SkipLog, load_manifest
from medcbm.errors import ConfigError, DataError
from medcbm.workflows.config import DataConfig

logger = logging.getLogger(__name__)

SPLIT_VALUES = ("train", "val", "test")


@dataclass
class TrainingData:
    """Labelled manifests per split (``train``, ``val``, then test sets), their class indices and provenance.

    Attributes:
        groups: nuisance group per row of every split (balancing, nuisance adjustment).
        nuisance: ``{"column": ..., "groups": {value: group} | None}``: how a manifest row's group is found
            (saved with the model so predictions on new manifests find the same groups).
        provenance: what the data was (hashes, not paths or ids: artifacts are shared).
    """

    classes: list[str]
    label_map: dict[str, list[str]]
    manifests: dict[str, Manifest]
    y: dict[str, np.ndarray]
    groups: dict[str, np.ndarray]
    nuisance: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def _read(path: str) -> Manifest:
    return load_manifest(path).check_files()


def _label_map(cfg: DataConfig, labels: pd.Series) -> dict[str, list[str]]:
    if cfg.label_map:
        return {c: [str(r) for r in raws] for c, raws in cfg.label_map.items()}
    values = sorted(labels.astype(str).unique())
    if len(values) < 2:
        raise DataError(f"the training data has a single label {values}: a classifier needs at least two")
    return {v: [v] for v in values}


def _map(m: Manifest, label_map: dict[str, list[str]], name: str) -> tuple[Manifest, np.ndarray, dict[str, int]]:
    """Rows whose label the map covers, their class indices, and the count per label the map leaves out."""
    raw_to = {r: i for i, raws in enumerate(label_map.values()) for r in raws}
    y = m.frame["label"].map(raw_to)
    keep = np.flatnonzero(y.notna().to_numpy())
    if not len(keep):
        raise DataError(f"no {name} row has a label in the label map {label_map}", path=m.source, field="label")
    unmapped = {str(k): int(v) for k, v in m.frame["label"][y.isna()].astype(str).value_counts().items()}
    return m.subset(keep), y.iloc[keep].astype(int).to_numpy(), unmapped


def _check_unmapped(dropped: dict[str, dict[str, int]], parts: dict[str, Manifest], drop: bool) -> None:
    """Rows outside the label map are an error with the count per label, or (``drop``) a warning per split."""
    total: dict[str, int] = {}
    for counts in dropped.values():
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    if not total:
        return
    listing = ", ".join(f"{k!r}: {v}" for k, v in sorted(total.items(), key=lambda kv: -kv[1]))
    n, of = sum(total.values()), sum(len(m) for m in parts.values())
    if not drop:
        raise DataError(f"{n} of {of} rows have labels outside the label map ({listing}); add them to "
                        "data.label_map, or set data.drop_unmapped: true (train: --drop-unmapped) to leave them out",
                        path=parts["train"].source, field="label")
    for s, counts in dropped.items():
        if counts:
            logger.warning("%s split: dropped %d of %d rows whose labels are outside the label map (%s)", s,
                           sum(counts.values()), len(parts[s]), ", ".join(f"{k!r}: {v}" for k, v in counts.items()))


def _from_column(m: Manifest, cfg: DataConfig) -> dict[str, Manifest]:
    col = cfg.split_column
    if col not in m.frame.columns:
        raise DataError(f"manifest has no '{col}' column; add one (train/val/test per row), set "
                        "data.split_column, or use `split: auto`", path=m.source, field=col)
    vals = m.frame[col].astype(str).str.strip().str.lower()
    bad = ~vals.isin(SPLIT_VALUES)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"split value {m.frame[col].iloc[i]!r} is not one of {list(SPLIT_VALUES)}",
                        path=m.source, row=i + 1, field=col)
    out = {s: m.subset(np.flatnonzero((vals == s).to_numpy())) for s in SPLIT_VALUES}
    for s in ("train", "val"):
        if not len(out[s]):
            raise DataError(f"no row has {col} = {s}", path=m.source, field=col)
    return {k: v for k, v in out.items() if len(v)}


def _auto(m: Manifest, cfg: DataConfig) -> dict[str, Manifest]:
    """Seeded split of whole ``group_by`` groups (patients) into train/val/test."""
    if cfg.group_by not in m.frame.columns:
        raise ConfigError(f"data.group_by: the manifest has no column '{cfg.group_by}'")
    groups = m.frame[cfg.group_by].astype(str).to_numpy()
    pats = np.unique(groups)
    np.random.default_rng(cfg.seed).shuffle(pats)
    n_test, n_val = int(round(len(pats) * cfg.test_frac)), max(1, int(round(len(pats) * cfg.val_frac)))
    part = {"test": pats[:n_test], "val": pats[n_test:n_test + n_val], "train": pats[n_test + n_val:]}
    return {s: m.subset(np.flatnonzero(np.isin(groups, p))) for s, p in part.items() if len(p)}


def _check_disjoint(manifests: dict[str, Manifest]) -> None:
    """An image in two splits (same id or same file) is an error; a patient in two splits is a warning."""
    seen: dict[tuple[str, str], str] = {}
    patients: dict[str, set] = {}
    for s, m in manifests.items():
        paths = [str(p) for p in m.image_paths()]
        for row, (sid, path) in enumerate(zip(m.frame["id"], paths)):
            for field_, key in (("id", sid), ("image", path)):
                other = seen.setdefault((field_, key), s)
                if other != s:
                    raise DataError(f"this image is in both the {other} and the {s} split; an image must be in one "
                                    "split only (remove it from one)", path=m.source, row=row + 1, field=field_)
        patients[s] = set(m.frame["patient_id"])
    names = list(patients)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if patients[a] & patients[b]:
                logger.warning("%d patients have images in both the %s and the %s split; results may be optimistic",
                               len(patients[a] & patients[b]), a, b)


def training_data(cfg: DataConfig, *, data_root=None) -> TrainingData:
    """The labelled splits the config describes, label-mapped, checked and hashed."""
    if cfg.protocol:
        return _protocol_data(cfg, data_root)
    from medcbm.data.importers import import_dataset

    if cfg.train_manifest:
        parts = {"train": _read(cfg.train_manifest), "val": _read(cfg.val_manifest)}
        source = {"kind": "manifests", "sha256": {s: sha256_file(p) for s, p in
                                                  (("train", cfg.train_manifest), ("val", cfg.val_manifest))}}
    else:
        m = import_dataset(cfg.dataset, data_root) if cfg.dataset else _read(cfg.manifest)
        parts = _from_column(m, cfg) if cfg.split == "column" else _auto(m, cfg)
        source = {"kind": f"{'dataset' if cfg.dataset else 'manifest'}, split: {cfg.split}",
                  **({"dataset": cfg.dataset} if cfg.dataset else {"sha256": sha256_file(cfg.manifest)})}
    for name, path in cfg.test_manifests.items():
        parts[name] = _read(path)
    _check_disjoint(parts)
    label_map = _label_map(cfg, parts["train"].frame["label"])
    manifests, y, dropped = {}, {}, {}
    for s, m in parts.items():
        manifests[s], y[s], dropped[s] = _map(m, label_map, f"{s} split")
    _check_unmapped(dropped, parts, cfg.drop_unmapped)
    for s in ("train", "val"):
        if len(np.unique(y[s])) < 2:
            raise DataError(f"the {s} split holds a single class after the label map; it needs at least two "
                            "(adjust the split or the label map)", path=manifests[s].source, field="label")
    nuisance = {"column": cfg.balance_column, "groups": None}
    groups = {s: nuisance_groups_of(m.frame, nuisance) for s, m in manifests.items()}
    return TrainingData(list(label_map), label_map, manifests, y, groups, nuisance,
                        {"source": source, "seed": cfg.seed, "split_hash": split_hash(manifests),
                         "counts": {s: np.bincount(v, minlength=len(label_map)).tolist() for s, v in y.items()},
                         **({"dropped_unmapped": {s: d for s, d in dropped.items() if d}} if any(dropped.values()) else {})})


def split_hash(manifests: dict[str, Manifest]) -> str:
    """Hash of the ids in each split (stored with trained models, instead of the ids themselves)."""
    return sha256_text(*[f"{k}:{','.join(sorted(m.frame['id']))}" for k, m in manifests.items()])[:16]


def _protocol_data(cfg: DataConfig, data_root) -> TrainingData:
    from medcbm.protocols import build_splits, load_protocol, load_protocol_manifest, nuisance_groups

    proto = load_protocol(cfg.protocol)
    sp = build_splits(load_protocol_manifest(proto, data_root, SkipLog()), proto, cfg.seed)
    manifests = {s: sp.manifest.subset(idx) for s, idx in sp.index.items()}
    y = {s: sp.y[idx] for s, idx in sp.index.items()}
    split = proto.split
    nuisance = {"column": split.nuisance,
                "groups": {v: g for g, vals in split.groups.items() for v in vals} if hasattr(split, "groups") else None}
    groups = {s: nuisance_groups(proto, m.frame) for s, m in manifests.items()}
    return TrainingData(proto.classes, proto.label_map, manifests, y, groups, nuisance,
                        {"source": {"kind": "protocol", "protocol": proto.name}, "seed": cfg.seed,
                         "split_hash": sp.fingerprint(), "counts": sp.counts()})
