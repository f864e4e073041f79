"""Per-prediction explanations: class probabilities, every concept's activation and contribution, the prior,
and the concept's clinical question with the passage it was cited from.

Everything is returned as data (pydantic models); :mod:`medcbm.audit.report` renders it. A concept without a
bank entry is explained by its name and flagged ``has_bank_entry = False``: it never stops an explanation.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcbm.errors import DataError

logger = logging.getLogger(__name__)

#: a class probability this close to 1/2 (binary) or a top-two margin this small marks an uncertain case
UNCERTAIN_MARGIN = 0.2
#: a concept probability this close to 0.5 sits near its probe's decision boundary
CONCEPT_BOUNDARY = 0.1

Agreement = Literal["agrees", "contradicts", "no prior", "unused"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Citation(_Frozen):
    """One passage cited for a concept.

    Attributes:
        class_key, prior: the bank class and prior sign the sentence was evidence for (older banks).
        stance, qualifier: the class the passage argues for, or ``depends`` with what it depends on.
        support: per model class, +1 the passage argues for it, −1 for another class, 0 neither.
    """

    class_key: str = ""
    prior: int | None = None
    doc_id: str
    chunk_id: str
    sentence: str
    reference: str | None = None
    stance: str | None = None
    qualifier: str | None = None
    support: dict[str, int] = {}


class BankLink(_Frozen):
    """A concept-bank entry grounded to a model concept: its clinical question and cited passages."""

    bank: str
    concept_id: str
    name: str
    question: str
    citations: list[Citation]


class ConceptExplanation(_Frozen):
    """One concept in one prediction.

    Attributes:
        probability: the concept activation the bottleneck read (after any site adjustment).
        contributions: contribution to each class logit (``z_k * W[c, k]``; ``z`` is the standardised activation).
        margin_contribution: contribution to the predicted class's logit minus the runner-up's (what moved
            the decision).
        prior: the clinical prior sign per class (``None`` when the model has no prior).
        agreement: whether the learned weight for the predicted class has the prior's sign.
        near_boundary: the activation is within :data:`CONCEPT_BOUNDARY` of 0.5 (the probe is unsure).
        links: bank entries (question, passages); empty when the concept has none.
        citation: the passage shown for this case, chosen by :func:`choose_citations`.
        counter_citation: a passage arguing the other way, shown labelled as such (``None`` when there is none).
        by_absence: the concept pushes the decision because it reads *less* present than an average training image
            (its contribution has the opposite sign of its weight): the passage argues for what its presence means.
    """

    concept: str
    display_name: str
    probability: float
    contributions: dict[str, float]
    margin_contribution: float
    prior: dict[str, int] | None
    agreement: Agreement
    near_boundary: bool
    has_bank_entry: bool
    links: list[BankLink] = []
    citation: Citation | None = None
    counter_citation: Citation | None = None
    by_absence: bool = False

    @property
    def question(self) -> str:
        """The clinical question, or a sentence saying there is none."""
        return self.links[0].question if self.links else f"'{self.concept}' has no concept-bank entry (no question or passage)"


class CaseExplanation(_Frozen):
    """One prediction explained.

    Attributes:
        case: the case id as shown (salted hash unless raw ids were asked for).
        predicted: predicted class; ``probability`` its softmax probability.
        uncertain: top-two class margin below :data:`UNCERTAIN_MARGIN`.
        concepts: every concept, largest ``|margin_contribution|`` first.
        true_label, correct: set when the manifest is labelled.
    """

    case: str
    predicted: str
    probability: float
    class_probabilities: dict[str, float]
    margin: float
    uncertain: bool
    concepts: list[ConceptExplanation]
    true_label: str | None = None
    correct: bool | None = None

    def top(self, k: int = 3) -> list[ConceptExplanation]:
        """The ``k`` concepts that moved the decision most."""
        return self.concepts[:k]


@lru_cache(maxsize=None)
def corpus_references() -> dict[str, str]:
    """``doc_id -> reference`` from the shipped knowledge corpora (empty if none is found)."""
    from medcbm._resources import resource_path
    from medcbm.errors import ConfigError

    out: dict[str, str] = {}
    try:
        folder = resource_path("knowledge", "corpus")
    except ConfigError:
        return out
    for f in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("id") and doc.get("reference"):
                out[str(doc["id"])] = str(doc["reference"])
    return out


def bank_links(model, concept: str) -> list[BankLink]:
    """The bank entries recorded for ``concept`` in ``model.recipe_["concept_links"]`` (``[]`` when none).

    Malformed entries (an older or hand-edited artifact) are skipped with a log line, never raised.
    """
    raw = (getattr(model, "recipe_", None) or {}).get("concept_links") or {}
    refs = corpus_references()
    out = []
    for entry in raw.get(concept) or []:
        try:
            cites = [Citation(class_key=str(e.get("class", "")), prior=e.get("prior"), doc_id=str(e["doc_id"]),
                              chunk_id=str(e.get("chunk_id", "")), sentence=str(e.get("sentence", "")),
                              reference=e.get("reference") or refs.get(str(e["doc_id"])), stance=e.get("stance"),
                              qualifier=e.get("qualifier") or None,
                              support={str(k): int(v) for k, v in (e.get("support") or {}).items()})
                     for e in entry.get("evidence") or []]
            out.append(BankLink(bank=str(entry["bank"]), concept_id=str(entry["concept_id"]),
                                name=str(entry.get("name", entry["concept_id"])),
                                question=str(entry.get("question", "")), citations=cites))
        except (KeyError, TypeError, AttributeError) as exc:
            logger.warning("concept '%s': skipping a malformed bank link (%s)", concept, type(exc).__name__)
    return out


def choose_citations(links: Sequence[BankLink], cls: str, direction: int) -> tuple[Citation | None, Citation | None]:
    """The passage to cite for a concept whose weight for class ``cls`` has sign ``direction``, and a counter-passage.

    The cited passage argues what the weight says: for ``cls`` when ``direction`` is +1, for another class
    when −1 (the concept's absence then speaks for ``cls``), and ``depends`` when 0. The counter-passage argues
    the opposite. Citations without stance (older banks) are shown in bank order, with no counter-passage.

    Returns:
        ``(citation, counter)``; either may be ``None``.
    """
    cites = [c for link in links for c in link.citations]
    if not cites:
        return None, None
    if not any(c.support for c in cites):
        return cites[0], None
    def sign(c: Citation) -> int:
        return c.support.get(cls, 0)
    # an agreeing passage, else one that says "it depends" (never a contradicting one as the cited passage)
    agreeing = [c for c in cites if sign(c) == direction] or [c for c in cites if sign(c) == 0]
    counter = next((c for c in cites if direction and sign(c) == -direction), None)
    return (agreeing[0] if agreeing else None), counter


def prior_agreement(weight: float, prior: float | None) -> Agreement:
    """Whether a learned weight has the sign the clinical prior gives it."""
    if prior is None or prior == 0:
        return "no prior"
    if abs(weight) < 1e-6:
        return "unused"
    return "agrees" if np.sign(weight) == np.sign(prior) else "contradicts"


def _margins(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class, runner-up class and top-two probability margin per row."""
    order = np.argsort(-proba, axis=1)
    pred, second = order[:, 0], order[:, 1]
    rows = np.arange(len(proba))
    return pred, second, proba[rows, pred] - proba[rows, second]


def explain_from_concepts(model, P: np.ndarray, *, case_ids: Sequence[str],
                          y: np.ndarray | None = None) -> list[CaseExplanation]:
    """Explain predictions from concept activations ``P (n, K)`` (as :meth:`predict_concepts` returns them).

    Args:
        model: a fitted :class:`~medcbm.bottleneck.estimator.KnowledgeCBM`.
        P: concept activations in ``model.concept_names_`` order.
        case_ids: the id to show per row (already hashed when privacy asks for it).
        y: true class indices, when known.
    """
    P = np.asarray(P, dtype=np.float64)
    names, classes = list(model.concept_names_), list(model.classes)
    if P.ndim != 2 or P.shape[1] != len(names):
        raise DataError(f"concept activations have shape {P.shape}; the model has {len(names)} concepts")
    if len(case_ids) != len(P):
        raise DataError(f"{len(case_ids)} case ids for {len(P)} rows of concept activations")
    proba = model.predict_proba_from_concepts(P)
    contrib = model.contributions_from_concepts(P)  # (n, C, K)
    pred, second, margin = _margins(proba)
    prior = getattr(model, "prior_", None)
    links = {k: bank_links(model, k) for k in names}
    out = []
    for i in range(len(P)):
        c, s = int(pred[i]), int(second[i])
        concepts = []
        for j, k in enumerate(names):
            # the weight's sign says what the concept argues for this class (the prior's when the weight is 0)
            w = float(model.W_[c, j])
            direction = int(np.sign(w)) if abs(w) > 1e-6 else (0 if prior is None else int(np.sign(prior[c, j])))
            cite, counter = choose_citations(links[k], classes[c], direction)
            push = float(contrib[i, c, j] - contrib[i, s, j])
            concepts.append(ConceptExplanation(
                concept=k, display_name=links[k][0].name if links[k] else k.replace("_", " "),
                probability=float(P[i, j]),
                contributions={classes[a]: float(contrib[i, a, j]) for a in range(len(classes))},
                margin_contribution=push,
                prior=None if prior is None else {classes[a]: int(prior[a, j]) for a in range(len(classes))},
                agreement=prior_agreement(float(model.W_[c, j]), None if prior is None else float(prior[c, j])),
                near_boundary=bool(abs(P[i, j] - 0.5) < CONCEPT_BOUNDARY),
                has_bank_entry=bool(links[k]), links=links[k], citation=cite, counter_citation=counter,
                by_absence=bool(push * (model.W_[c, j] - model.W_[s, j]) < -1e-12)))
        concepts.sort(key=lambda e: -abs(e.margin_contribution))
        truth = None if y is None or y[i] < 0 else classes[int(y[i])]  # -1: a label the model does not map
        out.append(CaseExplanation(
            case=str(case_ids[i]), predicted=classes[c], probability=float(proba[i, c]),
            class_probabilities={classes[a]: float(proba[i, a]) for a in range(len(classes))},
            margin=float(margin[i]), uncertain=bool(margin[i] < UNCERTAIN_MARGIN), concepts=concepts,
            true_label=truth, correct=None if truth is None else truth == classes[c]))
    return out


def explain(model, X: np.ndarray, *, case_ids: Sequence[str], groups=None,
            y: np.ndarray | None = None) -> list[CaseExplanation]:
    """Explain the model's predictions on features ``X`` (see :func:`explain_from_concepts`).

    Args:
        groups: the images' nuisance groups (site), for a model that adjusts concepts per site.
    """
    return explain_from_concepts(model, model.predict_concepts(X, groups), case_ids=case_ids, y=y)
