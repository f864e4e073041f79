"""Reading a manifest the way a saved model expects: its label map and its nuisance (site) groups."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from medcbm.errors import DataError

logger = logging.getLogger(__name__)


def nuisance_groups_of(frame: pd.DataFrame, nuisance: dict) -> np.ndarray | None:
    """Each row's nuisance group under a saved ``{"column", "groups"}`` spec (``None`` without the column)."""
    col, mapping = nuisance.get("column"), nuisance.get("groups")
    if not col or col not in frame.columns:
        return None
    values = frame[col].astype(str).str.strip()
    return (values.map(lambda v: mapping.get(v, "other")) if mapping else values).to_numpy()


def model_groups(model, frame: pd.DataFrame, meta: dict) -> np.ndarray | None:
    """The rows' nuisance groups, for a model that adjusts concepts per group (else ``None``)."""
    if getattr(model, "offsets_", None) is None:
        return None
    nuisance = (meta.get("provenance") or {}).get("nuisance") or {}
    groups = nuisance_groups_of(frame, nuisance)
    if groups is None:
        logger.warning("the manifest has no '%s' column: concept activations are not adjusted for the site",
                       nuisance.get("column"))
    return groups


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


# DICOM Modality values a model of each imaging domain can read; anything else is another kind of image
DOMAIN_MODALITIES = {"dermoscopy": {"XC", "VL", "OT", "SC", "DM", ""}, "chest_xray": {"CR", "DX", "OT", "SC", "X-RAY", ""}}  # X-RAY: the COVID-19 collection's metadata


def model_domain(meta: dict) -> str | None:
    """The imaging domain a saved model was built for (from its concept bank, e.g. ``dermoscopy``)."""
    bank = (((meta.get("recipe") or {}).get("config") or {}).get("bank")) or ""
    domain = str(bank).split("/")[0]
    return domain if domain in DOMAIN_MODALITIES else None


def warn_foreign_modality(frame: pd.DataFrame, meta: dict, source: str = "the manifest") -> int:
    """Warn loudly when rows carry a DICOM Modality the model's domain does not cover (a dermoscopy model
    given CT or MR images still outputs a confident "malignant"). Returns the number of such rows."""
    domain = model_domain(meta)
    if domain is None or "modality" not in frame.columns:
        return 0
    mods = frame["modality"].fillna("").astype(str).str.strip().str.upper()
    foreign = mods[~mods.isin(DOMAIN_MODALITIES[domain])]
    if len(foreign):
        logger.warning("%d of %d images in %s have a modality the model was not built for (%s; this is a %s model): "
                       "their predictions are meaningless", len(foreign), len(frame), source,
                       ", ".join(sorted(foreign.unique())), domain)
    return int(len(foreign))
