"""Sample weights that remove a known nuisance–label correlation from the training objective."""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_balance_weights(y: np.ndarray, groups: np.ndarray | pd.Series, *, max_weight: float = 10.0) -> np.ndarray:
    """Weights making every nuisance group equally represented within each class.

    With 90% of malignant images from one site, the rare (class, site) cells are up-weighted so the site no
    longer predicts the class in the weighted data. Weights are capped at ``max_weight`` (times the mean) so
    a handful of images cannot dominate, and normalised to mean 1.

    Args:
        y: class indices.
        groups: nuisance value per sample (e.g. the manifest's ``site``).
    """
    y = np.asarray(y)
    g = np.asarray(groups).astype(str)
    w = np.ones(len(y), dtype=float)
    for c in np.unique(y):
        in_c = y == c
        vals, counts = np.unique(g[in_c], return_counts=True)
        for v, n in zip(vals, counts):
            w[in_c & (g == v)] = in_c.sum() / (len(vals) * n)
    w = np.minimum(w / w.mean(), max_weight)
    return w / w.mean()


def protocol_groups(protocol, frame: pd.DataFrame) -> np.ndarray:
    """The nuisance group of every row under a protocol (confounded splits name two groups of values)."""
    split = protocol.split
    if hasattr(split, "group_of"):
        return split.group_of(frame[split.nuisance], other="other").to_numpy()
    return frame[split.nuisance].astype(str).str.strip().to_numpy()


def nuisance_balance(protocol, frames: dict[str, pd.DataFrame], y: dict[str, np.ndarray]) -> dict:
    """``sample_weight``/``val_weight`` balancing the protocol's nuisance groups in the train/val splits."""
    w = {s: group_balance_weights(y[s], protocol_groups(protocol, frames[s])) for s in ("train", "val")}
    return {"sample_weight": w["train"], "val_weight": w["val"]}


def balance_for(data) -> dict:
    """:func:`nuisance_balance` for a benchmark method input."""
    return nuisance_balance(data.context["protocol"], data.frames, data.y)
