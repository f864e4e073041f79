"""The default adaptation to a new site: a labelled change only when it shows, an honest estimate, EM prevalence.

1. **Unlabelled** (works at k = 0; opt-in, ``recentre=True`` or the ``recentre`` adapter): the site's concept
   activations are re-centred so that their mean is the source class means mixed at the site's prevalence
   (:mod:`medcbm.adapt.label_shift`); the prevalence is the source's unless ``prevalence="em"``. EM
   prevalence (Saerens et al.) is always computed and reported. Re-centring is not the default because on
   two held-out HAM10000 sites it moved balanced accuracy by +0.014 and -0.010 (``bench adapt``, k = 0):
   without labels nothing tells which kind of site this is.
2. **Labelled**: on the re-centred support, every adapter in ``adapters`` proposes its leave-one-shot-out
   choice (so TF-TTI masks and amplifies drift-corrected concepts); the best proposal is kept only when a
   *nested* leave-one-shot-out estimate — the whole choice re-run without the held-out shot — shows a gain
   whose 95 % interval is above zero. Otherwise the model keeps step 1 and says that k was too small to tell.
3. **Estimate**: the gain of the final model over the base model on the support images, paired, with an
   interval (:mod:`medcbm.adapt.estimate`): for step 1 the support labels were never used by the fit; for
   step 2 the predictions are the nested out-of-fold ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from medcbm.adapt.base import (ConceptChange, PredictsAdapted, check_fingerprint, create_adapter, register_adapter,
                              support_labels)
from medcbm.adapt.corrections import concept_recalibration
from medcbm.adapt.edit import AdaptedCBM, ConceptEdit, standardise
from medcbm.adapt.estimate import GainEstimate, correct, paired_gain
from medcbm.adapt.label_shift import MIN_UNLABELLED, SiteStatistics, prior_aware_shift, site_statistics, source_prior
from medcbm.adapt.selection import LooScore, Selection, leave_one_out, shot_folds
from medcbm.adapt.statistics import source_class_means
from medcbm.concepts.grounding.base import check_features
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

LABELLED = ("tfti", "recalibrate_tfti", "site_offset", "refit_signed")
PREVALENCES = ("source", "em")
DECISIONS = ("interval", "nested", "loo")


@dataclass(frozen=True)
class Proposal:
    """One adapter's leave-one-out choice on a (sub)set of the support."""

    adapter: str
    selection: Selection

    def edit(self, model, Z: np.ndarray, y: np.ndarray) -> ConceptEdit:
        a = create_adapter(self.adapter, model)
        return a.make_edit(a.prepare(Z, y), self.selection.params)


def propose(model, names: Sequence[str], Z: np.ndarray, y: np.ndarray) -> Proposal | None:
    """The best guarded leave-one-out choice among ``names`` (``None``: none beats leaving the model)."""
    identity = ConceptEdit.identity(model)
    best: Proposal | None = None
    for name in names:
        a = create_adapter(name, model)
        sel = leave_one_out(a.prepare, a.make_edit, a.candidates(), Z, y, identity, guard=True)
        if sel.changed and (best is None or sel.best.better_than(best.selection.best)):
            best = Proposal(name, sel)
    return best


def nested_logits(model, names: Sequence[str], Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Out-of-fold logits of the whole choose-and-fit procedure: each shot scored by a choice made without it."""
    identity = ConceptEdit.identity(model)
    out = identity.logits(Z)
    folds = shot_folds(y)
    for f in np.unique(folds):
        held = folds == f
        p = propose(model, names, Z[~held], y[~held])
        if p is not None:
            out[held] = p.edit(model, Z[~held], y[~held]).logits(Z[held])
    return out


@register_adapter("site", description="default: a labelled change (TF-TTI, recalibrated TF-TTI, site offsets or a "
                  "signed refit) kept only when a nested estimate shows a gain; prints the gain with an interval")
class SiteAdaptation(PredictsAdapted, BaseEstimator):
    """Adapt a fitted CBM to a new site from its unlabelled images and (optionally) a few labelled ones.

    Args:
        model: fitted CBM (never modified).
        adapters: labelled adapters proposed in step 2 (empty: unlabelled only).
        recentre: apply step 1 (off by default: see the module docstring).
        prevalence: ``source`` (the site's case mix is assumed to be the training mix) or ``em``.
        min_unlabelled: fewest site images (labelled and unlabelled together) step 1 needs.
        decide: ``interval`` (keep a labelled change only when the nested interval is above 0) or ``loo``
            (when its leave-one-out score beats the unadapted one: optimistic, for comparison).

    Attributes (after ``fit``): ``edit_``, ``adapted_``, ``site_`` (:class:`SiteStatistics` or ``None``),
    ``proposal_`` (the labelled proposal or ``None``), ``adopted_`` (whether it was kept), ``estimate_``
    (:class:`GainEstimate` or ``None`` without labels), ``nested_`` (the labelled step's nested estimate),
    ``selection_``, ``changes_``, ``reasons_`` (what each step did, in order) and ``reason_`` (joined),
    ``fit_seconds_``.
    """

    name = "site"
    uses_unlabelled = True
    uses_corrections = True  # concept answers from a review recalibrate concepts before the labelled step

    def __init__(self, model, *, adapters: Sequence[str] = LABELLED, recentre: bool = False, prevalence: str = "source",
                 min_unlabelled: int = MIN_UNLABELLED, decide: str = "interval"):
        self.model, self.adapters, self.recentre = model, adapters, recentre
        self.prevalence, self.min_unlabelled, self.decide = prevalence, min_unlabelled, decide

    # ------------------------------------------------------------------ fitting
    def fit(self, X: np.ndarray, y: Sequence, *, groups=None, X_unlabelled: np.ndarray | None = None,
            unlabelled_groups=None, backbone_fingerprint: str | None = None, X_reviewed: np.ndarray | None = None,
            reviewed_groups=None, T_reviewed: np.ndarray | None = None) -> "SiteAdaptation":
        """Fit on support features ``X`` (may have 0 rows), the site's unlabelled features and, from a concept
        review, the reviewed images' features with the reviewer's concept values ``T_reviewed`` (1/0/NaN)."""
        check_fingerprint(self.model, backbone_fingerprint)
        P = self.model.predict_concepts(check_features(X, name="support features"), groups) if len(X) else \
            np.zeros((0, len(self.model.concept_names_)), np.float32)
        Pu = None if X_unlabelled is None else self.model.predict_concepts(
            check_features(X_unlabelled, name="unlabelled features"), unlabelled_groups)
        Pr = None if X_reviewed is None else self.model.predict_concepts(
            check_features(X_reviewed, name="reviewed features"), reviewed_groups)
        return self.fit_concepts(P, y, P_unlabelled=Pu, P_reviewed=Pr, T_reviewed=T_reviewed)

    def fit_concepts(self, P: np.ndarray, y: Sequence, *, P_unlabelled: np.ndarray | None = None,
                     P_reviewed: np.ndarray | None = None, T_reviewed: np.ndarray | None = None) -> "SiteAdaptation":
        """Fit on the support's concept probabilities ``(n, K)``, the unlabelled images' ``(m, K)`` and reviewed
        images' ``(r, K)`` with their corrected values (per-concept recalibration before the labelled step)."""
        self._check_params()
        t0 = time.perf_counter()
        m = self.model
        K = len(m.concept_names_)
        P = np.asarray(P, np.float32).reshape(-1, K)
        labelled = len(P) > 0
        y = support_labels(y, list(m.classes)) if labelled else np.zeros(0, int)
        Z = standardise(m, P)
        Zall = Z if P_unlabelled is None else np.vstack([Z, standardise(m, np.asarray(P_unlabelled, np.float32))])
        if not len(Zall) and P_reviewed is not None:  # reviewed images without diagnoses are the site's images
            Zall = standardise(m, np.asarray(P_reviewed, np.float32))
        if not len(Zall):
            raise DataError("adaptation needs images of the new site: give labelled support images, unlabelled ones, "
                            "or both")
        reasons: list[str] = []
        nan = LooScore(float("nan"), float("nan"))
        self.selection_ = Selection(None, nan, nan, None, "", [])
        self.changes_: list[ConceptChange] = []
        pre = self._recentring(Zall, reasons)
        self.recalibrated_ = T_reviewed is not None
        if self.recalibrated_:
            recal, self.changes_ = concept_recalibration(m, P_reviewed, T_reviewed)
            pre = pre.then(recal)
            reasons.append(f"{len(self.changes_)} concept(s) recalibrated on {len(P_reviewed)} reviewed image(s)")
        self.proposal_, self.adopted_, self.nested_ = None, False, None
        edit = pre
        if labelled:
            edit = self._labelled_step(pre, Z, y, reasons)
            base_ok = correct(ConceptEdit.identity(m).logits(Z), y)
            if self.adopted_:
                self.estimate_ = paired_gain(y, base_ok, correct(self._oof, y),
                                             measured_on="support, nested leave-one-shot-out")
            else:
                self.estimate_ = paired_gain(y, base_ok, correct(pre.logits(Z), y), measured_on=(
                    "support; its concept corrections were used (optimistic)" if self.recalibrated_ else
                    "support; its labels were not used by the adaptation"))
            reasons.append(f"estimated gain {self.estimate_.describe()}: {_verdict_words(self.estimate_)}")
        else:
            self.estimate_ = None
            reasons.append("no labelled images: the gain cannot be estimated; score labelled site images with "
                           "medcbm evaluate to check it")
        self.edit_ = edit
        self.adapted_ = AdaptedCBM(m, edit)
        self.reasons_ = reasons
        self.reason_ = "; ".join(reasons)
        self.fit_seconds_ = time.perf_counter() - t0
        logger.info("site adaptation: %s", self.reason_)
        return self

    def _check_params(self) -> None:
        if self.prevalence not in PREVALENCES:
            raise ConfigError(f"prevalence '{self.prevalence}' is not one of {PREVALENCES}")
        if self.decide not in DECISIONS:
            raise ConfigError(f"decide '{self.decide}' is not one of {DECISIONS}")
        bad = [a for a in self.adapters if a == "site"]
        if bad:
            raise ConfigError("adapters: 'site' cannot propose itself")

    def _recentring(self, Zall: np.ndarray, reasons: list[str]) -> ConceptEdit:
        m = self.model
        identity = ConceptEdit.identity(m)
        S, prior = source_class_means(m), source_prior(m)
        self.site_: SiteStatistics | None = None
        if len(Zall) < self.min_unlabelled:
            reasons.append(f"{len(Zall)} site images: too few to re-centre concepts (needs {self.min_unlabelled})")
            return identity
        self.site_ = site_statistics(Zall, m.W_, m.b_, S, prior)
        if not self.recentre:
            return identity
        pi = self.site_.prevalence if self.prevalence == "em" else prior
        delta = prior_aware_shift(Zall, pi, S)
        reasons.append(f"concepts re-centred on {len(Zall)} site images")
        return ConceptEdit(identity.scale, -delta, identity.W, identity.b)

    def _labelled_step(self, pre: ConceptEdit, Z: np.ndarray, y: np.ndarray, reasons: list[str]) -> ConceptEdit:
        m = self.model
        Zr = pre.concepts(Z)
        self._oof = pre.logits(Z)
        k = int(np.bincount(y)[np.unique(y)].min())
        if not self.adapters or k < 2:
            reasons.append(f"k = {k} labelled per class: too few to choose a labelled change" if self.adapters
                           else "no labelled adapters")
            return pre
        self.proposal_ = propose(m, self.adapters, Zr, y)
        if self.proposal_ is None:
            reasons.append("no labelled change beat the model as it is by leave-one-shot-out")
            return pre
        self.selection_ = self.proposal_.selection
        oof = nested_logits(m, self.adapters, Zr, y)
        self.nested_ = paired_gain(y, correct(pre.logits(Z), y), correct(oof, y),
                                   measured_on="support, nested leave-one-shot-out")
        self.adopted_ = (self.decide == "loo" or self.nested_.verdict == "gain"
                         or (self.decide == "nested" and self.nested_.gain > 0))
        what = f"{self.proposal_.adapter} {self.selection_.params}"
        if not self.adopted_:
            reasons.append(f"{what} not kept: nested estimate {self.nested_.describe()} cannot tell it from no change "
                           f"with k = {k}")
            return pre
        self._oof = oof
        a = create_adapter(self.proposal_.adapter, m)
        state = a.prepare(Zr, y)
        step = a.make_edit(state, self.selection_.params)
        self.changes_ = self.changes_ + a.describe(state, step)
        reasons.append(f"{what} kept (nested estimate {self.nested_.describe()})")
        return pre.then(step)

    def evidence(self) -> dict:
        """What justified the adaptation, for its file: the unlabelled statistics, the proposal, the estimates."""
        p = self.proposal_
        return {
            "params": {"adapters": list(self.adapters), "recentre": self.recentre, "prevalence": self.prevalence,
                       "decide": self.decide, "concept_corrections": self.recalibrated_, "labelled_change": None if not self.adopted_ else
                       {"adapter": p.adapter, **(p.selection.params or {})}},
            "unlabelled": None if self.site_ is None else {
                "n_site_images": self.site_.n, "em_prevalence": dict(zip(self.classes, np.round(self.site_.prevalence, 4).tolist())),
                "recentred": self.recentre},
            "proposal": None if p is None else {"adapter": p.adapter, "params": p.selection.params,
                                                "leave_one_out": p.selection.best.to_json(), "kept": self.adopted_},
            "nested_estimate": None if self.nested_ is None else self.nested_.to_json(),
            "estimate": None if self.estimate_ is None else self.estimate_.to_json(),
            "estimated_gain": None if self.estimate_ is None else round(self.estimate_.gain, 4),
            "estimate_kind": None if self.estimate_ is None else self.estimate_.measured_on,
        }


@register_adapter("recentre", description="unlabelled only: re-centre the concepts on the site's images (k = 0 "
                  "works); labelled images, if any, only estimate the gain")
class Recentre(SiteAdaptation):
    def __init__(self, model, *, adapters: Sequence[str] = (), recentre: bool = True, prevalence: str = "source",
                 min_unlabelled: int = MIN_UNLABELLED, decide: str = "interval"):
        super().__init__(model, adapters=adapters, recentre=recentre, prevalence=prevalence,
                         min_unlabelled=min_unlabelled, decide=decide)


def _verdict_words(est: GainEstimate) -> str:
    return {"gain": "a gain", "loss": "a loss", "cannot tell": "too few images to tell a gain from none"}[est.verdict]
