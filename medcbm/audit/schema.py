"""The audit report as data: one pydantic model, written as JSON with a versioned schema (``schema_version``).

The HTML and the model card are renderings of this object; the JSON carries the same numbers (thumbnails
excepted: it says whether a case has one). Each concept's bank entries are written once, in ``concept_links``,
not repeated under every case (:data:`JSON_EXCLUDE`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from medcbm.audit.explain import BankLink, CaseExplanation
from medcbm.audit.global_view import ActivationView, Calibration, ConceptWeight
from medcbm.audit.interventions import Ablation, InterventionCurves, WhatIf
from medcbm.bottleneck.scope import ScopeVerdict

SCHEMA_VERSION = "medcbm.audit/3"


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScopeRulesSummary(_M):
    """Which images the model accepts (:class:`~medcbm.bottleneck.scope.ScopeRules` and the saved feature summary).

    ``feature_limit`` is the cosine distance to the training images' mean beyond which an image is out of scope;
    ``None`` (with the other feature fields) for a model saved without a feature summary."""

    domain: str | None
    modalities: list[str]
    needs_colour: bool
    feature_limit: float | None = None
    quantile: float | None = None
    calibration: Literal["training", "validation"] | None = None
    n_calibration: int | None = None
    n_training: int | None = None


class ModelSummary(_M):
    """What the audited model is (from its artifact; hashes, never paths)."""

    name: str | None
    format: str
    medcbm_version: str | None
    classes: list[str]
    concepts: list[str]
    concepts_without_bank_entry: list[str]
    backbone: str
    weights_sha256: str
    prior_source: str | list[str] | None
    site_adjusted: bool
    n_site_groups: int
    training_metrics: dict
    head_training: dict = {}  # the artifact's fit_info: solver, iterations/epochs, chosen strength, weight spread
    scope: ScopeRulesSummary | None = None  # None in reports written before the model card named the scope


class ImageIssue(_M):
    """A manifest row that could not be audited (its case id as shown, and why)."""

    case: str
    reason: str


class ScopeSummary(_M):
    """How many scored images are outside the model's scope, by the check they fail (one may fail several)."""

    n: int
    out_of_scope: int
    by_check: dict[str, int] = {}


class DataSummary(_M):
    n_rows: int
    n_scored: int
    labelled: bool
    n_labelled: int
    n_unmapped: int = 0  # rows whose label the model's label map does not cover: counted, not scored
    image_issues: list[ImageIssue]
    case_ids: Literal["salted hash", "raw"]
    site_labels: Literal["pseudonymous", "raw"]
    thumbnails: Literal["none", "photographs", "photographs and DICOM"]
    scope: ScopeSummary | None = None


class CaseReport(_M):
    """One explained case plus its "what if" flips; ``group`` is its site label as shown; ``occlusion``: per top
    concept, the ``grid x grid`` drop of its activation when each image cell is hidden (positive: supports it);
    ``scope``: whether the image is one the model was built to read (:mod:`medcbm.bottleneck.scope`)."""

    explanation: CaseExplanation
    scope: ScopeVerdict | None = None
    what_if: list[WhatIf]
    group: str | None = None
    has_thumbnail: bool = False
    occlusion: dict[str, list[list[float]]] | None = None


class AdaptedConcept(_M):
    """A concept a site adaptation masked or amplified, with the statistic that chose it."""

    concept: str
    action: str
    statistic: float
    factor: float


class AdaptationSummary(_M):
    """One saved site adaptation of the audited model (``applied``: the audit used it)."""

    site: str
    applied: bool
    adapter: str
    changed: bool
    reason: str
    estimated_gain: float | None  # balanced accuracy, on the support images (None: no labelled images)
    estimate_ci95: list[float] | None = None
    estimate_kind: str | None = None
    n_support: int | None
    concepts: list[AdaptedConcept]


class AuditReport(_M):
    """Everything an audit found, in one object (``schema_version`` changes when the layout does)."""

    schema_version: Literal["medcbm.audit/3"] = SCHEMA_VERSION
    medcbm_version: str
    model: ModelSummary
    data: DataSummary
    metrics: dict | None = None
    performance_notes: list[str] = []  # e.g. "test split at training: AUROC ... includes 0.5: no better than chance"
    calibration: Calibration | None = None
    weights: list[ConceptWeight]
    activations: ActivationView
    interventions: InterventionCurves | None = None
    interventions_note: str | None = None
    ablation: Ablation | None = None
    cases: list[CaseReport]
    concept_links: dict[str, list[BankLink]] = {}
    adaptations: list[AdaptationSummary] = []
    timings_s: dict[str, float] = {}


#: what :meth:`AuditReport.model_dump` leaves out of the JSON: per-case copies of the bank links
JSON_EXCLUDE = {"cases": {"__all__": {"explanation": {"concepts": {"__all__": {"links"}}}}}}
