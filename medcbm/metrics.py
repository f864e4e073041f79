"""Metrics for shift benchmarks: accuracy, balanced accuracy, AUROC, ECE, bootstrap CIs, subgroups."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float((proba.argmax(1) == y).mean()) if len(y) else float("nan")


def balanced_accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (scikit-learn's definition).

    Computed directly: subgroups (one site, one age band) often hold a single class, where scikit-learn's
    version is right but warns on every call and floods the benchmark's console.
    """
    if not len(y):
        return float("nan")
    pred = proba.argmax(1)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUROC on the positive class, macro one-vs-rest for more classes; NaN with one class."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    present = np.unique(y)
    p = proba[:, present] / np.clip(proba[:, present].sum(1, keepdims=True), 1e-12, None)
    return float(roc_auc_score(np.searchsorted(present, y), p, multi_class="ovr", average="macro"))


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence with equal-width bins."""
    if not len(y):
        return float("nan")
    conf = proba.max(1)
    correct = (proba.argmax(1) == y).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def bootstrap_ci(y: np.ndarray, proba: np.ndarray, fn=accuracy, *, n: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``fn`` over test samples."""
    if not len(y):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        v = fn(y[i], proba[i])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def split_metrics(y: np.ndarray, proba: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """All headline metrics for one test split."""
    lo, hi = bootstrap_ci(y, proba, n=n_boot, seed=seed)
    out = {
        "n": int(len(y)),
        "acc": accuracy(y, proba),
        "acc_ci95": [lo, hi],
        "balanced_acc": balanced_accuracy(y, proba),
        "auroc": auroc(y, proba),
        "auroc_ci95": list(bootstrap_ci(y, proba, fn=auroc, n=n_boot, seed=seed)),
        "ece": expected_calibration_error(y, proba),
    }
    out["no_better_than_chance"] = no_better_than_chance(out)
    return out


def no_better_than_chance(m: dict) -> bool | None:
    """Whether the AUROC's 95 % interval in ``m`` (a :func:`split_metrics` result) reaches down to 0.5 (includes
    it, or lies below it) — the one place that judgement is made (``train`` output, the model card and the audit
    all call it); ``None`` without an interval."""
    ci = m.get("auroc_ci95") or [float("nan")] * 2
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in ci):
        return None
    return bool(ci[0] <= 0.5)


def chance_sentence(m: dict, where: str) -> str | None:
    """``"<where>: AUROC 0.485 [95 % interval 0.40, 0.57] includes 0.5: no better than chance"`` when
    :func:`no_better_than_chance`, else ``None``."""
    if not no_better_than_chance(m):
        return None
    lo, hi = m["auroc_ci95"]
    return (f"{where}: AUROC {m['auroc']:.3f} [95 % interval {lo:.3f}, {hi:.3f}] "
            f"{'includes' if hi >= 0.5 else 'lies below'} 0.5: no better than chance")


def age_band(age: float) -> str:
    if not np.isfinite(age):
        return "unknown"
    return "<40" if age < 40 else ("40-59" if age < 60 else "60+")


def subgroup_metrics(y: np.ndarray, proba: np.ndarray, frame: pd.DataFrame, columns=("site", "sex", "age_band")) -> dict:
    """Accuracy and counts per value of each subgroup column (``age_band`` is derived from ``age``)."""
    frame = frame.reset_index(drop=True)
    out: dict = {}
    for col in columns:
        if col == "age_band":
            vals = frame["age"].astype(float).map(age_band) if "age" in frame else None
        else:
            vals = frame[col].astype(str) if col in frame else None
        if vals is None:
            continue
        out[col] = {}
        for v in sorted(vals.unique()):
            m = (vals == v).to_numpy()
            out[col][v] = {"n": int(m.sum()), "acc": accuracy(y[m], proba[m]), "balanced_acc": balanced_accuracy(y[m], proba[m])}
    return out


def shift_summary(y_id: np.ndarray, p_id: np.ndarray, y_ood: np.ndarray, p_ood: np.ndarray) -> dict:
    """ID/OOD accuracy, gap = ID - OOD, avg = (ID + OOD) / 2."""
    a_id, a_ood = accuracy(y_id, p_id), accuracy(y_ood, p_ood)
    return {"id_acc": a_id, "ood_acc": a_ood, "gap": a_id - a_ood, "avg": (a_id + a_ood) / 2}


def mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {"mean": float(np.nanmean(v)) if len(v) else float("nan"),
            "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
            "per_seed": [float(x) for x in v]}


def concept_aurocs(labels: np.ndarray, scores: np.ndarray, *, min_positives: int = 2) -> np.ndarray:
    """AUROC of every concept column, ignoring NaN labels (not annotated).

    NaN where a column has fewer than ``min_positives`` positives or negatives among its annotated rows.
    """
    out = np.full(labels.shape[1], np.nan)
    for k in range(labels.shape[1]):
        seen = ~np.isnan(labels[:, k])
        y = labels[seen, k]
        if (y == 1).sum() >= min_positives and (y == 0).sum() >= min_positives:
            out[k] = roc_auc_score(y, scores[seen, k])
    return out


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (sound at 0 and n successes, unlike the normal one);
    ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
