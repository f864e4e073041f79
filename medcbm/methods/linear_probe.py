"""Linear-probe baseline: logistic regression on backbone features, regularisation chosen on validation."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medcbm.bottleneck.weights import balance_weights
from medcbm.methods.registry import MethodInput, MethodOutput, register_method

logger = logging.getLogger(__name__)

C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)
LESION_CC = "efficientnet_lite0_lesion_cc"  # the dermoscopy CBM's preprocessing


class LinearProbe(BaseEstimator):
    """Standardise features, then multinomial logistic regression with C picked on a validation set.

    Attributes (after ``fit``): ``C_``, ``val_acc_``, ``scaler_``, ``model_``.
    """

    def __init__(self, C_grid=C_GRID, max_iter: int = 3000, class_weight: str | None = "balanced"):
        self.C_grid, self.max_iter, self.class_weight = C_grid, max_iter, class_weight

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
            sample_weight: np.ndarray | None = None, val_weight: np.ndarray | None = None) -> "LinearProbe":
        self.scaler_ = StandardScaler().fit(X)
        Xs, Xv = self.scaler_.transform(X), self.scaler_.transform(X_val)
        vw = np.ones(len(y_val)) if val_weight is None else np.asarray(val_weight, float)
        best = None
        for C in self.C_grid:
            cw = None if sample_weight is not None else self.class_weight
            m = LogisticRegression(C=C, max_iter=self.max_iter, class_weight=cw).fit(Xs, y, sample_weight=sample_weight)
            acc = float(((m.predict(Xv) == y_val) * vw).sum() / vw.sum())
            if best is None or acc > best[0] + 1e-12:
                best = (acc, C, m)
        self.val_acc_, self.C_, self.model_ = best
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(self.scaler_.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


def fit_probe_method(data: MethodInput, X: dict[str, np.ndarray] | None = None, *, balance: bool = False) -> MethodOutput:
    """Fit a :class:`LinearProbe` on ``X`` (default: the protocol's features) and predict every test split.

    Args:
        X: features per split name (``train``, ``val`` and each test split), e.g. from another backbone.
        balance: weight samples so the nuisance groups are balanced within each class.
    """
    X = X or {"train": data.train.X, "val": data.val.X, **{s: t.X for s, t in data.test.items()}}
    weights = balance_weights(data.train, data.val) if balance else {}
    probe = LinearProbe().fit(X["train"], data.train.y, X["val"], data.val.y, **weights)
    proba = {s: probe.predict_proba(X[s]) for s in ("val", *data.test)}
    return MethodOutput(proba, model=probe, info={"C": probe.C_, "val_acc": probe.val_acc_})


@register_method("linear_probe")
def linear_probe(data: MethodInput) -> MethodOutput:
    """KnoBo's baseline: a linear classifier straight on image features."""
    return fit_probe_method(data)


@register_method("linear_probe_balanced")
def linear_probe_balanced(data: MethodInput) -> MethodOutput:
    """The baseline given the same nuisance-group balancing as the CBM (a fair comparison)."""
    return fit_probe_method(data, balance=True)


@register_method("linear_probe_lesion_cc", datasets=("ham10000", "ph2", "derm7pt"))
def linear_probe_lesion_cc(data: MethodInput) -> MethodOutput:
    """The baseline on the CBM's preprocessing (colour constancy + automatic lesion crop): does the
    preprocessing alone remove the shortcut?"""
    from medcbm.bottleneck.grounders import GroundingContext, split_features

    c = data.context
    ctx = GroundingContext(data_root=c.data_root, cache_dir=c.cache_dir, progress=c.progress, memo=c.memo)
    splits = {"train": data.train, "val": data.val, **data.test}
    out = fit_probe_method(data, {s: split_features(v, LESION_CC, ctx) for s, v in splits.items()})
    out.info["backbone"] = LESION_CC
    return out
