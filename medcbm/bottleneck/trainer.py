"""Training the concept bottleneck: CE + KnoBo prior + elastic net.

Three solvers share one objective and one input map (:class:`~medcbm.bottleneck.estimator_math.InputMap`):

- ``path`` (default): a regularisation path, every strength fitted to convergence (L-BFGS-B), the strength
  chosen on validation by a confound-robust criterion (:mod:`medcbm.bottleneck.path`);
- ``adam``: full-batch Adam early-stopped on validation loss (the previous default; it tends to stop after a
  few epochs, when the weights have learned their signs but not their magnitudes);
- ``prior_vote``: no training — each class's logit is the mean of its prior-signed standardised
  activations (the floor a trained head must beat).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medcbm.bottleneck.estimator_math import InputMap, weight_spread
from medcbm.errors import ConfigError

logger = logging.getLogger(__name__)

#: L2 strengths of the default path (on standardised inputs, loss normalised to a weighted mean)
L2_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4)


class BottleneckConfig(BaseModel):
    """Hyper-parameters of the linear layer over concept probabilities.

    Attributes:
        solver: ``path`` (regularisation path to convergence), ``adam`` (early-stopped), ``prior_vote`` (no
            training; needs a prior).
        prior_weight: λ of the KnoBo prior term ``λ · mean|tanh(W) − W_prior|`` (0 disables it).
        l1, l2: elastic-net penalties on ``W``; with ``solver: path`` the one named by ``path_penalty`` is
            replaced by each strength of ``path_grid``.
        path_penalty, path_grid: which penalty the path varies, and its strengths (fitted strongest first).
        select: the path's validation criterion over (class × nuisance group) cells: ``group_balanced`` (mean
            cell loss), ``worst_group`` (largest cell loss), or ``weighted`` (the sample-weighted mean loss).
        clip_quantile: inputs are clipped to the ``q`` / ``1 − q`` quantiles of the training activations
            before standardising (0: their min and max), so an intervention to 0 or 1 stays in the range the
            head was trained on.
        class_balanced: weight the cross-entropy by inverse class frequency.
        lr, max_epochs, patience: ``adam`` only (full-batch, early stopping on validation loss).
        tol, max_iter: ``path`` only (L-BFGS-B gradient tolerance and iteration cap per strength).
        standardize: centre/scale concept probabilities before the linear layer (weights stay comparable).
        sign_constraint: no weight contradicts a non-zero prior entry (``W * W_prior >= 0``; box bounds for
            ``path``, a projection after each step for ``adam``): a concept can never be used against the
            clinical knowledge, so setting it present always moves the prediction the prior's way.
    """

    model_config = ConfigDict(extra="forbid")
    solver: Literal["path", "adam", "prior_vote"] = "path"
    prior_weight: float = Field(1.0, ge=0)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(1e-3, ge=0)
    path_penalty: Literal["l2", "l1"] = "l2"
    path_grid: list[float] = Field(default_factory=lambda: list(L2_GRID), min_length=1)
    select: Literal["group_balanced", "worst_group", "weighted"] = "group_balanced"
    clip_quantile: float = Field(0.0, ge=0, lt=0.5)
    class_balanced: bool = True
    lr: float = Field(0.05, gt=0)
    max_epochs: int = Field(2000, gt=0)
    patience: int = Field(200, gt=0)
    tol: float = Field(1e-6, gt=0)
    max_iter: int = Field(2000, gt=0)
    standardize: bool = True
    sign_constraint: bool = False
    seed: int = 0


@dataclass
class FittedBottleneck:
    """Learned parameters ``W (C, K)``, ``b (C,)``, the input map, and how they were found (``info``)."""

    W: np.ndarray
    b: np.ndarray
    inputs: InputMap
    info: dict = field(default_factory=dict)


def fit_bottleneck(
    P: np.ndarray,
    y: np.ndarray,
    P_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_classes: int,
    prior: np.ndarray | None,
    cfg: BottleneckConfig,
    sample_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
    val_groups=None,
) -> FittedBottleneck:
    """Fit ``softmax(W · z(P) + b)`` where ``z`` clips and standardises concept probabilities.

    Args:
        P, P_val: concept probabilities ``(n, K)``.
        y, y_val: class indices.
        n_classes: number of classes ``C``.
        prior: ``(C, K)`` in {-1, 0, +1} (KnoBo W_prior), or ``None``.
        cfg: hyper-parameters.
        sample_weight, val_weight: optional per-sample weights (e.g. nuisance-group balancing).
        val_groups: nuisance group per validation image, for the path's group criteria.

    Returns:
        The fit; ``info`` holds the solver, iterations or epochs, the chosen strength, the validation
        criterion along the path and the weight spread.
    """
    inputs = InputMap.fit(P, standardize=cfg.standardize, quantile=cfg.clip_quantile)
    Z, Zv = inputs(P), inputs(P_val)
    y, y_val = np.asarray(y, int), np.asarray(y_val, int)
    if cfg.solver == "prior_vote":
        W, b, info = _prior_vote(prior, n_classes)
    elif cfg.solver == "adam":
        W, b, info = _fit_adam(Z, y, Zv, y_val, n_classes=n_classes, prior=prior, cfg=cfg, sw=sample_weight,
                               vw=val_weight)
    else:
        W, b, info = _fit_path(Z, y, Zv, y_val, n_classes=n_classes, prior=prior, cfg=cfg, sw=sample_weight,
                               vw=val_weight, val_groups=val_groups)
    info = {"solver": cfg.solver, **info, "weight_spread": weight_spread(W),
            "input_range": "training quantiles" if cfg.clip_quantile else "training min-max",
            "clip_quantile": cfg.clip_quantile}
    logger.info("bottleneck (%s): %s", cfg.solver, {k: v for k, v in info.items() if k != "path"})
    return FittedBottleneck(W.astype(np.float32), b.astype(np.float32), inputs, info)


def _prior_vote(prior: np.ndarray | None, C: int) -> tuple[np.ndarray, np.ndarray, dict]:
    if prior is None or not np.any(prior):
        raise ConfigError("solver: prior_vote needs a non-zero class-concept prior (set `prior`)")
    # a mean, not a sum: the logits stay on the scale of one standardised activation
    W = np.asarray(prior, float) / np.clip(np.abs(prior).sum(1, keepdims=True), 1, None)
    return W, np.zeros(C), {"epochs": 0, "iterations": 0}


def _fit_path(Z, y, Zv, yv, *, n_classes, prior, cfg, sw, vw, val_groups) -> tuple[np.ndarray, np.ndarray, dict]:
    from medcbm.bottleneck.path import Penalty, regularisation_path, sample_weights

    a = sample_weights(y, n_classes, cfg.class_balanced, sw)
    fixed = {"l2": cfg.l2, "l1": cfg.l1, "prior_weight": cfg.prior_weight if prior is not None else 0.0}
    penalties = [Penalty(**{**fixed, cfg.path_penalty: float(s)}) for s in cfg.path_grid]
    best, path = regularisation_path(Z, y, Zv, yv, n_classes=n_classes, prior=prior, penalties=penalties, a=a,
                                     sign_constraint=cfg.sign_constraint, select=cfg.select, val_groups=val_groups,
                                     val_weight=vw, tol=cfg.tol, max_iter=cfg.max_iter)
    if not all(p.converged for p in path):
        logger.warning("bottleneck path: %d of %d strengths stopped before converging (raise max_iter)",
                       sum(not p.converged for p in path), len(path))
    info = {"iterations": best.iterations, "path_iterations": int(sum(p.iterations for p in path)),
            "converged": best.converged, "path_penalty": cfg.path_penalty,
            "chosen": {"l2": best.penalty.l2, "l1": best.penalty.l1, "prior_weight": best.penalty.prior_weight},
            "select": cfg.select, "val_criterion": round(best.criterion, 5),
            "path": [{cfg.path_penalty: getattr(p.penalty, cfg.path_penalty), "criterion": round(p.criterion, 5),
                      "iterations": p.iterations, "max_abs_w": round(float(np.abs(p.W).max()), 4)} for p in path]}
    return best.W, best.b, info


def _fit_adam(Z, y, Zv, yv, *, n_classes, prior, cfg, sw=None, vw=None) -> tuple[np.ndarray, np.ndarray, dict]:
    from medcbm._torch import single_threaded

    with single_threaded():  # a (C x K) layer is tiny: intra-op threads only add synchronisation cost
        return _adam(Z, y, Zv, yv, n_classes=n_classes, prior=prior, cfg=cfg, sw=sw, vw=vw)


def _weighted_ce(logits, y, class_w, sample_w):
    import torch

    loss = torch.nn.functional.cross_entropy(logits, y, weight=class_w, reduction="none")
    w = torch.ones_like(loss) if class_w is None else class_w[y]
    if sample_w is not None:
        w = w * sample_w
        loss = loss * sample_w
    return loss.sum() / w.sum()


def _adam(Z, y, Zv, yv, *, n_classes, prior, cfg, sw, vw) -> tuple[np.ndarray, np.ndarray, dict]:
    import torch

    torch.manual_seed(cfg.seed)
    Zt, Zvt = torch.as_tensor(Z, dtype=torch.float32), torch.as_tensor(Zv, dtype=torch.float32)
    yt, yvt = torch.tensor(y), torch.tensor(yv)  # copies: inputs may be read-only
    counts = np.bincount(y, minlength=n_classes).astype(float)
    cw = (torch.as_tensor(len(y) / (n_classes * np.clip(counts, 1, None)), dtype=torch.float32)
          if cfg.class_balanced else None)
    swt = torch.as_tensor(sw, dtype=torch.float32) if sw is not None else None
    vwt = torch.as_tensor(vw, dtype=torch.float32) if vw is not None else None
    W = torch.zeros(n_classes, Z.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    prior_t = torch.as_tensor(prior, dtype=torch.float32) if prior is not None else None
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    best, bad, epoch = (float("inf"), W.detach().clone(), b.detach().clone(), 0), 0, 0
    for epoch in range(cfg.max_epochs):
        opt.zero_grad()
        loss = _weighted_ce(Zt @ W.T + b, yt, cw, swt)
        if prior_t is not None and cfg.prior_weight > 0:
            loss = loss + cfg.prior_weight * (torch.tanh(W) - prior_t).abs().mean()
        loss = loss + cfg.l1 * W.abs().sum() / W.numel() + cfg.l2 * (W**2).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if prior_t is not None and cfg.sign_constraint:
                W.mul_(((W * prior_t) >= 0).float())
            vl = float(_weighted_ce(Zvt @ W.T + b, yvt, cw, vwt))
        if vl < best[0] - 1e-5:
            best, bad = (vl, W.detach().clone(), b.detach().clone(), epoch + 1), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    vl, Wb, bb, ep = best
    return Wb.numpy(), bb.numpy(), {"epochs": ep, "epochs_run": epoch + 1, "val_loss": round(vl, 5)}
