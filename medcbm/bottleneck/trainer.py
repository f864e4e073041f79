"""Training the concept bottleneck: CE + KnoBo prior + optional elastic net, early-stopped on validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from medcbm._torch import single_threaded

logger = logging.getLogger(__name__)


class BottleneckConfig(BaseModel):
    """Hyper-parameters of the linear layer over concept probabilities.

    Attributes:
        prior_weight: λ of the KnoBo prior term ``λ · mean|tanh(W) − W_prior|`` (0 disables it).
        l1, l2: elastic-net penalties on ``W`` (Label-free CBM / PCBM style sparsity).
        class_balanced: weight the cross-entropy by inverse class frequency.
        lr, max_epochs, patience: full-batch Adam with early stopping on validation loss.
        standardize: centre/scale concept probabilities before the linear layer (weights stay comparable).
        sign_constraint: project ``W`` after every step so no weight contradicts a non-zero prior entry
            (``W * W_prior >= 0``): the hard version of the prior, so a concept can never be used against
            the clinical knowledge even when the training data's shortcut rewards it.
    """

    model_config = ConfigDict(extra="forbid")
    prior_weight: float = Field(1.0, ge=0)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(1e-3, ge=0)
    class_balanced: bool = True
    lr: float = Field(0.05, gt=0)
    max_epochs: int = Field(2000, gt=0)
    patience: int = Field(200, gt=0)
    standardize: bool = True
    sign_constraint: bool = False
    seed: int = 0


@dataclass
class FittedBottleneck:
    """Learned parameters: ``W (C, K)``, ``b (C,)`` and the input standardisation."""

    W: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    epochs: int
    val_loss: float


def _class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return len(y) / (n_classes * np.clip(counts, 1, None))


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
) -> FittedBottleneck:
    """Fit ``softmax(W · z(P) + b)`` where ``z`` standardises concept probabilities.

    Args:
        P, P_val: concept probabilities ``(n, K)``.
        y, y_val: class indices.
        n_classes: number of classes ``C``.
        prior: ``(C, K)`` in {-1, 0, +1} (KnoBo W_prior), or ``None``.
        cfg: hyper-parameters.
        sample_weight, val_weight: optional per-sample weights (e.g. nuisance-group balancing).
    """
    with single_threaded():  # a (C x K) layer is tiny: intra-op threads only add synchronisation cost
        return _fit(P, y, P_val, y_val, n_classes=n_classes, prior=prior, cfg=cfg, sw=sample_weight, vw=val_weight)


def _weighted_ce(logits, y, class_w, sample_w):
    loss = torch.nn.functional.cross_entropy(logits, y, weight=class_w, reduction="none")
    w = torch.ones_like(loss) if class_w is None else class_w[y]
    if sample_w is not None:
        w = w * sample_w
        loss = loss * sample_w
    return loss.sum() / w.sum()


def _fit(P, y, P_val, y_val, *, n_classes, prior, cfg, sw=None, vw=None) -> FittedBottleneck:
    torch.manual_seed(cfg.seed)
    mean = P.mean(0) if cfg.standardize else np.zeros(P.shape[1])
    scale = (P.std(0) + 1e-3) if cfg.standardize else np.ones(P.shape[1])
    Z = torch.as_tensor((P - mean) / scale, dtype=torch.float32)
    Zv = torch.as_tensor((P_val - mean) / scale, dtype=torch.float32)
    yt, yv = torch.tensor(np.asarray(y)), torch.tensor(np.asarray(y_val))  # copies: inputs may be read-only
    cw = torch.as_tensor(_class_weights(y, n_classes), dtype=torch.float32) if cfg.class_balanced else None
    swt = torch.as_tensor(sw, dtype=torch.float32) if sw is not None else None
    vwt = torch.as_tensor(vw, dtype=torch.float32) if vw is not None else None
    K = P.shape[1]
    W = torch.zeros(n_classes, K, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    prior_t = torch.as_tensor(prior, dtype=torch.float32) if prior is not None else None
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    best = (float("inf"), None, None, 0)
    bad = 0
    for epoch in range(cfg.max_epochs):
        opt.zero_grad()
        loss = _weighted_ce(Z @ W.T + b, yt, cw, swt)
        if prior_t is not None and cfg.prior_weight > 0:
            loss = loss + cfg.prior_weight * (torch.tanh(W) - prior_t).abs().mean()
        loss = loss + cfg.l1 * W.abs().sum() / W.numel() + cfg.l2 * (W**2).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if prior_t is not None and cfg.sign_constraint:
                W.mul_(((W * prior_t) >= 0).float())
            vl = float(_weighted_ce(Zv @ W.T + b, yv, cw, vwt))
        if vl < best[0] - 1e-5:
            best, bad = (vl, W.detach().clone(), b.detach().clone(), epoch + 1), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    vl, Wb, bb, ep = best
    return FittedBottleneck(Wb.numpy(), bb.numpy(), mean.astype(np.float32), scale.astype(np.float32), ep, vl)
