"""Concept-level adapters (TF-TTI): mask confounding concepts, amplify under-activated discriminative ones.

They change only how the bottleneck reads a few named concepts; the weights, the probes and every other
concept stay as trained, so the adapted model's explanation differs from the base model's in exactly the
concepts listed in its adaptation file.
"""

from __future__ import annotations

import numpy as np

from medcbm.adapt.base import Adapter, grid, register_adapter
from medcbm.adapt.edit import ConceptEdit
from medcbm.adapt.statistics import balanced_mean, harm, site_shift, source_class_means, under_activation
from medcbm.errors import ConfigError

FILLS = ("source_mean", "support_mean", "zero")


def _top(stat: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` largest positive entries of ``stat`` (skipping ``exclude``)."""
    s = np.where(stat > 0, stat, -np.inf)
    if exclude is not None and len(exclude):
        s[exclude] = -np.inf
    order = np.argsort(-s)[:n]
    return order[np.isfinite(s[order])]


class _ConceptEditor(Adapter):
    """Shared pieces: statistics on the support subset and the masking/amplifying edit."""

    fill: str = "source_mean"

    def prepare(self, Z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        m = self.model
        C = len(m.classes)
        return {"harm": harm(Z, y, m.W_, m.b_), "under": under_activation(Z, y, m.W_, source_class_means(m)),
                "centre": balanced_mean(Z, y, C)}

    def edit_concepts(self, state: dict[str, np.ndarray], n_mask: int, n_amplify: int, factor: float) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        scale, shift = e.scale.copy(), e.shift.copy()
        masked = _top(state["harm"], n_mask)
        scale[masked] = 0.0
        if self.fill == "support_mean":  # the concept reads as the new site's average image: a constant
            shift[masked] = state["centre"][masked]
        elif self.fill == "zero":  # PCBM-style pruning: the raw concept score set to 0, not to its mean
            shift[masked] = -self.model.p_mean_[masked] / self.model.p_scale_[masked]
        amp = _top(state["under"], n_amplify, exclude=masked)
        # amplify about the new site's centre, so the average logit stays put and only separation grows
        scale[amp] = factor
        shift[amp] = (1.0 - factor) * state["centre"][amp]
        return ConceptEdit(scale, shift, e.W, e.b)


def _check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise ConfigError(f"fill '{fill}' is not one of {FILLS}")


@register_adapter("mask", description="mask the concepts that push support images towards a wrong class "
                  "(activation set to the source mean = weight zeroed)")
class ConfoundingMask(_ConceptEditor):
    """Confounding-concept masking.

    Args:
        model: fitted CBM.
        n_mask: how many concepts to mask (candidates for leave-one-out).
        fill: ``source_mean`` (the concept contributes nothing; identical to zeroing its weight column),
            ``support_mean`` (a constant: the new site's average activation) or ``zero`` (raw score 0).
        guard: keep the model unchanged when leave-one-out shows no gain.
    """

    def __init__(self, model, *, n_mask=(1, 2, 3, 4, 6), fill: str = "source_mean", guard: bool = True):
        super().__init__(model, guard=guard)
        self.n_mask, self.fill = n_mask, fill

    def candidates(self) -> list[dict]:
        _check_fill(self.fill)
        return grid(("n_mask", self.n_mask))

    def make_edit(self, state, params) -> ConceptEdit:
        return self.edit_concepts(state, params["n_mask"], 0, 1.0)


@register_adapter("mask_support_mean", description="confounding-concept masking with the new site's mean activation")
class SupportMeanMask(ConfoundingMask):
    def __init__(self, model, *, n_mask=(1, 2, 3, 4, 6), fill: str = "support_mean", guard: bool = True):
        super().__init__(model, n_mask=n_mask, fill=fill, guard=guard)


@register_adapter("prune", description="PCBM-style pruning: the harmful concepts' raw scores set to 0")
class PCBMPrune(ConfoundingMask):
    def __init__(self, model, *, n_mask=(1, 2, 3, 4, 6), fill: str = "zero", guard: bool = True):
        super().__init__(model, n_mask=n_mask, fill=fill, guard=guard)


@register_adapter("amplify", description="amplify discriminative concepts that fire too weakly at the new site")
class Amplify(_ConceptEditor):
    """Amplification of under-activated discriminative concepts (scaled about the new site's centre).

    Args:
        n_amplify: how many concepts to amplify.
        factor: the scale applied to their standardised activation.
    """

    def __init__(self, model, *, n_amplify=(1, 2, 4), factor=(1.5, 2.5), guard: bool = True):
        super().__init__(model, guard=guard)
        self.n_amplify, self.factor = n_amplify, factor

    def candidates(self) -> list[dict]:
        return sorted(grid(("n_amplify", self.n_amplify), ("factor", self.factor)),
                      key=lambda p: (p["n_amplify"], p["factor"]))

    def make_edit(self, state, params) -> ConceptEdit:
        return self.edit_concepts(state, 0, params["n_amplify"], params["factor"])


@register_adapter("tfti", description="TF-TTI: mask confounding concepts and amplify under-activated ones")
class TFTTI(_ConceptEditor):
    """Masking and amplification together, their sizes chosen jointly by leave-one-out."""

    def __init__(self, model, *, n_mask=(0, 1, 2, 4), n_amplify=(0, 1, 2, 4), factor=(1.5, 2.5),
                 fill: str = "source_mean", guard: bool = True):
        super().__init__(model, guard=guard)
        self.n_mask, self.n_amplify, self.factor, self.fill = n_mask, n_amplify, factor, fill

    def candidates(self) -> list[dict]:
        _check_fill(self.fill)
        seen, out = set(), []
        for p in grid(("n_mask", self.n_mask), ("n_amplify", self.n_amplify), ("factor", self.factor)):
            if p["n_amplify"] == 0:
                p = {**p, "factor": 1.0}
            key = tuple(p.values())
            if key not in seen and (p["n_mask"] or p["n_amplify"]):
                seen.add(key)
                out.append(p)
        return sorted(out, key=lambda p: (p["n_mask"] + p["n_amplify"], p["factor"]))

    def make_edit(self, state, params) -> ConceptEdit:
        return self.edit_concepts(state, params["n_mask"], params["n_amplify"], params["factor"])


@register_adapter("recalibrate_tfti", description="per-concept recalibration at the new site (within-class offsets of "
                  "the labelled support, shrunk towards the source), then TF-TTI on the recalibrated concepts")
class RecalibratedTFTTI(TFTTI):
    """TF-TTI on drift-corrected concepts.

    Each concept is first shifted by the support's mean within-class offset from the source class means, shrunk
    towards no shift (the source calibration) with the weight of ``n0`` images: ``shift = -n / (n + n0) *
    offset``. The harm and under-activation statistics are then computed, and masking and amplification applied,
    on the recalibrated activations. Setting ``n_mask = n_amplify = 0`` is the recalibration alone.
    """

    def __init__(self, model, *, n_mask=(0, 1, 2, 4), n_amplify=(0, 1, 2, 4), factor=(1.5, 2.5), n0: float = 8.0,
                 fill: str = "source_mean", guard: bool = True):
        super().__init__(model, n_mask=n_mask, n_amplify=n_amplify, factor=factor, fill=fill, guard=guard)
        self.n0 = n0

    def candidates(self) -> list[dict]:
        return [{"n_mask": 0, "n_amplify": 0, "factor": 1.0}] + super().candidates()

    def prepare(self, Z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        n = len(y)
        recal = (-(n / (n + self.n0)) * site_shift(Z, y, source_class_means(self.model))).astype(np.float32)
        return {**super().prepare(Z + recal, y), "recal": recal}

    def make_edit(self, state, params) -> ConceptEdit:
        e = ConceptEdit.identity(self.model)
        return ConceptEdit(e.scale, state["recal"], e.W, e.b).then(super().make_edit(state, params))
