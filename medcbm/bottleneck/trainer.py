"""Training the concept bottleneck: CE + KnoBo prior + optional elastic net, early-stopped on validation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)


class BottleneckConfig(BaseModel):
    """Hyper-parameters of the linear layer over concept probabilities.

    Attributes:
        prior_weight: λ of the KnoBo prior term ``λ · mean|tanh(W) − W_prior|`` (0 disables it).
        l1, l2: elastic-net penalties on ``W`` (Label-free CBM / PCBM style sparsity).
        class_balanced: weight the cross-entropy by inverse class frequency.
        lr, max_epochs, patience: full-batch Adam with early stopping on validation loss.
        standardize: centre/scale concept probabilities before the linear layer (weights stay comparable).
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

    def logits(self, P: np.ndarray) -> np.ndarray:
        return ((P - self.mean) / self.scale) @ self.W.T + self.b


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
) -> FittedBottleneck:
    """Fit ``softmax(W · z(P) + b)`` where ``z`` standardises concept probabilities.

    Args:
        P, P_val: concept probabilities ``(n, K)``.
        y, y_val: class indices.
        n_classes: number of classes ``C``.
        prior: ``(C, K)`` in {-1, 0, +1} (KnoBo W_prior), or ``None``.
        cfg: hyper-parameters.
    """
    torch.manual_seed(cfg.seed)
    mean = P.mean(0) if cfg.standardize else np.zeros(P.shape[1])
    scale = (P.std(0) + 1e-3) if cfg.standardize else np.ones(P.shape[1])
    Z = torch.as_tensor((P - mean) / scale, dtype=torch.float32)
    Zv = torch.as_tensor((P_val - mean) / scale, dtype=torch.float32)
    yt, yv = torch.as_tensor(y), torch.as_tensor(y_val)
    cw = torch.as_tensor(_class_weights(y, n_classes), dtype=torch.float32) if cfg.class_balanced else None
    K = P.shape[1]
    W = torch.zeros(n_classes, K, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    prior_t = torch.as_tensor(prior, dtype=torch.float32) if prior is not None else None
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    best = (float("inf"), None, None, 0)
    bad = 0
    for epoch in range(cfg.max_epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W.T + b, yt, weight=cw)
        if prior_t is not None and cfg.prior_weight > 0:
            loss = loss + cfg.prior_weight * (torch.tanh(W) - prior_t).abs().mean()
        loss = loss + cfg.l1 * W.abs().sum() / W.numel() + cfg.l2 * (W**2).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            vl = float(torch.nn.functional.cross_entropy(Zv @ W.T + b, yv, weight=cw))
        if vl < best[0] - 1e-5:
            best, bad = (vl, W.detach().clone(), b.detach().clone(), epoch + 1), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    vl, Wb, bb, ep = best
    return FittedBottleneck(Wb.numpy(), bb.numpy(), mean.astype(np.float32), scale.astype(np.float32), ep, vl)
