"""Baseline adapters that recalibrate the head or the concept scale instead of naming concepts.

* ``bias``: only the class biases are refitted on the support set;
* ``refit_signed`` / ``refit``: the whole concept -> class layer is refitted, pulled towards the source
  weights, with or without the clinical prior's signs as bounds;
* ``restandardise``: label-free — concept activations re-centred (and re-scaled) with the support set's
  own statistics, as label-free test-time normalisation does;
* ``site_offset``: the new site's within-class concept offsets, estimated from the labelled support set —
  what the model already does for the sites it was trained on.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from medcbm.adapt.base import Adapter, grid, register_adapter
from medcbm.adapt.edit import ConceptEdit
from medcbm.bottleneck.estimator import softmax
from medcbm.adapt.statistics import class_weights, site_shift, source_class_means
from medcbm.errors import ConfigError


def fit_head(Z: np.ndarray, y: np.ndarray, W0: np.ndarray, b0: np.ndarray, *, strength: float,
             bias_only: bool = False, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced cross-entropy plus ``strength / (2 n) * ||theta - theta0||^2`` by L-BFGS-B.

    ``prior`` (``(C, K)`` in {-1, 0, +1}) bounds each weight to the prior's sign where it has one.
    """
    C, K = W0.shape
    n = len(y)
    w = class_weights(y, C)
    Y = np.eye(C)[y]
    theta0 = b0.astype(float) if bias_only else np.concatenate([W0.ravel(), b0]).astype(float)

    def unpack(t):
        return (W0, t) if bias_only else (t[: C * K].reshape(C, K), t[C * K :])

    def loss(t):
        W, b = unpack(t)
        p = softmax(Z @ W.T + b)
        G = w[:, None] * (p - Y)
        f = -(w * np.log(np.clip(p[np.arange(n), y], 1e-12, None))).sum()
        d = t - theta0
        f += strength / (2 * n) * d @ d
        gb = G.sum(0)
        g = gb if bias_only else np.concatenate([(G.T @ Z).ravel(), gb])
        return f, g + strength / n * d

    bounds = None
    if prior is not None and not bias_only:
        pr = prior.ravel()
        bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in pr] + [(None, None)] * C
        theta0 = np.concatenate([np.where(pr > 0, np.maximum(W0.ravel(), 0), np.where(pr < 0, np.minimum(W0.ravel(), 0),
                                                                                        W0.ravel())), b0]).astype(float)
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 100, "gtol": 1e-4})
    W, b = unpack(res.x)
    return np.asarray(W, np.float32), np.asarray(b, np.float32)


class _HeadFitter(Adapter):
    """Shared by the head refits: candidates are pull strengths, strongest (mildest change) first."""

    strength: tuple = ()

    def candidates(self) -> list[dict]:
        return sorted(grid(("strength", self.strength)), key=lambda p: -p["strength"])

    def prepare(self, Z, y):
        return {"Z": Z, "y": y}


@register_adapter("bias", description="refit the class biases on the support set")
class BiasRecalibration(_HeadFitter):
    def __init__(self, model, *, strength=(0.1, 1.0, 10.0), guard: bool = True):
        super().__init__(model, guard=guard)
        self.strength = strength

    def make_edit(self, state, params) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        _, b = fit_head(state["Z"], state["y"], e.W, e.b, strength=params["strength"], bias_only=True)
        return ConceptEdit(e.scale, e.shift, e.W, b)


@register_adapter("refit_signed", description="refit the concept->class layer on the support set within the prior's signs")
class HeadRefit(_HeadFitter):
    """Refit of the linear head on the support set (pulled towards the source weights).

    Args:
        strength: pull towards the source weights (candidates).
        signed: bound every weight to the sign the clinical prior gives it.
    """

    def __init__(self, model, *, strength=(10.0, 100.0), signed: bool = True, guard: bool = True):
        super().__init__(model, guard=guard)
        self.strength, self.signed = strength, signed

    def make_edit(self, state, params) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        prior = getattr(self.model, "prior_", None) if self.signed else None
        W, b = fit_head(state["Z"], state["y"], e.W, e.b, strength=params["strength"], prior=prior)
        return ConceptEdit(e.scale, e.shift, W, b)


@register_adapter("refit", description="refit the concept->class layer on the support set, signs free")
class UnsignedHeadRefit(HeadRefit):
    def __init__(self, model, *, strength=(10.0, 100.0), signed: bool = False, guard: bool = True):
        super().__init__(model, strength=strength, signed=signed, guard=guard)


@register_adapter("restandardise", description="label-free: re-centre (and re-scale) concepts with the support statistics")
class Restandardise(Adapter):
    """Label-free re-standardisation; only the guard looks at the labels.

    Args:
        mode: ``mean`` (re-centre) and/or ``mean_std`` (re-centre and re-scale; the standard deviation is
            shrunk towards the source's with a prior weight of ``n0`` images).
    """

    def __init__(self, model, *, mode=("mean", "mean_std"), n0: float = 8.0, guard: bool = True):
        super().__init__(model, guard=guard)
        self.mode, self.n0 = mode, n0

    def candidates(self) -> list[dict]:
        for m in (self.mode if isinstance(self.mode, (list, tuple)) else (self.mode,)):
            if m not in ("mean", "mean_std"):
                raise ConfigError(f"mode '{m}' is not one of ('mean', 'mean_std')")
        return grid(("mode", self.mode))

    def prepare(self, Z, y):
        n = len(Z)
        sd = np.sqrt((n * Z.var(0) + self.n0) / (n + self.n0))  # source sd is 1 in standardised space
        return {"mean": Z.mean(0), "sd": sd.astype(np.float32), "shift": -Z.mean(0)}

    def make_edit(self, state, params) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        scale = 1.0 / state["sd"] if params["mode"] == "mean_std" else e.scale
        return ConceptEdit(scale.astype(np.float32), (-scale * state["mean"]).astype(np.float32), e.W, e.b)


@register_adapter("site_offset", description="subtract the new site's within-class concept offsets (labelled support)")
class SiteOffset(Adapter):
    def __init__(self, model, *, shrink=(0.5, 1.0), guard: bool = True):
        super().__init__(model, guard=guard)
        self.shrink = shrink

    def candidates(self) -> list[dict]:
        return grid(("shrink", self.shrink))

    def prepare(self, Z, y):
        return {"shift": -site_shift(Z, y, source_class_means(self.model))}

    def make_edit(self, state, params) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        return ConceptEdit(e.scale, (params["shrink"] * state["shift"]).astype(np.float32), e.W, e.b)
