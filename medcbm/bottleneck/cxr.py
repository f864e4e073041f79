"""Chest X-ray CBM benchmark methods: report-derived concept probes -> KnoBo-prior bottleneck.

Registered methods (for ``covid-cxr-view-holdout`` and any protocol over the chest X-ray set):

- ``cxr_cbm_reports``: concepts = the clinical-notes findings (``knowledge/mappings/cxr_notes_findings.yaml``),
  pseudo-labelled on the *training* images' notes, grounded by :class:`ConceptProbes` on image features;
  the bottleneck's prior comes from the chest X-ray concept bank, mapped onto those findings through each
  bank concept's ``grounding.source`` (``cxr_notes:<finding>``).
- ``cxr_cbm_reports_noprior``: the same without the prior term (ablation).
- ``cxr_cbm_reports_nofilter``: the same with weak concepts (CV AUROC below the threshold) kept (ablation).

``data.context`` may give ``cxr_bank`` (a bank path) and ``cxr_class_map`` (protocol class -> bank classes).
"""

from __future__ import annotations

import logging
import warnings
from typing import Mapping, Sequence

import numpy as np

from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.trainer import BottleneckConfig
from medcbm.concepts.alignment import cxr_notes_vocab
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.concepts.grounding.reports import fit_report_probes
from medcbm.concepts.schema import ConceptBank, default_bank_path, load_bank
from medcbm.errors import ConfigError, DataError
from medcbm.evaluation.methods import MethodInput, MethodOutput, register_method

logger = logging.getLogger(__name__)

SOURCE_PREFIX = "cxr_notes:"
N_COMPONENTS = 64
# covid-cxr-view-holdout's classes in terms of the shipped bank's classes
DEFAULT_CLASS_MAP: dict[str, list[str]] = {"covid": ["covid"], "other": ["pneumonia", "no_finding"]}


def _merge_signs(values: Sequence[int]) -> int:
    """+1 if some member says +1 and none says -1 (and vice versa); conflicting or no knowledge -> 0."""
    pos, neg = any(v > 0 for v in values), any(v < 0 for v in values)
    return 1 if pos and not neg else -1 if neg and not pos else 0


def notes_prior(bank: ConceptBank, classes: Sequence[str],
                class_map: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, int]]:
    """The bank's class-concept prior re-expressed over the notes findings and the model's classes.

    Args:
        bank: a concept bank whose concepts are grounded to ``cxr_notes:<finding>`` sources.
        classes: the model's classes.
        class_map: model class -> bank class keys it merges (default: identity, plus ``DEFAULT_CLASS_MAP``).
            Several bank classes or several bank concepts on one finding are merged with
            :func:`_merge_signs`.

    Returns:
        ``{class: {finding: ±1}}`` (zeros omitted), ready for :class:`KnowledgeCBM`'s ``prior``.
    """
    cmap = {**DEFAULT_CLASS_MAP, **(class_map or {})}
    keys = set(bank.class_keys)
    members: dict[str, list[str]] = {}
    for c in classes:
        m = list(cmap.get(c, [c]))
        unknown = [k for k in m if k not in keys]
        if unknown:
            raise ConfigError(f"class '{c}' maps to bank classes {unknown} that bank '{bank.name}' does not have "
                              f"(it has {sorted(keys)}); pass a class map (context key 'cxr_class_map')")
        members[c] = m
    per_finding: dict[str, dict[str, list[int]]] = {}
    for concept in bank.concepts:
        src = concept.grounding.source or ""
        if not src.startswith(SOURCE_PREFIX):
            continue
        signs = {a.class_key: a.prior for a in concept.classes}
        slot = per_finding.setdefault(src[len(SOURCE_PREFIX):], {c: [] for c in classes})
        for c in classes:
            slot[c].append(_merge_signs([signs.get(k, 0) for k in members[c]]))
    if not per_finding:
        raise DataError(f"bank '{bank.name}' has no concept grounded to the clinical-notes findings "
                        f"({SOURCE_PREFIX}...); align it first (medcbm concepts align)")
    prior: dict[str, dict[str, int]] = {c: {} for c in classes}
    for finding, by_class in per_finding.items():
        for c, vals in by_class.items():
            v = _merge_signs(vals)
            if v:
                prior[c][finding] = v
    return prior


def _bank(data: MethodInput) -> ConceptBank:
    path = data.context.get("cxr_bank") or default_bank_path("chest_xray", "covid")
    return load_bank(path)


def fit_cxr_cbm(data: MethodInput, *, use_prior: bool = True, drop_weak: bool = True, min_auc: float = 0.6,
                n_components: int = N_COMPONENTS, max_iter: int = 150):
    """Fit report probes on the training split, then the bottleneck; probabilities for val/test splits.

    Returns:
        ``(pca, cbm, output)``: the CBM takes ``pca.transform(features)``.

    Features are first projected on the training split's top ``n_components`` principal components
    (fitted on training images only): with ~150 training images and 1280-dim features the probes' CV
    logistic fits are near-separable and slow, and the projection regularises them.
    """
    from sklearn.decomposition import PCA

    if "clinical_notes" not in data.frames["train"].columns:
        raise DataError("the training manifest has no 'clinical_notes' column: report-derived concepts need notes")
    texts = data.frames["train"]["clinical_notes"].tolist()
    pca = PCA(n_components=min(n_components, *data.X["train"].shape), random_state=data.seed).fit(data.X["train"])
    X = {s: pca.transform(v).astype(np.float32) for s, v in data.X.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rare findings are recorded in probes.flagged_ instead
        probes = fit_report_probes(X["train"], texts, cxr_notes_vocab(), probes=ConceptProbes(
            min_auc=min_auc, drop_weak=drop_weak, seed=data.seed, max_iter=max_iter))
    if not probes.concept_names_:
        raise DataError(f"no report-derived concept reached CV AUROC {min_auc} on these training images "
                        f"(flagged: {probes.flagged_}); lower min_auc or keep weak concepts (drop_weak=False)")
    prior = notes_prior(_bank(data), data.classes, data.context.get("cxr_class_map")) if use_prior else None
    cfg = BottleneckConfig(prior_weight=1.0 if use_prior else 0.0, seed=data.seed)
    cbm = KnowledgeCBM(probes, classes=data.classes, prior=prior, config=cfg)
    cbm.fit(X["train"], data.y["train"], X["val"], data.y["val"])
    proba = {s: cbm.predict_proba(X[s]) for s in ("val", "test_id", "test_ood")}
    info = {"concepts": cbm.concept_names_, "cv_auc": probes.cv_auc_, "flagged": probes.flagged_,
            "n_train_with_notes": int(sum(bool(str(t).strip()) for t in texts)), "pca_components": int(pca.n_components_),
            "probe_fit_s": round(probes.fit_seconds_, 2), **cbm.fit_info_}
    return pca, cbm, MethodOutput(proba, info)


@register_method("cxr_cbm_reports", datasets=("covid-cxr",))
def cxr_cbm_reports(data: MethodInput) -> MethodOutput:
    """Report-derived concept probes + KnoBo prior from the chest X-ray bank."""
    return fit_cxr_cbm(data)[2]


@register_method("cxr_cbm_reports_noprior", datasets=("covid-cxr",))
def cxr_cbm_reports_noprior(data: MethodInput) -> MethodOutput:
    """Ablation: no prior term."""
    return fit_cxr_cbm(data, use_prior=False)[2]


@register_method("cxr_cbm_reports_nofilter", datasets=("covid-cxr",))
def cxr_cbm_reports_nofilter(data: MethodInput) -> MethodOutput:
    """Ablation: keep concepts whose CV AUROC is below the threshold."""
    return fit_cxr_cbm(data, drop_weak=False)[2]
