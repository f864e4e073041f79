"""Split builders: KnoBo-style confounded splits and site hold-out, patient-disjoint, seeded."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medcbm._io import sha256_text
from medcbm.data.manifest import Manifest
from medcbm.errors import ConfigError
from medcbm.protocols.definitions import ConfoundedSplit, Protocol, SiteHoldoutSplit

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test_id", "test_ood")


@dataclass
class Splits:
    """Row positions (into the protocol-filtered manifest) per split, plus the class of every row."""

    manifest: Manifest
    y: np.ndarray
    classes: list[str]
    index: dict[str, np.ndarray]
    seed: int

    def fingerprint(self) -> str:
        """Hash of the ids in each split (stored with trained models)."""
        ids = self.manifest.frame["id"].to_numpy()
        return sha256_text(*[f"{k}:{','.join(sorted(ids[v]))}" for k, v in self.index.items()])[:16]

    def counts(self) -> dict:
        out = {}
        for k, idx in self.index.items():
            out[k] = {c: int((self.y[idx] == i).sum()) for i, c in enumerate(self.classes)}
        return out


def apply_label_map(manifest: Manifest, protocol: Protocol) -> tuple[Manifest, np.ndarray]:
    """Keep rows whose raw label is mapped (and that pass the filters); return them with class indices."""
    f = manifest.frame
    keep = np.ones(len(f), bool)
    for col, allowed in protocol.filters.items():
        if col not in f.columns:
            raise ConfigError(f"filters.{col}: the manifest has no column '{col}' (columns: {list(f.columns)})")
        keep &= f[col].astype(str).str.strip().isin([a.strip() for a in allowed]).to_numpy()
    raw_to_cls = {r: i for i, (c, raws) in enumerate(protocol.label_map.items()) for r in raws}
    mapped = f["label"].map(raw_to_cls)
    keep &= mapped.notna().to_numpy()
    sub = manifest.subset(np.flatnonzero(keep))
    y = mapped[keep].astype(int).to_numpy()
    if len(np.unique(y)) < len(protocol.classes):
        present = {protocol.classes[i] for i in np.unique(y)}
        raise ConfigError(f"label_map: classes {sorted(set(protocol.classes) - present)} match no rows of {protocol.dataset}")
    return sub, y


def _take_patients(cand: pd.DataFrame, need: int, owner: dict, split: str, rng: np.random.Generator) -> list[int]:
    """Draw whole patients from ``cand`` until ``need`` images; patients owned by another split are skipped."""
    pats = np.array(cand["_g"].unique(), dtype=object)
    rng.shuffle(pats)
    taken: list[int] = []
    for p in pats:
        if len(taken) >= need:
            break
        if owner.get(p, split) != split:
            continue
        rows = cand.index[cand["_g"] == p].tolist()
        rows = rows[: need - len(taken)]  # a patient never straddles splits; surplus images stay unused
        owner[p] = split
        taken.extend(rows)
    return taken


def confounded_splits(manifest: Manifest, y: np.ndarray, protocol: Protocol, seed: int) -> Splits:
    """Build train/val/test_id (nuisance tied to class with ``ratio``) and test_ood (tie reversed)."""
    cfg = protocol.split
    assert isinstance(cfg, ConfoundedSplit)
    f = manifest.frame
    df = pd.DataFrame({"_y": y, "_grp": cfg.group_of(f[cfg.nuisance]), "_g": f[cfg.group_by].astype(str)})
    rng = np.random.default_rng(seed)
    groups = list(cfg.groups)
    owner: dict = {}
    index: dict[str, list[int]] = {s: [] for s in SPLITS}
    n_cls = len(protocol.classes)
    for split in SPLITS:
        size = getattr(cfg.sizes, split)
        per_class = [size // n_cls + (1 if c < size % n_cls else 0) for c in range(n_cls)]
        for c, cls in enumerate(protocol.classes):
            biased = cfg.bias[cls]
            other = groups[1] if biased == groups[0] else groups[0]
            r = cfg.ratio if split != "test_ood" else 1.0 - cfg.ratio
            n_b = int(round(per_class[c] * r))
            for grp, n in ((biased, n_b), (other, per_class[c] - n_b)):
                pool = df[(df["_y"] == c) & (df["_grp"] == grp)]
                pool = pool[~pool.index.isin([i for s in index.values() for i in s])]
                got = _take_patients(pool, n, owner, split, rng)
                if len(got) < n:
                    raise ConfigError(
                        f"split.sizes.{split}: needs {n} '{cls}' images from group '{grp}' but only {len(got)} "
                        f"are left (seed {seed}); lower the sizes or the ratio"
                    )
                index[split].extend(got)
    idx = {k: np.array(sorted(v), dtype=int) for k, v in index.items()}
    return Splits(manifest, y, protocol.classes, idx, seed)


def site_holdout_splits(manifest: Manifest, y: np.ndarray, protocol: Protocol, seed: int) -> Splits:
    """Hold out ``ood_values`` of the nuisance column as test_ood; split the rest by patient."""
    cfg = protocol.split
    assert isinstance(cfg, SiteHoldoutSplit)
    f = manifest.frame
    vals = f[cfg.nuisance].astype(str).str.strip()
    ood = vals.isin([v.strip() for v in cfg.ood_values]).to_numpy()
    if not ood.any():
        raise ConfigError(f"split.ood_values: none of {cfg.ood_values} occur in column '{cfg.nuisance}'")
    groups = f[cfg.group_by].astype(str).to_numpy()
    # a patient seen in-domain must not reappear out of domain
    ood_pats = set(groups[ood])
    ind = (~ood) & ~np.isin(groups, list(ood_pats))
    rng = np.random.default_rng(seed)
    pats = np.unique(groups[ind])
    rng.shuffle(pats)
    n = len(pats)
    n_test, n_val = int(round(n * cfg.test_id_frac)), int(round(n * cfg.val_frac))
    part = {"test_id": set(pats[:n_test]), "val": set(pats[n_test : n_test + n_val]), "train": set(pats[n_test + n_val :])}
    index = {k: np.flatnonzero(ind & np.isin(groups, list(v))) for k, v in part.items()}
    index["test_ood"] = np.flatnonzero(ood)
    for k, cap in cfg.max_per_class.items():  # a cap keeps the split's patients disjoint: it only drops rows
        index[k] = np.sort(np.concatenate([rng.permutation(index[k][y[index[k]] == c])[:cap]
                                           for c in np.unique(y[index[k]])]))
    for k, v in index.items():
        if len(np.unique(y[v])) < 2:
            raise ConfigError(f"split '{k}' of protocol {protocol.name} has a single class (seed {seed}); adjust fractions")
    index = {s: index[s] for s in SPLITS}
    return Splits(manifest, y, protocol.classes, index, seed)


def build_splits(manifest: Manifest, protocol: Protocol, seed: int) -> Splits:
    """Apply the protocol's label map and split design for one seed."""
    for key in ("nuisance", "group_by"):
        col = getattr(protocol.split, key)
        if col not in manifest.frame.columns:
            raise ConfigError(f"split.{key}: manifest has no column '{col}' (columns: {list(manifest.frame.columns)})")
    sub, y = apply_label_map(manifest, protocol)
    if isinstance(protocol.split, ConfoundedSplit):
        return confounded_splits(sub, y, protocol, seed)
    return site_holdout_splits(sub, y, protocol, seed)


def nuisance_groups(protocol: Protocol, frame: pd.DataFrame) -> np.ndarray:
    """The nuisance group of every row under a protocol (confounded splits name two groups of values)."""
    split = protocol.split
    if isinstance(split, ConfoundedSplit):
        return split.group_of(frame[split.nuisance], other="other").to_numpy()
    return frame[split.nuisance].astype(str).str.strip().to_numpy()
