"""Linear-probe baseline: logistic regression on backbone features, regularisation chosen on validation."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medcbm.evaluation.methods import MethodInput, MethodOutput, register_method

logger = logging.getLogger(__name__)

C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)


class LinearProbe:
    """Standardise features, then multinomial logistic regression with C picked on a validation set.

    Attributes (after ``fit``): ``C_``, ``val_acc_``, ``scaler_``, ``model_``.
    """

    def __init__(self, C_grid=C_GRID, max_iter: int = 3000, class_weight: str | None = "balanced"):
        self.C_grid, self.max_iter, self.class_weight = tuple(C_grid), max_iter, class_weight

    def get_params(self, deep: bool = True) -> dict:
        return {"C_grid": self.C_grid, "max_iter": self.max_iter, "class_weight": self.class_weight}

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


def fit_probe_method(data: MethodInput, X: dict[str, np.ndarray] | None = None, **weights) -> MethodOutput:
    """Fit a :class:`LinearProbe` on ``X`` (default: the protocol's features) and score every evaluated split.

    Args:
        weights: ``sample_weight``/``val_weight`` passed to :meth:`LinearProbe.fit`.
    """
    X = data.X if X is None else X
    probe = LinearProbe().fit(X["train"], data.y["train"], X["val"], data.y["val"], **weights)
    proba = {s: probe.predict_proba(X[s]) for s in ("val", "test_id", "test_ood")}
    return MethodOutput(proba, {"C": probe.C_, "val_acc": probe.val_acc_})


@register_method("linear_probe")
def linear_probe(data: MethodInput) -> MethodOutput:
    """KnoBo's baseline: a linear classifier straight on image features."""
    return fit_probe_method(data)


@register_method("linear_probe_balanced")
def linear_probe_balanced(data: MethodInput) -> MethodOutput:
    """The baseline given the same nuisance-group balancing as the CBM (a fair comparison)."""
    from medcbm.bottleneck.weights import balance_for

    return fit_probe_method(data, **balance_for(data))
