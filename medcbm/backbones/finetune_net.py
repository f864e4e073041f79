"""An EfficientNet-style timm model cut in two for fine-tuning on cached activations.

``trunk`` (stem and the first ``train_from_block`` blocks) stays frozen and runs once per image view;
``top`` (the remaining blocks and the head convolution) is trained. Pooled features are assembled exactly
as :class:`~medcbm.backbones.loaders.TimmFeatureExtractor` does, so the fine-tuned weights, saved as an
ordinary state dict, give the same features through the normal extraction path.
"""

from __future__ import annotations

import torch
from torch import nn

from medcbm.errors import ConfigError

_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


class SplitNet(nn.Module):
    """``trunk(x) -> (activation, frozen pools)`` and ``top(activation, frozen pools) -> features``."""

    def __init__(self, model: nn.Module, train_from_block: int, pooling: str):
        super().__init__()
        if not all(hasattr(model, a) for a in _PARTS):
            raise ConfigError(f"fine-tuning needs an EfficientNet/MobileNet-style timm model (with {', '.join(_PARTS)})")
        n = len(model.blocks)
        if not 0 <= train_from_block < n:
            raise ConfigError(f"finetune.train_from_block must be in 0..{n - 1} for this model, got {train_from_block}")
        self.model, self.s, self.pooling = model, train_from_block, pooling
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the blocks from ``train_from_block`` on and the head convolution (and the stem at 0)."""
        m = self.model
        mods = ([m.conv_stem, m.bn1] if self.s == 0 else []) + list(m.blocks[self.s:]) + [m.conv_head, m.bn2]
        return [p for mod in mods for p in mod.parameters()]

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part: at block 0 the input itself (the stem trains too), else the activation after it."""
        m = self.model
        if self.s == 0:
            return x, x.new_zeros(len(x), 0)
        h = m.bn1(m.conv_stem(x))
        pools = []
        for block in m.blocks[:self.s]:
            h = block(h)
            pools.append(h.mean((2, 3)))
        return h, torch.cat(pools, 1)

    def top(self, h: torch.Tensor, frozen_pools: torch.Tensor) -> torch.Tensor:
        """The trained part, returning the backbone's pooled features."""
        m = self.model
        if self.s == 0:
            h = m.bn1(m.conv_stem(h))
        pools = [frozen_pools]
        for block in m.blocks[self.s:]:
            h = block(h)
            pools.append(h.mean((2, 3)))
        last = m.bn2(m.conv_head(h)).mean((2, 3))
        if self.pooling != "multilayer":
            return last
        return torch.cat(pools + [last], 1)


class ConceptHead(nn.Module):
    """Standardised features -> one logit per concept (the standardisation is fixed from the frozen features)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, n_concepts: int):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.linear = nn.Linear(len(mean), n_concepts)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear((f - self.mean) / self.std)


def dihedral(h: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a ``(B, C, H, W)`` map (``k`` in 0..7): free augmentation of cached maps."""
    if k & 4:
        h = h.transpose(2, 3)
    if k & 2:
        h = h.flip(2)
    if k & 1:
        h = h.flip(3)
    return h
