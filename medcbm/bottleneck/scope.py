"""Is an image within a model's scope? One verdict per image, with its reason, for predictions, evaluations
and audits.

Three checks, in order; the reason names every one that fails:

1. **modality**: a DICOM's Modality must be one the model's imaging domain reads (dermoscopy: ``XC``
   external-camera photography, ``VL`` visible light, ``DMS`` dermoscopy; chest X-ray: ``CR``, ``DX``) or one
   its training DICOMs had. ``OT``/``SC`` (other, secondary capture) say nothing about what the image shows, and
   a DICOM without a Modality is not trusted either: both pass only when the model was trained on such files.
2. **colour**: a dermoscopy model reads colour photographs; a greyscale image (a MONOCHROME DICOM, a radiograph
   saved as JPEG) is out of scope.
3. **features**: the image's backbone features lie farther from the training images than the limit calibrated
   on held-out in-domain images (:mod:`medcbm.bottleneck.domain`; about 1 % of new in-domain images exceed it).

A model of an unknown domain (a user's own concept bank) has only the features check.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcbm.data.image_facts import ImageFacts, NO_MODALITY, read_image_facts

logger = logging.getLogger(__name__)

# DICOM Modality values each imaging domain's images carry
DOMAIN_MODALITIES = {"dermoscopy": frozenset({"XC", "VL", "DMS"}), "chest_xray": frozenset({"CR", "DX"})}
DOMAIN_WORDS = {"dermoscopy": "dermoscopy", "chest_xray": "chest X-ray"}  # as reasons and the model card say it
COLOUR_DOMAINS = frozenset({"dermoscopy"})
Check = Literal["modality", "colour", "features"]
CHECK_WORDS = {"modality": "a modality the model was not built for", "colour": "greyscale",
               "features": "unlike the training images"}


class ScopeVerdict(BaseModel):
    """One image's verdict: in scope, or not and why (the ``in_scope`` / ``scope_reason`` columns)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    in_scope: bool
    reason: str = ""
    checks_failed: list[Check] = []
    ood_score: float | None = None


def model_domain(meta: dict) -> str | None:
    """The imaging domain a saved model was built for (from its concept bank, e.g. ``dermoscopy``)."""
    bank = (((meta.get("recipe") or {}).get("config") or {}).get("bank")) or ""
    domain = str(bank).split("/")[0]
    return domain if domain in DOMAIN_MODALITIES else None


@dataclass(frozen=True)
class ScopeRules:
    """What a model reads: its domain, the DICOM modalities it accepts, whether it needs colour."""

    domain: str | None
    modalities: frozenset[str]
    needs_colour: bool
    calibrated: bool

    @classmethod
    def of(cls, model, meta: dict) -> "ScopeRules":
        """The rules of a saved model (the training DICOMs' modalities come from its provenance)."""
        domain = model_domain(meta)
        trained = set((meta.get("provenance") or {}).get("dicom_modalities") or [])
        fd = getattr(model, "feature_domain_", None)
        return cls(domain, frozenset(DOMAIN_MODALITIES.get(domain, frozenset()) | trained),
                   domain in COLOUR_DOMAINS, fd is not None and fd.summary.calibration == "validation")

    def judge(self, facts: ImageFacts, score: float | None) -> ScopeVerdict:
        """The verdict on one image from its facts and its feature-distance score (``None``: not scored)."""
        failed: list[Check] = []
        why: list[str] = []
        if facts.dicom and self.domain is not None and facts.modality not in self.modalities:
            failed.append("modality")
            what = "has no Modality" if facts.modality == NO_MODALITY else f"modality {facts.modality}"
            why.append(f"DICOM {what}, not a {DOMAIN_WORDS.get(self.domain, self.domain)} image "
                       f"({', '.join(sorted(self.modalities))})")
        if self.needs_colour and facts.colour is False:
            failed.append("colour")
            why.append(f"greyscale image ({facts.photometric or 'no colour'}); the model reads colour "
                       f"{self.domain} photographs")
        if score is not None and score > 1.0:
            failed.append("features")
            limit = "calibrated on held-out images" if self.calibrated else "of the training images"
            why.append(f"unlike the training images (feature distance {score:.2f}x the limit {limit})")
        return ScopeVerdict(in_scope=not failed, reason="; ".join(why), checks_failed=failed,
                            ood_score=None if score is None else round(float(score), 4))


def judge_images(rules: ScopeRules, domain, paths: Sequence, X: np.ndarray) -> list[ScopeVerdict]:
    """Verdicts for images under ``rules`` and a :class:`~medcbm.bottleneck.domain.FeatureDomain` (``None``:
    no feature check), reading each file's facts once."""
    scores = domain.scores(X) if domain is not None else [None] * len(X)
    return [rules.judge(read_image_facts(p, look_at_colour=rules.needs_colour), None if s is None else float(s))
            for p, s in zip(paths, scores)]


def assess_scope(model, meta: dict, paths: Sequence, X: np.ndarray) -> list[ScopeVerdict]:
    """Verdicts for images read for prediction, and one warning with the counts (no ids, no paths: it goes to
    shared logs).

    Args:
        model: a fitted or loaded CBM (or an adaptation, which has its base model's feature summary).
        meta: the model's ``model.json``.
        paths: the images' files, in the rows of ``X``.
        X: their backbone features ``(n, D)``, as extracted for prediction.
    """
    verdicts = judge_images(ScopeRules.of(model, meta), getattr(model, "feature_domain_", None), paths, X)
    summary = scope_counts(verdicts)
    if summary["out_of_scope"]:
        logger.warning("%d of %d images are outside the model's scope (%s): their predictions are not to be "
                       "trusted; see the in_scope and scope_reason columns", summary["out_of_scope"], len(verdicts),
                       check_counts(summary["by_check"]))
    return verdicts


def scope_counts(verdicts: Sequence[ScopeVerdict]) -> dict:
    """``{"n", "out_of_scope", "by_check": {check: n}}`` over verdicts (an image may fail several checks)."""
    by = Counter(c for v in verdicts for c in v.checks_failed)
    return {"n": len(verdicts), "out_of_scope": sum(not v.in_scope for v in verdicts),
            "by_check": {c: by[c] for c in CHECK_WORDS if by[c]}}


def check_counts(by_check: dict[str, int]) -> str:
    """``by_check`` of :func:`scope_counts` in words, e.g. ``"greyscale: 3; unlike the training images: 1"``
    (the same wording in logs, the audit page and the model card)."""
    return "; ".join(f"{CHECK_WORDS.get(c, c)}: {n}" for c, n in by_check.items())
