"""Concept-supervised fine-tuning of a registered backbone (``medcbm finetune``; :func:`finetune_concepts`).

The recipe, chosen for 2 CPU cores first and a GPU when there is one:

1. decode every annotated image once with the base backbone's preprocessing, plus ``views - 1``
   acquisition-style augmented draws (:mod:`medcbm.backbones.finetune_data`);
2. run the frozen trunk (stem and the blocks before ``train_from_block``) once per view and cache its
   activations: each epoch then costs only the trained blocks, and a random flip/rotation of the cached maps
   adds free augmentation;
3. fit a linear concept head on the frozen features (choosing its L2 on the ``select`` split), then train
   head and top blocks together (LP-FT: starting from a fitted head keeps early updates from distorting the
   pretrained features, which is what transfers to unseen sites); BatchNorm statistics stay frozen;
4. the loss is a masked multi-label BCE (NaN = not annotated, ignored) with per-concept positive weights;
5. early stopping on the mean concept AUROC of the ``select`` split; the held-out split
   (Derm7pt's official test split, PH2's hash-held-out images) is scored once, at the end.

Steps 1-3 run in this process; the epochs (:func:`~medcbm.backbones.finetune_loop.train_epochs`) run here too,
or data-parallel on Ray Train when the current engine is ``ray`` (:mod:`medcbm.backbones.finetune_ray`), with
the same maths, so the engine is not part of the artifact's identity.

HAM10000 diagnoses never enter: only concept annotations are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from medcbm.backbones._registry import BackboneSpec, get_backbone_spec
from medcbm.backbones.finetune_data import ConceptImages, augmented_views, decode_images
from medcbm.backbones.finetune_loop import Cache, LoopResult, LoopState, features, masked_bce, mean_auc, train_epochs
from medcbm.backbones.finetune_net import ConceptHead, SplitNet
from medcbm.backbones.loaders import create_backbone
from medcbm.data.concept_splits import HELDOUT, SELECT, TRAIN
from medcbm.engines import EngineConfig, current_engine
from medcbm.metrics import concept_aurocs

logger = logging.getLogger(__name__)


class FinetuneConfig(BaseModel):
    """Hyper-parameters of concept-supervised fine-tuning (all part of the artifact's identity).

    Attributes:
        base: registered backbone to start from (its preprocessing and pooling are kept).
        train_from_block: first trained block (0 = the whole network); earlier blocks are frozen and cached.
        epochs, patience: at most ``epochs``; stop after ``patience`` epochs without a better select AUROC.
        lr, head_lr, weight_decay: AdamW on the trained blocks and on the (already fitted) concept head; the
            head's rate is small because Adam moves every one of its thousands of inputs' weights at once.
        warmup_epochs: linear learning-rate warm-up before the cosine decay.
        batch_size: images per step.
        views: decoded views per image (1 = no augmentation beyond flips of the cached maps).
        head_l2_grid: L2 strengths tried for the linear-probe head on frozen features.
        min_positives: a concept needs this many positive training images to be trained on.
        max_pos_weight: cap of the per-concept positive weight (negatives / positives).
        seed: every random draw (views, batches, flips) follows it.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    base: str = "efficientnet_lite0_lesion_cc"
    train_from_block: int = Field(5, ge=0)
    epochs: int = Field(12, ge=0, le=200)
    patience: int = Field(3, ge=1)
    lr: float = Field(3e-4, gt=0)
    head_lr: float = Field(1e-4, gt=0)
    warmup_epochs: float = Field(1.0, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(32, ge=2)
    views: int = Field(3, ge=1, le=16)
    head_l2_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    min_positives: int = Field(5, ge=1)
    max_pos_weight: float = Field(10.0, ge=1)
    seed: int = 0
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")


@dataclass
class FinetuneResult:
    """What :func:`finetune_concepts` produced: the weights, the head, and the record of how."""

    spec: BackboneSpec
    state_dict: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    concept_names: list[str]
    record: dict = field(default_factory=dict)


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else name if name != "auto" else "cpu")


@torch.no_grad()
def _cache_trunk(net: SplitNet, images: ConceptImages, spec: BackboneSpec, views: int, cfg: FinetuneConfig,
                 dev: torch.device, progress: bool) -> Cache:
    from tqdm.auto import tqdm

    n = len(images.paths)
    maps: list[list[torch.Tensor]] = [[] for _ in range(views)]
    pools: list[list[torch.Tensor]] = [[] for _ in range(views)]
    chunks = np.array_split(np.arange(n), max(1, int(np.ceil(n / cfg.batch_size))))
    for j, rows in enumerate(tqdm(chunks, desc="finetune: decode + frozen trunk", disable=not progress)):
        train = images.split[rows] == TRAIN
        x = decode_images(images, rows, spec)
        for v, xv in enumerate(augmented_views(x[train] if views > 1 else x, views, cfg.seed * 100_003 + j)):
            if v == 0:
                h, p = net.trunk(x.to(dev))
                h0, p0 = h.half().cpu(), p.float().cpu()
                maps[0].append(h0)
                pools[0].append(p0)
                continue
            # only training images need augmented views; the others keep the original's activations
            h, p = h0.clone(), p0.clone()
            if train.any():
                ht, pt = net.trunk(xv.to(dev))
                h[torch.as_tensor(train)], p[torch.as_tensor(train)] = ht.half().cpu(), pt.float().cpu()
            maps[v].append(h)
            pools[v].append(p)
    return Cache([torch.cat(m) for m in maps], [torch.cat(p) for p in pools])


def _fit_linear_head(F: torch.Tensor, Y: torch.Tensor, Fs: torch.Tensor, Ys: np.ndarray, pw: torch.Tensor,
                     cfg: FinetuneConfig) -> tuple[ConceptHead, float, float]:
    """Linear probe on frozen features, L2 chosen on the select split; returns ``(head, l2, select AUROC)``."""
    best = None
    for l2 in cfg.head_l2_grid:
        sd = F.std(0)
        # a floor on the scale: a feature nearly constant on the training images would turn a small change of
        # the fine-tuned blocks into a huge standardised input (and the loss into noise)
        head = ConceptHead(F.mean(0), sd.clamp(min=float(sd.median())), Y.shape[1])
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(300):  # full batch: a few hundred steps converge a linear layer
            opt.zero_grad()
            loss = masked_bce(head(F), Y, pw) + l2 * (head.linear.weight ** 2).sum() / Y.shape[1]
            loss.backward()
            opt.step()
        with torch.no_grad():
            auc = mean_auc(Ys, head(Fs).numpy())
        if best is None or auc > best[2]:
            best = (head, l2, auc)
    return best


def finetune_concepts(images: ConceptImages, config: FinetuneConfig = FinetuneConfig(), *,
                      progress: bool = True) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``images``' concept labels (see the module docstring for the recipe).

    The epochs run on Ray Train when the current engine (:func:`~medcbm.engines.use_engine`) is ``ray``.

    Returns:
        the fine-tuned weights (a full state dict of the base architecture), the concept head, and a record
        with per-epoch history and per-concept held-out AUROC for the frozen linear head and the fine-tuned one.

    Raises:
        ConfigError: on Ray, a cluster too small for the workers (checked before any decoding).
    """
    engine = current_engine()
    if engine.engine != "ray":  # the local engine never imports Ray
        return _finetune(images, config, lambda state, spec: train_epochs(state), engine, progress)
    from medcbm.backbones.finetune_ray import ray_epochs

    with ray_epochs(engine) as run_epochs:  # connects and checks the cluster before the long decode
        return _finetune(images, config, run_epochs, engine, progress)


def _finetune(images: ConceptImages, config: FinetuneConfig, run_epochs: Callable[[LoopState, BackboneSpec], LoopResult],
              engine: EngineConfig, progress: bool) -> FinetuneResult:
    """:func:`finetune_concepts` with the epoch loop given (local or on Ray Train)."""
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    dev = _device(config.device)
    spec = get_backbone_spec(config.base)
    model = create_backbone(spec).model.to(dev).eval()  # eval: BatchNorm statistics stay the pretrained ones
    net = SplitNet(model, config.train_from_block, spec.pooling)
    tr, se, ho = images.rows(TRAIN), images.rows(SELECT), images.rows(HELDOUT)
    cache = _cache_trunk(net, images, spec, config.views, config, dev, progress)
    t_cache = time.perf_counter() - t0
    Y = torch.as_tensor(images.labels, dtype=torch.float32)
    pos = (Y[tr] == 1).sum(0).float()
    neg = (Y[tr] == 0).sum(0).float()
    pw = (neg / pos.clamp(min=1)).clamp(1.0, config.max_pos_weight)

    F_tr = features(net, cache, tr, dev, config.batch_size)
    F_se = features(net, cache, se, dev, config.batch_size)
    head, head_l2, lp_select = _fit_linear_head(F_tr, Y[tr], F_se, images.labels[se], pw, config)
    head = head.to(dev)
    with torch.no_grad():
        lp_held = head(features(net, cache, ho, dev, config.batch_size).to(dev)).cpu().numpy()  # frozen features
    state = LoopState(net, head, cache, Y, pw, images.labels, tr, se, lp_select, config, dev)
    t_train = time.perf_counter()
    loop = run_epochs(state, spec)
    t_train = time.perf_counter() - t_train
    net.model.load_state_dict(loop.model_state)
    head.load_state_dict(loop.head_state)
    with torch.no_grad():
        ft_held = head(features(net, cache, ho, dev, config.batch_size).to(dev)).cpu().numpy()
    record = {
        "best_epoch": loop.best_epoch, "epochs_run": len(loop.history) - 1, "history": loop.history, "head_l2": head_l2,
        "heldout": _heldout_report(images, ho, lp_held, ft_held),
        "seconds": {"decode_and_trunk": round(t_cache, 1), "epochs": round(t_train, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch_threads": torch.get_num_threads(),
        "engine": {"name": "local", "workers": 1} if engine.engine != "ray" else
        {"name": "ray", "workers": engine.workers, "cpus_per_worker": engine.cpus_per_worker,
         "gpus_per_worker": engine.gpus_per_worker},
    }
    sd = {k: v.detach().cpu().contiguous() for k, v in net.model.state_dict().items()}
    return FinetuneResult(spec, sd, {k: v.detach().cpu() for k, v in head.state_dict().items()}, images.names, record)


def _heldout_report(images: ConceptImages, ho: np.ndarray, frozen: np.ndarray, tuned: np.ndarray) -> dict:
    """Held-out AUROC per dataset and concept, frozen linear head vs fine-tuned, scored on ``ho`` rows only.

    A concept counts where its held-out rows of that dataset have at least 2 positives and 2 negatives.
    """
    out = {}
    for d in dict.fromkeys(images.dataset[ho].tolist()):
        m = images.dataset[ho] == d
        lab = images.labels[ho[m]]
        fz, ft = concept_aurocs(lab, frozen[m]), concept_aurocs(lab, tuned[m])
        ok = np.isfinite(ft)
        out[d] = {
            "split": "heldout (never trained on nor used to select)", "images": int(m.sum()),
            "concepts_scored": int(ok.sum()),
            "mean_auroc_frozen_linear": round(float(np.mean(fz[ok])), 4) if ok.any() else None,
            "mean_auroc_finetuned": round(float(np.mean(ft[ok])), 4) if ok.any() else None,
            "per_concept": {n: {"frozen_linear": round(float(a), 4), "finetuned": round(float(b), 4),
                                "positives": int(np.nansum(lab[:, k] == 1))}
                            for k, (n, a, b) in enumerate(zip(images.names, fz, ft)) if np.isfinite(b)},
        }
    return out
