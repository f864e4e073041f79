"""The epoch loop of concept fine-tuning, shared by the local engine and the Ray Train workers.

Both engines call :func:`train_epochs` on the same :class:`LoopState`; only the :class:`Shard` differs. Locally
it is the whole batch; on Ray Train (:mod:`medcbm.backbones.finetune_ray`) every worker draws the same
permutation, view and flip from the same seeded generator, runs its rows ``rows[rank::world]`` of each batch and
the shard sums the gradients across workers. The loss of a slice is divided by the annotated-entry count of the
*whole* batch, so the summed gradient is the local full-batch gradient and the two engines give the same
weights (up to float rounding): the artifact's identity does not depend on the engine.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from medcbm.backbones.finetune_net import ConceptHead, SplitNet, dihedral
from medcbm.metrics import concept_aurocs

logger = logging.getLogger(__name__)


@dataclass
class Cache:
    """Frozen-trunk outputs per view: activations (half precision: memory) and the frozen blocks' pools."""

    maps: list[torch.Tensor]
    pools: list[torch.Tensor]


def features(net: SplitNet, cache: Cache, rows: np.ndarray, dev: torch.device, bs: int, view: int = 0) -> torch.Tensor:
    """Pooled features of ``rows`` through the trained part, in chunks of ``bs`` (no gradients)."""
    with torch.no_grad():
        out = [net.top(cache.maps[view][r].float().to(dev), cache.pools[view][r].to(dev)).cpu()
               for r in np.array_split(rows, max(1, int(np.ceil(len(rows) / bs))))]
    return torch.cat(out)


def masked_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor,
               count: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label BCE over annotated entries (NaN = not annotated), divided by ``count`` (default: theirs).

    A Ray worker passes the count of its whole batch, so the workers' losses add up to the batch's loss.
    """
    seen = ~torch.isnan(y)
    target = torch.nan_to_num(y, nan=0.0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    return (loss * seen).sum() / (seen.sum() if count is None else count).clamp(min=1)


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean concept AUROC over the concepts that can be scored (NaN when none)."""
    a = concept_aurocs(labels, scores)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


class Shard:
    """This process's part of the work: here all of it (the local engine); Ray Train's workers subclass it."""

    rank, world = 0, 1

    def sum_grads(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum ``params``' gradients and ``loss`` over the workers, in place; returns the summed loss."""
        return loss

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """The ``n`` rows whose every ``world``-th (from ``rank``) is ``part``, from all workers."""
        return part


@dataclass
class LoopState:
    """What the epoch loop reads and updates: the split net, the linear-probe head, the cache and the labels.

    Attributes:
        Y: ``(n, K)`` labels as a tensor (NaN = not annotated); ``labels`` the same as an array (for AUROC).
        tr, se: row indices of the training and select splits.
        lp_select: select AUROC of the linear probe the loop starts from (epoch 0 of the history).
    """

    net: SplitNet
    head: ConceptHead
    cache: Cache
    Y: torch.Tensor
    pw: torch.Tensor
    labels: np.ndarray
    tr: np.ndarray
    se: np.ndarray
    lp_select: float
    config: object  # FinetuneConfig (not imported: it lives in the module that imports this one)
    dev: torch.device


@dataclass
class LoopResult:
    """The history and the best states (the select AUROC's best epoch, 0 = the linear probe)."""

    history: list[dict]
    best_epoch: int
    model_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]


def _scores(s: LoopState, rows: np.ndarray, shard: Shard) -> torch.Tensor:
    """Concept logits of ``rows``; each worker scores its every ``world``-th row and the shard gathers them."""
    mine = rows[shard.rank::shard.world]
    with torch.no_grad():
        part = (s.head(features(s.net, s.cache, mine, s.dev, s.config.batch_size).to(s.dev)).cpu() if len(mine)
                else torch.zeros(0, s.Y.shape[1]))
    return shard.gather_rows(part, len(rows))


def _eval_loss(s: LoopState, shard: Shard) -> float:
    """Loss on the un-augmented training images: what "the loss falls" is checked on."""
    return round(float(masked_bce(_scores(s, s.tr, shard).to(s.dev), s.Y[s.tr].to(s.dev), s.pw.to(s.dev))), 4)


def _optimizer(s: LoopState) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on blocks and head, linear warm-up then cosine decay over every step of every epoch."""
    cfg = s.config
    opt = torch.optim.AdamW([{"params": s.net.trainable_parameters(), "lr": cfg.lr},
                             {"params": s.head.parameters(), "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    per_epoch = int(np.ceil(len(s.tr) / cfg.batch_size))
    steps = max(1, cfg.epochs * per_epoch)
    warm = int(cfg.warmup_epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(1, warm)) * 0.5 * (
        1 + np.cos(np.pi * min(1.0, max(0, i - warm) / max(1, steps - warm)))))
    return opt, sched


def _step(s: LoopState, rows: np.ndarray, view: int, flip: int, params: list[torch.nn.Parameter],
          shard: Shard) -> float:
    """One optimiser step on batch ``rows``; returns the batch's loss (summed over the workers' slices)."""
    mine = rows[shard.rank::shard.world]
    count = (~torch.isnan(s.Y[rows])).sum().to(s.dev)  # the whole batch's: slices' losses add up to its loss
    loss = torch.zeros((), device=s.dev)
    if len(mine):  # a batch smaller than the worker count leaves some workers without rows
        h = dihedral(s.cache.maps[view][mine].float().to(s.dev), flip)
        logits = s.head(s.net.top(h, s.cache.pools[view][mine].to(s.dev)))
        loss = masked_bce(logits, s.Y[mine].to(s.dev), s.pw.to(s.dev), count)
        loss.backward()
    loss = shard.sum_grads(params, loss.detach())
    return float(loss)


def train_epochs(s: LoopState, shard: Shard = Shard()) -> LoopResult:
    """Train with early stopping on the select AUROC; every worker takes the same decisions from the same draws."""
    cfg = s.config
    rng = np.random.default_rng(cfg.seed)  # the only source of the loop's randomness: identical on every worker
    history = [{"epoch": 0, "select_mean_auroc": round(s.lp_select, 4), "train_loss": None,
                "train_eval_loss": _eval_loss(s, shard)}]
    best = (s.lp_select, 0, copy.deepcopy(s.net.model.state_dict()), copy.deepcopy(s.head.state_dict()))
    opt, sched = _optimizer(s)
    params = [p for g in opt.param_groups for p in g["params"]]
    bad = 0
    for epoch in range(1, cfg.epochs + 1):
        te = time.perf_counter()
        losses = []
        order = rng.permutation(s.tr)
        for rows in np.array_split(order, max(1, int(np.ceil(len(order) / cfg.batch_size)))):
            view = int(rng.integers(cfg.views))
            flip = int(rng.integers(8))
            opt.zero_grad()
            losses.append(_step(s, rows, view, flip, params, shard))
            opt.step()
            sched.step()
        sel = mean_auc(s.labels[s.se], _scores(s, s.se, shard).numpy())
        history.append({"epoch": epoch, "select_mean_auroc": round(sel, 4), "train_loss": round(float(np.mean(losses)), 4),
                        "train_eval_loss": _eval_loss(s, shard), "seconds": round(time.perf_counter() - te, 1)})
        logger.info("finetune epoch %d: train loss %.4f, select mean AUROC %.4f", epoch, np.mean(losses), sel)
        if sel > best[0] + 1e-4:
            best, bad = (sel, epoch, copy.deepcopy(s.net.model.state_dict()), copy.deepcopy(s.head.state_dict())), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    return LoopResult(history, best[1], best[2], best[3])
