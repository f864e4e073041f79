"""What each quickstart stage found, as validated records (saved in ``RUN_DIR/stages/*.json`` and ``metrics.json``)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataResult(_Record):
    """The imported datasets and the split the journey trains on.

    Attributes:
        images: images per imported dataset (HAM10000 for training, PH2 and Derm7pt for concept grounding).
        sites: HAM10000 images per acquisition site.
        split_sizes: images per split of the protocol (``train``, ``val``, ``test_id``, ``test_ood``).
        manifest: the HAM10000 manifest written to the run directory.
    """

    stage: Literal["data"] = "data"
    images: dict[str, int]
    sites: dict[str, int]
    protocol: str
    seed: int
    split_sizes: dict[str, int]
    manifest: str


class Scores(_Record):
    """In-domain and out-of-domain scores of one model."""

    id_acc: float
    ood_acc: float
    ood_balanced_acc: float
    ood_auroc: float

    @property
    def gap(self) -> float:
        """How much accuracy the model loses when the site/label tie reverses."""
        return self.id_acc - self.ood_acc


class TrainResult(_Record):
    """The black-box baseline and the CBM on the same split."""

    stage: Literal["train"] = "train"
    probe: Scores
    cbm: Scores
    n_concepts: int
    model_dir: str


class ChangedConcept(_Record):
    """One concept the adapter masked or amplified, with the checklist question it stands for."""

    concept: str
    action: str
    statistic: float
    factor: float
    question: str | None = None


class QueryScores(_Record):
    """Scores on the new-site images that were not used for adaptation."""

    acc: float
    balanced_acc: float
    auroc: float


class Gain(_Record):
    """A paired balanced-accuracy gain with its 95 % interval and what it was measured on."""

    gain: float
    ci95: tuple[float, float]
    n: int
    measured_on: str
    verdict: str


class AdaptResult(_Record):
    """Adaptation to a site the model never saw: ``k`` labelled images per class plus the site's other pool images
    unlabelled; base and adapted model compared on a held-out query of other patients.

    Attributes:
        changed: whether the adaptation changed the model (``False``: left as it was, and why in ``reason``).
        estimate: the gain the adapter estimated from its support (``None`` without labels).
        heldout: the gain measured on the held-out query (paired, with its interval).
    """

    stage: Literal["adapt"] = "adapt"
    adapter: str
    site: str
    k: int
    n_support: int
    n_unlabelled: int
    n_query: int
    before: QueryScores
    after: QueryScores
    changed: bool
    reason: str
    estimate: Gain | None
    heldout: Gain
    changes: list[ChangedConcept] = Field(default_factory=list)
    adaptation_dir: str
    support_manifest: str
    unlabelled_manifest: str
    query_manifest: str


class AcceptResult(_Record):
    """The site acceptance report of the adapted model on the held-out query."""

    stage: Literal["accept"] = "accept"
    verdict: str
    reasons: list[str]
    balanced_acc: float
    balanced_acc_ci95: tuple[float, float]
    html: str
    json_path: str


class AuditResult(_Record):
    """The audit report of a handful of out-of-domain cases plus the global view."""

    stage: Literal["audit"] = "audit"
    n_cases: int
    n_correct: int
    n_wrong: int
    n_images: int
    html: str
    json_path: str
    model_card: str


StageResult = Union[DataResult, TrainResult, AdaptResult, AcceptResult, AuditResult]


class StageRecord(_Record):
    """A finished stage on disk: its inputs' key (a rerun with the same key reuses it) and its result."""

    stage: str
    key: str
    seconds: float
    result: StageResult = Field(discriminator="stage")


class QuickstartResult(_Record):
    """The whole journey: every stage's result, how long each took and whether it was reused."""

    run_dir: str
    data: DataResult
    train: TrainResult
    adapt: AdaptResult
    accept: AcceptResult
    audit: AuditResult
    seconds: dict[str, float]
    cached: dict[str, bool]
    metrics: str
