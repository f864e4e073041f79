"""The site acceptance report: should this model (or its adaptation) be used at this site? (``medcbm acceptance``)

From ``n`` labelled images of the site that nothing was adapted or chosen on (the query of ``medcbm
split-site``): accuracy, balanced accuracy and AUROC with bootstrap intervals; calibration (ECE and a
reliability diagram); the concepts that read most differently here than on the training images of the
same diagnosis; for an adaptation, its paired effect over the base model on the same images; and a
verdict with its reasons:

* **do not deploy** — the model is near chance here (balanced accuracy below ``near_chance``), or the
  interval of its balanced accuracy or AUROC includes chance;
* **adapt and re-check** — better than chance, but more than ``home_tolerance`` worse than at the training
  sites, or below ``ready_floor``, or badly calibrated, or the images are too few to tell;
* **ready** — none of the above.

Nothing in the report names a patient, an image, a file or a path; the site is named only if the user
names it.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medcbm import __version__
from medcbm.adapt.estimate import correct, paired_gain
from medcbm.adapt.statistics import site_shift, source_class_means
from medcbm.adapt.edit import standardise
from medcbm.audit.explain import bank_links
from medcbm.audit.global_view import calibration
from medcbm.audit.schema import Calibration
from medcbm.data.manifest import Manifest
from medcbm.metrics import accuracy, auroc, balanced_accuracy, bootstrap_ci, expected_calibration_error
from medcbm.adapt.store import predict_saved
from medcbm.bottleneck.metadata import mapped_labels

SCHEMA = "medcbm.acceptance/1"
Verdict = Literal["ready", "adapt and re-check", "do not deploy"]


class AcceptanceCriteria(BaseModel):
    """Thresholds of the verdict (balanced accuracy unless named otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    near_chance: float = Field(0.60, description="below this the model is near chance (two classes: 0.5 is chance)")
    home_tolerance: float = Field(0.05, description="'worse than at home': more than this below the home balanced "
                                                    "accuracy")
    max_ece: float = Field(0.10, description="above this, probabilities cannot be read as stated")
    ready_floor: float = Field(0.75, description="the lowest balanced accuracy called ready: set it to the clinical "
                                                 "requirement of the use")
    min_images: int = Field(50, description="fewer labelled images than this cannot accept a site")


class Metric(BaseModel):
    model_config = ConfigDict(frozen=True)
    value: float
    ci95: tuple[float, float]


class DriftedConcept(BaseModel):
    """How far a concept reads at this site from the training images of the same diagnosis (training SDs)."""

    model_config = ConfigDict(frozen=True)
    concept: str
    question: str | None
    shift_sd: float


class AdaptationEffect(BaseModel):
    model_config = ConfigDict(frozen=True)
    adapter: str
    baseline_balanced_acc: float
    gain: float
    ci95: tuple[float, float]
    verdict: str
    changed_predictions: int


class SiteAcceptance(BaseModel):
    """Everything the acceptance report says, as data."""

    model_config = ConfigDict(frozen=True)
    schema_version: Literal["medcbm.acceptance/1"] = SCHEMA
    medcbm_version: str = __version__
    site: str
    classes: list[str]
    n: int
    per_class: dict[str, int]
    accuracy: Metric
    balanced_accuracy: Metric
    auroc: Metric
    calibration: Calibration
    home_balanced_accuracy: float | None
    home_split: str | None
    drift: list[DriftedConcept]
    adaptation: AdaptationEffect | None
    verdict: Verdict
    reasons: list[str]
    criteria: AcceptanceCriteria
    scored_on: str = "labelled images of the site, none of them used to adapt or choose anything"


def decide(bal: Metric, auc: Metric, ece: float, n: int, home: float | None, n_classes: int,
           crit: AcceptanceCriteria) -> tuple[Verdict, list[str]]:
    """The verdict and its reasons, in words a clinician reads correctly."""
    chance = 1.0 / n_classes
    lo, hi = bal.ci95
    stop = []
    if bal.value < crit.near_chance:
        stop.append(f"balanced accuracy {bal.value:.3f} is near chance ({chance:.2f} would be guessing; "
                    f"the threshold is {crit.near_chance:.2f})")
    if lo <= chance:
        stop.append(f"the 95 % interval of balanced accuracy [{lo:.3f}, {hi:.3f}] includes chance ({chance:.2f})")
    if auc.ci95[0] <= 0.5:
        stop.append(f"the 95 % interval of AUROC [{auc.ci95[0]:.3f}, {auc.ci95[1]:.3f}] includes 0.5: the model "
                    "cannot be shown to rank malignant above benign here" if n_classes == 2 else
                    f"the 95 % interval of AUROC [{auc.ci95[0]:.3f}, {auc.ci95[1]:.3f}] includes 0.5")
    if stop:
        return "do not deploy", stop
    check = []
    if n < crit.min_images:
        check.append(f"only {n} labelled images: at least {crit.min_images} are needed to accept a site")
    if home is not None and bal.value < home - crit.home_tolerance:
        check.append(f"balanced accuracy {bal.value:.3f} [{lo:.3f}, {hi:.3f}] is {home - bal.value:.3f} below the "
                     f"{home:.3f} measured at the training sites (more than the {crit.home_tolerance:.2f} tolerated)")
    if bal.value < crit.ready_floor:
        check.append(f"balanced accuracy {bal.value:.3f} is below {crit.ready_floor:.2f}, the lowest this report "
                     "calls ready (set the floor to the use's clinical requirement)")
    if ece > crit.max_ece:
        check.append(f"calibration error {ece:.3f} is above {crit.max_ece:.2f}: the stated probabilities are not "
                     "reliable here")
    if check:
        return "adapt and re-check", check
    ok = [f"balanced accuracy {bal.value:.3f} [{lo:.3f}, {hi:.3f}] is above chance"
          + (f" and within {crit.home_tolerance:.2f} of the {home:.3f} at the training sites" if home is not None else
             " (the model has no home measurement to compare with)"),
          f"calibration error {ece:.3f} is at most {crit.max_ece:.2f}"]
    return "ready", ok


def _metric(y: np.ndarray, proba: np.ndarray, fn, value: float) -> Metric:
    return Metric(value=value, ci95=bootstrap_ci(y, proba, fn=fn, n=1000, seed=0))


class Assessment(BaseModel):
    """The verdict's inputs and outcome on one labelled set of site images."""

    model_config = ConfigDict(frozen=True)
    balanced_accuracy: Metric
    auroc: Metric
    ece: float
    verdict: Verdict
    reasons: list[str]


def assess(y: np.ndarray, proba: np.ndarray, *, home: float | None, criteria: AcceptanceCriteria | None = None
           ) -> Assessment:
    """Balanced accuracy and AUROC with bootstrap intervals, ECE, and the verdict (:func:`decide`)."""
    crit = criteria or AcceptanceCriteria()
    y, proba = np.asarray(y, int), np.asarray(proba, float)
    bal = _metric(y, proba, balanced_accuracy, balanced_accuracy(y, proba))
    auc = _metric(y, proba, auroc, auroc(y, proba))
    ece = expected_calibration_error(y, proba)
    verdict, reasons = decide(bal, auc, ece, len(y), home, proba.shape[1], crit)
    return Assessment(balanced_accuracy=bal, auroc=auc, ece=ece, verdict=verdict, reasons=reasons)


def _home(meta: dict) -> tuple[float | None, str | None]:
    metrics = (meta.get("provenance") or {}).get("metrics") or {}
    for split in ("test_id", "test", "val"):
        m = metrics.get(split)
        if isinstance(m, dict) and m.get("balanced_acc") is not None:
            return float(m["balanced_acc"]), split
    return None, None


def _drift(model, X_concepts: np.ndarray, y: np.ndarray, top: int) -> list[DriftedConcept]:
    base = getattr(model, "base", model)
    shift = site_shift(standardise(base, X_concepts), y, source_class_means(base))
    order = np.argsort(-np.abs(shift))[:top]
    out = []
    for j in order:
        name = base.concept_names_[j]
        links = bank_links(base, name)
        out.append(DriftedConcept(concept=name, question=links[0].question if links else None,
                                  shift_sd=round(float(shift[j]), 3)))
    return out


def build_acceptance(model_dir: str | os.PathLike, manifest: Manifest, *, site: str = "the new site",
                     baseline_dir: str | os.PathLike | None = None, criteria: AcceptanceCriteria | None = None,
                     cache_dir=None, progress: bool = True, top_drift: int = 10) -> SiteAcceptance:
    """Score ``model_dir`` (a model or an adaptation) on a labelled site manifest and decide.

    For an adaptation the base model is the baseline unless ``baseline_dir`` names another.
    """
    crit = criteria or AcceptanceCriteria()
    model, meta, proba, P = predict_saved(model_dir, manifest, cache_dir=cache_dir, progress=progress)
    manifest, y = mapped_labels(manifest, meta)
    classes = list(model.classes)
    home, home_split = _home(meta)
    a = assess(y, proba, home=home, criteria=crit)
    effect = None
    adaptation = meta.get("adaptation")
    if adaptation is not None or baseline_dir is not None:
        base_dir = baseline_dir or (os.path.join(model_dir, adaptation["base_model"]["path"]))
        _, _, base_proba, _ = predict_saved(base_dir, manifest, cache_dir=cache_dir, progress=False)
        g = paired_gain(y, correct(base_proba, y), correct(proba, y), measured_on="the site's labelled images")
        effect = AdaptationEffect(adapter=(adaptation or {}).get("adapter", "another model"),
                                  baseline_balanced_acc=balanced_accuracy(y, base_proba), gain=g.gain, ci95=g.ci95,
                                  verdict=g.verdict,
                                  changed_predictions=int((proba.argmax(1) != base_proba.argmax(1)).sum()))
    return SiteAcceptance(site=site, classes=classes, n=int(len(y)),
                          per_class={c: int((y == i).sum()) for i, c in enumerate(classes)},
                          accuracy=_metric(y, proba, accuracy, accuracy(y, proba)),
                          balanced_accuracy=a.balanced_accuracy, auroc=a.auroc, calibration=calibration(y, proba),
                          home_balanced_accuracy=home, home_split=home_split, drift=_drift(model, P, y, top_drift),
                          adaptation=effect, verdict=a.verdict, reasons=a.reasons, criteria=crit)
