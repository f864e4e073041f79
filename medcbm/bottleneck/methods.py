"""Concept-bottleneck methods for ``medcbm bench shift`` (registered on import).

Dermoscopy CBMs ground concepts with probes trained on PH2's expert annotations and transferred to the
target dataset (grounding strategy (d), the offline default), then fit a KnoBo-prior bottleneck.
Two PH2 concept sources: the dermoscopic criteria (structures and colours) and the whole-lesion patterns
from the clinical diagnosis. Probes and bottleneck see the same preprocessing on both datasets
(``efficientnet_lite0_lesion_cc``): Shades-of-Gray colour constancy, then an automatically segmented lesion
box at 320 px. That removes two site cues (the dermatoscope's colour cast and the background) before any
concept is read, so transferred probes fire on lesions, not on clinics.
"""

from __future__ import annotations

import logging

import numpy as np

from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.priors import expert_prior_file, grounded_prior, load_prior_file
from medcbm.bottleneck.weights import balance_for
from medcbm.bottleneck.trainer import BottleneckConfig
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.data.manifest import Manifest
from medcbm.data.ph2_vocab import CONCEPT_PREFIX, PH2_CONCEPTS, PH2_PATTERN_CONCEPTS
from medcbm.evaluation.methods import MethodInput, MethodOutput, register_method

logger = logging.getLogger(__name__)

CONCEPT_BACKBONE = "efficientnet_lite0_lesion_cc"
CRITERIA = list(PH2_CONCEPTS)
PATTERNS = list(PH2_PATTERN_CONCEPTS)
STRUCTURES = [k for k in CRITERIA if not k.startswith("color_")]
COLOURS = [k for k in CRITERIA if k.startswith("color_")]
DERM_BANK = ("dermoscopy", "benign_malignant")
DERMOSCOPY = ("ham10000", "ph2")


def _features(ctx: dict, manifest: Manifest, backbone: str) -> np.ndarray:
    from medcbm.backbones.features import extract_features

    return extract_features(manifest, backbone, cache_dir=ctx.get("cache_dir"), progress=ctx.get("progress", False)).X


def _split_features(data: MethodInput, backbone: str) -> dict[str, np.ndarray]:
    """Every split's features under ``backbone`` (the protocol's own are reused, others extracted and cached)."""
    if backbone == data.context["backbone_spec"].name:
        return data.X
    return {s: _features(data.context, Manifest(f, source=f"split {s}"), backbone) for s, f in data.frames.items()}


def ph2_probes(ctx: dict, backbone: str = CONCEPT_BACKBONE, *, drop_weak: bool = True) -> ConceptProbes:
    """PH2-annotation concept probes for ``backbone`` (fitted once per benchmark run, kept in ``ctx``)."""
    key = ("ph2_probes", backbone, drop_weak)
    if key not in ctx:
        from medcbm.data.importers import import_dataset

        ph2 = import_dataset("ph2", ctx.get("data_root"))
        names = CRITERIA + PATTERNS
        C = ph2.frame[[CONCEPT_PREFIX + k for k in names]].to_numpy(float)
        ctx[key] = ConceptProbes(drop_weak=drop_weak).fit(_features(ctx, ph2, backbone), C, names)
        logger.info("PH2 probes (%s): kept %d/%d concepts, mean CV AUROC %.3f", backbone,
                    len(ctx[key].concept_names_), len(names), np.mean(list(ctx[key].cv_auc_.values())))
    return ctx[key]


def bank_prior(ctx: dict, classes: list[str]) -> dict:
    """The shipped dermoscopy bank's mined prior, mapped onto the PH2 vocabulary (cached in ``ctx``)."""
    key = ("bank_prior", tuple(classes))
    if key not in ctx:
        from medcbm.concepts.schema import default_bank_path, load_bank

        bank = load_bank(default_bank_path(*DERM_BANK))
        ctx[key] = grounded_prior(bank, classes)[0]
    return ctx[key]


def expert_prior(classes: list[str]) -> dict:
    """The reviewed ABCD / 7-point-checklist prior over PH2 criteria (``knowledge/priors``)."""
    prior, _ = load_prior_file(expert_prior_file())
    return prior


def _cbm(data: MethodInput, *, drop_weak: bool = True, prior: str | None = "expert", concepts: list[str] | None = None,
         backbone: str = CONCEPT_BACKBONE, balance: bool = True, config: BottleneckConfig | None = None) -> MethodOutput:
    """PH2-grounded CBM.

    Args:
        prior: ``expert`` (reviewed file), ``bank`` (mined from the concept bank) or ``None``.
        balance: weight training/validation samples so the protocol's nuisance attribute (e.g. site) is
            balanced within each class — uses metadata every manifest has, removes the shortcut's incentive.
    """
    ctx = data.context
    probes = ph2_probes(ctx, backbone, drop_weak=drop_weak)
    if concepts is not None:
        concepts = [c for c in concepts if c in probes.concept_names_]
    X = _split_features(data, backbone)
    prior_map = {"expert": lambda: expert_prior(data.classes), "bank": lambda: bank_prior(ctx, data.classes),
                 None: lambda: None}[prior]()
    cfg = config or BottleneckConfig(prior_weight=1.0 if prior else 0.0)
    weights = balance_for(data) if balance else {}
    model = KnowledgeCBM(probes, classes=data.classes, prior=prior_map, config=cfg, concepts=concepts)
    model.fit(X["train"], data.y["train"], X["val"], data.y["val"], **weights)
    proba = {s: model.predict_proba(X[s]) for s in ("val", "test_id", "test_ood")}
    return MethodOutput(proba, {"concepts": model.concept_names_, "weights": model.W_.round(3).tolist(),
                                "cv_auc": {k: round(v, 3) for k, v in probes.cv_auc_.items()},
                                "flagged": probes.flagged_, **model.fit_info_})


@register_method("linear_probe_lesion_cc", datasets=DERMOSCOPY)
def linear_probe_lesion_cc(data: MethodInput) -> MethodOutput:
    """The baseline on the CBM's preprocessing (colour constancy + automatic lesion crop): does the
    preprocessing alone remove the shortcut?"""
    from medcbm.evaluation.probe import fit_probe_method

    out = fit_probe_method(data, _split_features(data, CONCEPT_BACKBONE))
    out.info["backbone"] = CONCEPT_BACKBONE
    return out


@register_method("cbm", datasets=DERMOSCOPY)
def cbm(data: MethodInput) -> MethodOutput:
    """Best offline configuration: PH2 probes for criteria and patterns (weak ones dropped) on colour-constant
    automatic lesion crops, expert prior, site balancing."""
    return _cbm(data)


# name -> (what it changes, keyword arguments of _cbm); each is registered as its own benchmark method
ABLATIONS: dict[str, tuple[str, dict]] = {
    "cbm_no_prior": ("the same bottleneck without the KnoBo prior term", {"prior": None}),
    "cbm_bank_prior": ("the prior mined automatically from the concept bank instead of the reviewed one",
                       {"prior": "bank"}),
    "cbm_no_balance": ("no nuisance-group balancing (KnoBo's original setting)", {"balance": False}),
    "cbm_no_color_constancy": ("the same automatic lesion crops without Shades-of-Gray colour constancy",
                               {"backbone": "efficientnet_lite0_lesion_auto"}),
    "cbm_expert_mask_crops": ("probes on PH2's expert-mask crops, HAM10000 images whole, no colour constancy "
                              "(grounding and target preprocessing differ)", {"backbone": "efficientnet_lite0_lesion"}),
    "cbm_global_features": ("concept probes on the final pooled features of whole images (no multi-layer "
                            "pooling, no crop)", {"backbone": "efficientnet_lite0"}),
    "cbm_whole_image_features": ("multi-layer probes on whole 224 px images (no crop, no colour constancy)",
                                 {"backbone": "efficientnet_lite0_ml"}),
    "cbm_no_filter": ("keep every PH2 concept, including those whose probes are weak", {"drop_weak": False}),
    "cbm_src_ph2_criteria": ("concept source: PH2 dermoscopic criteria only (structures and colours, no "
                             "whole-lesion patterns)", {"concepts": CRITERIA}),
    "cbm_src_ph2_patterns": ("concept source: PH2 whole-lesion patterns only (melanoma-like, atypical)",
                             {"concepts": PATTERNS}),
    "cbm_src_ph2_structures": ("concept source: PH2 dermoscopic structures only (no colours)",
                               {"concepts": STRUCTURES}),
    "cbm_src_ph2_colours": ("concept source: PH2 colours only", {"concepts": COLOURS}),
}


def _register_ablation(name: str, what: str, kwargs: dict) -> None:
    def method(data: MethodInput) -> MethodOutput:
        return _cbm(data, **kwargs)

    method.__name__, method.__doc__ = name, f"Ablation: {what}."
    register_method(name, datasets=DERMOSCOPY)(method)


for _name, (_what, _kwargs) in ABLATIONS.items():
    _register_ablation(_name, _what, _kwargs)
