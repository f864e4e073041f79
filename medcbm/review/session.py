"""The state behind the review app: one model, one manifest's cases with cached concept activations, and the
correction store. Every page and every answer is computed here; :mod:`medcbm.review.app` only renders it.

A reviewer's answer sets a concept to 1 (present) or 0 (absent) through the model's intervention API (the head
reads it clipped to the training range); "unsure" leaves the model's own reading. Nothing is recomputed from
the images after start-up except an occlusion map, on request.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from medcbm.audit.explain import CaseExplanation, explain_from_concepts
from medcbm.audit.interventions import answer_effects, ask_order
from medcbm.audit.privacy import CaseIds
from medcbm.bottleneck.scope import ScopeVerdict
from medcbm.errors import ConfigError, DataError
from medcbm.review.store import CONCEPT_VALUES, DIAGNOSIS, Correction, CorrectionStore

logger = logging.getLogger(__name__)

#: concepts asked about per case (the rest stay one click away)
ASKED = 6
ANSWER_VALUE = {"present": 1.0, "absent": 0.0}


@dataclass(frozen=True)
class ReviewCase:
    """One image under review (its file and manifest id are never shown).

    Attributes:
        key: the image's content hash (what the store is keyed by); ``case_id``: the salted id shown.
        row: the manifest row; ``P``: concept activations the model read; ``proba``: its class probabilities.
        drift: the largest |standardised activation| of any concept (how unlike training its concepts read).
        group: the site group the model adjusts for (``None`` for a model without site offsets).
    """

    key: str
    case_id: str
    row: int
    image: Path
    P: np.ndarray
    proba: np.ndarray
    scope: ScopeVerdict
    drift: float
    drift_concept: str
    group: object = None


@dataclass(frozen=True)
class WorkItem:
    """A worklist row: why the case is where it is, and how far its review has got."""

    case: ReviewCase
    predicted: str
    probability: float
    margin: float
    reasons: list[str]
    answers: int
    diagnosis: str | None

    @property
    def reviewed(self) -> bool:
        return self.answers > 0 or self.diagnosis is not None


@dataclass(frozen=True)
class ConceptRow:
    """One asked concept on the case page: the model's reading, the reviewer's answer, the evidence."""

    concept: str
    name: str
    question: str
    reading: float
    answer: str | None
    explanation: object  # ConceptExplanation under the current answers
    if_present: float
    if_absent: float


@dataclass(frozen=True)
class CaseView:
    """Everything the case page shows, under the reviewer's current answers."""

    case: ReviewCase
    before: CaseExplanation  # the model's own reading
    now: CaseExplanation  # with the answers applied
    rows: list[ConceptRow]
    answers: dict[str, str]
    diagnosis: str | None
    reachable: tuple[float, float]  # P(now.predicted) the unanswered asked concepts could still reach
    interval: tuple[float, float]  # P(now.predicted) for 90 % of answers drawn at the probes' own probabilities
    changes: list[str] = field(default_factory=list)
    saved: int | None = None  # the store's sequence number of the correction just made


def model_fingerprint(meta: dict) -> str:
    """A model's identity for the store: its weights checksum, and an adaptation's own checksum on top."""
    parts = [str(meta.get("weights_sha256", ""))]
    if meta.get("adaptation"):
        parts.append(str(meta["adaptation"].get("checksum", meta["adaptation"].get("site", ""))))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class ReviewSession:
    """A model's review of one manifest, backed by a :class:`CorrectionStore`.

    Build it with :func:`open_review`; the attributes are read-only after that.
    """

    def __init__(self, model, meta: dict, cases: Sequence[ReviewCase], store: CorrectionStore, *,
                 manifest, spec=None, asked: int = ASKED):
        self.model, self.meta, self.store, self.manifest, self.spec = model, meta, store, manifest, spec
        self.cases = list(cases)
        self.by_id = {c.case_id: c for c in self.cases}
        self.classes: list[str] = list(model.classes)
        self.concepts: list[str] = list(model.concept_names_)
        self.fingerprint = store.model_fingerprint
        self.asked = asked

    # ------------------------------------------------------------------ reading
    def case(self, case_id: str) -> ReviewCase:
        try:
            return self.by_id[case_id]
        except KeyError:
            raise DataError(f"no case '{case_id}' in this review (the worklist lists them)") from None

    def answered(self, values: dict[str, str]) -> dict[str, float]:
        """The interventions the answers make (``unsure`` makes none)."""
        return {k: ANSWER_VALUE[v] for k, v in values.items() if v in ANSWER_VALUE}

    def corrected_concepts(self, case: ReviewCase, answers: dict[str, str]) -> np.ndarray:
        """The case's activations with the answers applied ``(K,)``."""
        p = np.array(case.P, np.float64, copy=True)
        for k, v in self.answered(answers).items():
            p[self.concepts.index(k)] = v
        return p

    def worklist(self) -> list[WorkItem]:
        """Every case, the ones that most need a human first: unreviewed before reviewed; within each, out of
        scope, then uncertain, then by decision margin (smallest first), then by concept drift."""
        state = self.store.current()
        items = []
        for c in self.cases:
            answers = {k: v for k, v in state.get(c.key, {}).items() if k != DIAGNOSIS}
            diag = state.get(c.key, {}).get(DIAGNOSIS)
            order = np.argsort(-c.proba)
            margin = float(c.proba[order[0]] - c.proba[order[1]])
            reasons = []
            if not c.scope.in_scope:
                reasons.append(f"outside the model's scope ({c.scope.reason})")
            if margin < 0.2:
                reasons.append(f"uncertain (top-two margin {margin:.2f})")
            if c.drift >= 3.0:
                reasons.append(f"concept drift: {c.drift_concept.replace('_', ' ')} reads {c.drift:.1f} SD from "
                               "training")
            items.append(WorkItem(c, self.classes[order[0]], float(c.proba[order[0]]), margin, reasons,
                                  len(answers), diag))
        return sorted(items, key=lambda w: (w.reviewed, w.case.scope.in_scope, w.margin >= 0.2, w.margin, -w.case.drift))

    def view(self, case_id: str, *, changes: Sequence[str] = (), saved: int | None = None) -> CaseView:
        """The case page's content under the stored answers."""
        case = self.case(case_id)
        state = self.store.current(case.key).get(case.key, {})
        answers = {k: v for k, v in state.items() if k != DIAGNOSIS and k in self.concepts}
        before = explain_from_concepts(self.model, case.P[None, :], case_ids=[case.case_id])[0]
        p_now = self.corrected_concepts(case, answers)
        now = explain_from_concepts(self.model, p_now[None, :], case_ids=[case.case_id])[0]
        by_name = {e.concept: e for e in now.concepts}
        absent, present = answer_effects(self.model, p_now)
        asked = [self.concepts[j] for j in ask_order(self.model, case.P)[:self.asked]]
        shown = asked + [k for k in answers if k not in asked]
        rows = []
        for k in shown:
            e, j = by_name[k], self.concepts.index(k)
            rows.append(ConceptRow(k, e.display_name, e.question, float(case.P[j]), answers.get(k), e,
                                   float(present[j]), float(absent[j])))
        open_asked = [k for k in asked if k not in answers]
        return CaseView(case, before, now, rows, answers, state.get(DIAGNOSIS),
                        self._reachable(p_now, open_asked, now.predicted),
                        self._interval(p_now, open_asked, now.predicted, seed=case.row), list(changes), saved)

    def _interval(self, p: np.ndarray, open_concepts: Sequence[str], cls: str, *, seed: int,
                  draws: int = 400) -> tuple[float, float]:
        """The central 90 % of P(``cls``) when each open question is answered present with the probe's own
        probability (and absent otherwise): how much the prediction still rests on what the reviewer will see."""
        c = self.classes.index(cls)
        if not open_concepts:
            q = float(self.model.predict_proba_from_concepts(p[None, :])[0, c])
            return q, q
        idx = [self.concepts.index(k) for k in open_concepts]
        rng = np.random.default_rng(seed)  # seeded by the case: the page shows the same interval on every visit
        rows = np.repeat(p[None, :], draws, axis=0)
        rows[:, idx] = (rng.random((draws, len(idx))) < np.clip(p[idx], 0, 1)).astype(float)
        q = self.model.predict_proba_from_concepts(rows)[:, c]
        return float(np.percentile(q, 5)), float(np.percentile(q, 95))

    def _reachable(self, p: np.ndarray, open_concepts: Sequence[str], cls: str) -> tuple[float, float]:
        """The lowest and highest P(``cls``) the open questions could lead to (each answered 0, 1 or left).

        The logit is additive over concepts, so for two classes each concept's extreme answer is chosen on its
        own and the range is exact; with more classes it is the range along the same choices (approximate).
        """
        c = self.classes.index(cls)
        now = float(self.model.predict_proba_from_concepts(p[None, :])[0, c])
        if not open_concepts:
            return now, now
        absent, present = answer_effects(self.model, p)
        lo, hi = p.copy(), p.copy()
        for k in open_concepts:
            j = self.concepts.index(k)
            # the effects are on the margin of the predicted class (cls) over the runner-up
            options = {0.0: absent[j], 1.0: present[j], float(p[j]): 0.0}
            lo[j] = min(options, key=options.__getitem__)
            hi[j] = max(options, key=options.__getitem__)
        q = self.model.predict_proba_from_concepts(np.vstack([lo, hi]))[:, c]
        return float(min(q.min(), now)), float(max(q.max(), now))

    # ------------------------------------------------------------------ writing
    def answer(self, case_id: str, concept: str, value: str, *, reviewer: str,
               fingerprint: str | None = None) -> CaseView:
        """Record one concept answer and return the updated view, saying what changed and why.

        Raises:
            ConfigError: a concept the model does not have, a value not in :data:`CONCEPT_VALUES`, or a page
                made for another model.
        """
        case = self.case(case_id)
        if concept not in self.concepts:
            raise ConfigError(f"concept '{concept}' is not one of this model's {len(self.concepts)} concepts")
        if value not in CONCEPT_VALUES:
            raise ConfigError(f"answer '{value}' for '{concept}' must be one of {list(CONCEPT_VALUES)}")
        old = self.view(case_id)
        c = self.store.record(case.key, concept, value, reviewer=reviewer, model_fingerprint=fingerprint)
        new = self.view(case_id)
        return replace(new, changes=describe_change(old, new, c), saved=c.seq)

    def diagnose(self, case_id: str, label: str, *, reviewer: str, fingerprint: str | None = None) -> CaseView:
        """Record the reviewer's final diagnosis (a class name, or ``cleared``)."""
        case = self.case(case_id)
        if label not in self.classes and label != "cleared":
            raise ConfigError(f"diagnosis '{label}' must be one of the model's classes {self.classes}")
        c = self.store.record(case.key, DIAGNOSIS, label, reviewer=reviewer, model_fingerprint=fingerprint)
        words = "Final diagnosis cleared." if label == "cleared" else f"Final diagnosis set to {label}."
        return replace(self.view(case_id), changes=[words], saved=c.seq)


def describe_change(old: CaseView, new: CaseView, c: Correction) -> list[str]:
    """Sentences for the page: the probability before and after one answer, and the concept behind it."""
    cls = old.now.predicted
    p0, p1 = old.now.class_probabilities[cls], new.now.class_probabilities[cls]
    said = {"present": "present", "absent": "absent", "unsure": "unsure (the model's reading is kept)",
            "cleared": "unanswered again"}[c.value]
    e_old = next(e for e in old.now.concepts if e.concept == c.field)
    e_new = next(e for e in new.now.concepts if e.concept == c.field)
    reading = old.before.concepts[[e.concept for e in old.before.concepts].index(c.field)].probability
    out = [f"You marked {e_new.display_name} {said}; the model read {reading:.2f}."]
    out.append(f"Its push on the decision went from {e_old.margin_contribution:+.2f} to {e_new.margin_contribution:+.2f} "
               f"(positive: towards {cls}).")
    out.append(f"P({cls}) {p0:.2f} → {p1:.2f}" + (f"; the prediction is now {new.now.predicted}."
                                                  if new.now.predicted != cls else "."))
    return out


def default_store(model_dir: str | os.PathLike, fingerprint: str) -> Path:
    """Where a model's corrections go unless told otherwise: ``runs/review/<folder>-<fingerprint>.sqlite`` (never
    inside the model folder; a retrained model gets a fresh file, the old one keeps its corrections)."""
    return Path("runs/review") / f"{Path(model_dir).resolve().name}-{fingerprint[:8]}.sqlite"


def open_review(model_dir: str | os.PathLike, manifest, *, store: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, raw_ids: bool = False, asked: int = ASKED,
                progress: bool = True) -> ReviewSession:
    """Load a model (or adaptation), read the manifest's features (cached) and open or create the store.

    Args:
        model_dir: a model or adaptation folder.
        manifest: a checked :class:`~medcbm.data.manifest.Manifest` (labels are not needed).
        store: the corrections file (created when missing; refused when it belongs to another model; default
            :func:`default_store`).
        raw_ids: show manifest ids instead of salted ones (opt-in).
    """
    from medcbm.adapt.store import load_model
    from medcbm.backbones.features import extract_features
    from medcbm.bottleneck.artifacts import backbone_from_meta
    from medcbm.bottleneck.metadata import model_groups
    from medcbm.bottleneck.scope import assess_scope

    model, meta = load_model(model_dir)
    fingerprint = model_fingerprint(meta)
    db = CorrectionStore(store or default_store(model_dir, fingerprint), model_fingerprint=fingerprint)
    spec = backbone_from_meta(meta)
    feats = extract_features(manifest, spec, cache_dir=cache_dir, progress=progress)
    if not len(feats.X):
        raise DataError("no image of the manifest could be read; nothing to review", path=manifest.source)
    m = feats.manifest
    groups = model_groups(model, m.frame, meta)
    P = model.predict_concepts(feats.X, groups)
    proba = model.predict_proba_from_concepts(P)
    paths = list(m.image_paths())
    verdicts = assess_scope(model, meta, paths, feats.X)
    Z = np.abs(model.concept_inputs(np.asarray(P, np.float32)))
    ids = CaseIds(db.salt, raw=raw_ids)
    names = list(model.concept_names_)
    cases, seen = [], set()
    for i, key in enumerate(feats.keys):
        if key in seen:  # the same image twice: one case (its corrections would be shared anyway)
            logger.warning("manifest row %d repeats an earlier image: reviewed once", i + 1)
            continue
        seen.add(key)
        j = int(Z[i].argmax())
        cases.append(ReviewCase(key=key, case_id=ids(m.frame["id"].iloc[i]), row=i, image=Path(paths[i]),
                                P=np.asarray(P[i], np.float64), proba=np.asarray(proba[i], np.float64),
                                scope=verdicts[i], drift=float(Z[i, j]), drift_concept=names[j],
                                group=None if groups is None else groups[i]))
    return ReviewSession(model, meta, cases, db, manifest=m, spec=spec, asked=asked)
