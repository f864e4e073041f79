"""The model on a labelled set: weights beside the prior, concept importance, calibration, and concept-activation
distributions per site and subgroup with a drift statistic.

Drift is measured on the activations the bottleneck reads (after any site adjustment the model learned): what is
left is the shift a new site brings that the model does not already correct — the first thing to look at before
adapting to that site.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from medcbm.audit.explain import prior_agreement
from medcbm.metrics import age_band, expected_calibration_error

logger = logging.getLogger(__name__)

#: |standardised mean difference| of a concept between one group and the rest at which it is flagged
DRIFT_FLAG = 0.5
#: a group needs this many images to be compared (fewer give noisy means)
MIN_GROUP = 5


class _M(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConceptWeight(_M):
    """One concept's learned weights per class, beside the clinical prior."""

    concept: str
    weights: dict[str, float]
    prior: dict[str, int] | None
    agreement: dict[str, str]
    importance: float


class ReliabilityBin(_M):
    lower: float
    upper: float
    n: int
    confidence: float | None
    accuracy: float | None


class Calibration(_M):
    """Top-1 confidence calibration on the labelled set."""

    n: int
    accuracy: float
    ece: float
    bins: list[ReliabilityBin]


class GroupStats(_M):
    """Concept activations in one group (one site, one sex, one age band)."""

    column: str
    value: str
    n: int
    mean: dict[str, float]
    std: dict[str, float]
    drift: dict[str, float | None]


class DriftFlag(_M):
    column: str
    value: str
    concept: str
    smd: float


class ActivationView(_M):
    """Per group of each subgroup column: activation means and each concept's drift (SMD vs the other groups).

    Attributes:
        within_class: drift is averaged within classes (labels known), so a group's different class mix
            does not pass for drift.
        flags: (group, concept) pairs with ``|SMD| >= threshold``, largest first.
    """

    columns: list[str]
    within_class: bool
    threshold: float
    groups: list[GroupStats]
    flags: list[DriftFlag]


def concept_weights(model, P: np.ndarray | None = None) -> list[ConceptWeight]:
    """``W`` per concept beside the prior; importance = mean |margin contribution| on ``P`` (else |W| spread)."""
    classes, names = list(model.classes), list(model.concept_names_)
    W, prior = np.asarray(model.W_, float), getattr(model, "prior_", None)
    if P is not None and len(P):
        imp = np.abs(model.contributions_from_concepts(np.asarray(P, float))).mean((0, 1))
    else:
        imp = np.abs(W).mean(0)
    out = []
    for j, k in enumerate(names):
        pr = None if prior is None else {c: int(prior[a, j]) for a, c in enumerate(classes)}
        out.append(ConceptWeight(
            concept=k, weights={c: float(W[a, j]) for a, c in enumerate(classes)}, prior=pr,
            agreement={c: prior_agreement(float(W[a, j]), None if prior is None else float(prior[a, j]))
                       for a, c in enumerate(classes)},
            importance=float(imp[j])))
    return sorted(out, key=lambda w: -w.importance)


def calibration(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> Calibration:
    """ECE (the project's 15-bin definition) and a ``n_bins`` reliability diagram of top-1 confidence."""
    y, proba = np.asarray(y, int), np.asarray(proba, float)
    conf, correct = proba.max(1), (proba.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        m = idx == b
        bins.append(ReliabilityBin(lower=float(edges[b]), upper=float(edges[b + 1]), n=int(m.sum()),
                                   confidence=float(conf[m].mean()) if m.any() else None,
                                   accuracy=float(correct[m].mean()) if m.any() else None))
    return Calibration(n=len(y), accuracy=float(correct.mean()) if len(y) else float("nan"),
                       ece=expected_calibration_error(y, proba), bins=bins)


def _group_values(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    if column == "age_band":
        return frame["age"].astype(float).map(age_band).to_numpy() if "age" in frame.columns else None
    return frame[column].astype(str).to_numpy() if column in frame.columns else None


def _smd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Standardised mean difference per column (pooled SD; 0 where both are constant)."""
    pooled = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2) if len(a) > 1 and len(b) > 1 else np.zeros(a.shape[1])
    return np.where(pooled > 1e-9, (a.mean(0) - b.mean(0)) / np.maximum(pooled, 1e-9), 0.0)


def activation_view(model, P: np.ndarray, frame: pd.DataFrame, y: np.ndarray | None = None, *,
                    columns: Sequence[str] = ("site", "sex", "age_band"), threshold: float = DRIFT_FLAG,
                    label_for=None) -> ActivationView:
    """Activation statistics per group and each concept's drift: SMD of the group against all other images.

    Args:
        P: concept activations ``(n, K)``; ``frame``: the images' metadata rows (same order).
        y: class indices; when given, the SMD is averaged over classes with at least :data:`MIN_GROUP` images
            on both sides (within-class drift).
        label_for: maps ``(column, value)`` to the label shown (e.g. to hide site names); default: the value.
    """
    names = list(model.concept_names_)
    P = np.asarray(P, float)
    frame = frame.reset_index(drop=True)
    groups, flags, used = [], [], []
    for col in columns:
        vals = _group_values(frame, col)
        if vals is None or len(set(vals)) < 2:
            continue
        used.append(col)
        for v in sorted(set(vals)):
            m = vals == v
            if y is None:
                smd = _smd(P[m], P[~m]) if m.sum() >= MIN_GROUP and (~m).sum() >= MIN_GROUP else None
            else:
                parts = [_smd(P[m & (y == c)], P[~m & (y == c)]) for c in np.unique(y)
                         if (m & (y == c)).sum() >= MIN_GROUP and (~m & (y == c)).sum() >= MIN_GROUP]
                smd = np.mean(parts, 0) if parts else None
            label = label_for(col, v) if label_for else str(v)
            drift = {k: (None if smd is None else float(smd[j])) for j, k in enumerate(names)}
            groups.append(GroupStats(column=col, value=label, n=int(m.sum()),
                                     mean={k: float(P[m, j].mean()) for j, k in enumerate(names)},
                                     std={k: float(P[m, j].std()) for j, k in enumerate(names)}, drift=drift))
            flags += [DriftFlag(column=col, value=label, concept=k, smd=d) for k, d in drift.items()
                      if d is not None and abs(d) >= threshold]
    flags.sort(key=lambda f: -abs(f.smd))
    return ActivationView(columns=used, within_class=y is not None, threshold=threshold, groups=groups, flags=flags)
