"""Reading a manifest the way a saved model expects: its label map and its nuisance (site) groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medcbm.errors import ConfigError, DataError


def nuisance_groups_of(frame: pd.DataFrame, nuisance: dict) -> np.ndarray | None:
    """Each row's nuisance group under a saved ``{"column", "groups"}`` spec (``None`` without the column)."""
    col, mapping = nuisance.get("column"), nuisance.get("groups")
    if not col or col not in frame.columns:
        return None
    values = frame[col].astype(str).str.strip()
    return (values.map(lambda v: mapping.get(v, "other")) if mapping else values).to_numpy()


def model_groups(model, frame: pd.DataFrame, meta: dict, *, site: str | None = None) -> np.ndarray | None:
    """The rows' nuisance groups, for a model that adjusts concepts per group (else ``None``).

    Args:
        site: the site of every row instead of the manifest's column; ``"unknown"``: no adjustment.

    Raises:
        ConfigError: a site-adjusted model, no ``site``, and a manifest whose rows name no site.
    """
    offsets = getattr(model, "offsets_", None)
    if offsets is None:
        return None
    if site == "unknown":
        return np.full(len(frame), "unknown")
    nuisance = (meta.get("provenance") or {}).get("nuisance") or {}
    col = nuisance.get("column") or "site"
    if site is not None:
        frame = frame.assign(**{col: site})
    # a manifest fills a missing site with "unknown": that, or no column at all, names no site
    if col not in frame.columns or set(frame[col].astype(str)) <= {"unknown"}:
        raise ConfigError(f"this model adjusts concepts per site (trained on {', '.join(offsets.groups)}) and the "
                          f"images have no '{col}' column: pass their site (--site / site=...), or 'unknown' for no "
                          "adjustment")
    return nuisance_groups_of(frame, nuisance)


def label_indices(frame: pd.DataFrame, meta: dict) -> np.ndarray:
    """Class index per row under the model's stored label map, or a class name itself (a manifest written by
    ``predict`` or ``split-site``); -1 where the label is neither. A raw label the map assigns wins over a class
    name spelled the same."""
    classes = meta["classes"]
    label_map = (meta.get("provenance") or {}).get("label_map") or {c: [c] for c in classes}
    raw_to = {str(c): i for i, c in enumerate(classes)}
    raw_to.update({str(r): i for i, c in enumerate(classes) for r in label_map.get(c, [c])})
    return frame["label"].astype(str).map(lambda v: raw_to.get(v, -1)).to_numpy(int)


def mapped_labels(manifest, meta: dict) -> tuple:
    """``(manifest, class index per row)`` under the stored label map; an unmapped label is a one-line error."""
    y = label_indices(manifest.frame, meta)
    if (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        label_map = (meta.get("provenance") or {}).get("label_map") or {c: [c] for c in meta["classes"]}
        raise DataError(f"label '{manifest.frame['label'].iloc[i]}' is not one the model knows (classes "
                        f"{meta['classes']}, label map {label_map})", path=manifest.source, row=i + 1, field="label")
    return manifest, y
