"""Class–concept prior (KnoBo's W_prior): +1 present, −1 absent, 0 unknown, each with evidence.

Offline default (``method="retrieval"``): retrieve passages for "<concept> <class>", and in each clause
that mentions the class, count affirmed (+1) and negated (−1) mentions of the concept (negation-aware
matching). The majority sign wins; ties and no evidence give 0. With an LLM backend
(``method="llm"``) the backend answers "Does <class> show <concept>?" from the same passages.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

from medcbm.concepts.backends.base import Backend
from medcbm.concepts.negation import find_mentions, sentence_spans
from medcbm.concepts.schema import ClassAssociation, ClassSpec, Concept, Evidence

logger = logging.getLogger(__name__)

MAX_EVIDENCE = 3


class Retriever(Protocol):
    """What the generation loop and the prior need from a knowledge store."""

    def search(self, query: str, *, k: int, exclude_doc_ids: set[str] | None = None) -> list:
        """Top-``k`` passages for ``query`` from documents not in ``exclude_doc_ids``."""


def clause_evidence(text: str, cls: ClassSpec, concept_terms: Sequence[str],
                    classes: Sequence[ClassSpec] = ()) -> list[tuple[int, float, str]]:
    """``(polarity, weight, sentence)`` for each sentence of ``text`` that affirms the class and mentions the concept.

    Negation is decided per clause (see :mod:`medcbm.concepts.negation`). The weight is
    1 / (number of classes the sentence mentions): "X occurs in A, B and C" is weaker evidence for A
    than "A shows X".
    """
    others = {c.key: c.terms for c in classes if c.key != cls.key}
    out = []
    for s, e in sentence_spans(text):
        clause = text[s:e]
        if not any(not m.negated for m in find_mentions(clause, cls.terms)):
            continue
        for m in find_mentions(clause, list(concept_terms)):
            n_cls = 1 + len({x.term for x in find_mentions(clause, others) if not x.negated}) if others else 1
            out.append((-1 if m.negated else 1, 1.0 / n_cls, clause.strip()))
            break
    return out


def retrieval_association(concept: Concept, cls: ClassSpec, passages: Sequence,
                          classes: Sequence[ClassSpec] = (), min_score: float = 0.5) -> ClassAssociation:
    """Prior for one (class, concept) pair from negation-aware evidence in ``passages``.

    +1 when the weighted sum of affirmed minus negated clauses reaches ``min_score``, −1 when it is at
    most −``min_score``, else 0.
    """
    ev: list[Evidence] = []
    score = 0.0
    for p in passages:
        for pol, w, clause in clause_evidence(p.text, cls, concept.terms, classes):
            score += pol * w
            ev.append(Evidence(doc_id=p.doc_id, chunk_id=getattr(p, "chunk_id", ""), sentence=clause, polarity=pol))
    prior = 1 if score >= min_score else -1 if score <= -min_score else 0
    keep = [e for e in ev if e.polarity == prior][:MAX_EVIDENCE] if prior else ev[:MAX_EVIDENCE]
    return ClassAssociation(class_key=cls.key, prior=prior, method="retrieval", evidence=keep)


def llm_association(concept: Concept, cls: ClassSpec, passages: Sequence, backend: Backend) -> ClassAssociation:
    """Prior for one pair from the backend's yes/no judgement over ``passages`` (0 when it cannot judge)."""
    res = backend.judge(f"Does {cls.name} typically show this finding: {concept.name}?", passages)
    if res is None:
        return retrieval_association(concept, cls, passages)
    prior, doc = res
    by_doc = {p.doc_id: p for p in passages}
    ev = []
    if prior and doc in by_doc:
        ev = [Evidence(doc_id=doc, chunk_id=getattr(by_doc[doc], "chunk_id", ""),
                       sentence=" ".join(by_doc[doc].text.split())[:400], polarity=prior)]
    return ClassAssociation(class_key=cls.key, prior=prior if ev else 0, method="llm", evidence=ev)


def compute_priors(concepts: Sequence[Concept], classes: Sequence[ClassSpec], retriever: Retriever, *, k: int = 6,
                   method: str = "retrieval", backend: Backend | None = None) -> list[Concept]:
    """Return copies of ``concepts`` with ``classes`` filled by the prior for every class.

    Args:
        method: ``retrieval`` (negation-aware evidence) or ``llm`` (needs ``backend``).
    """
    if method not in {"retrieval", "llm"}:
        raise ValueError(f"unknown prior method {method!r} (retrieval, llm)")
    queries = [f"{c.name} {cls.name}" for c in concepts for cls in classes]
    batch = getattr(retriever, "search_batch", None)
    results = batch(queries, k=k) if batch else [retriever.search(q, k=k, exclude_doc_ids=None) for q in queries]
    out = []
    for i, c in enumerate(concepts):
        assocs = []
        for j, cls in enumerate(classes):
            passages = results[i * len(classes) + j]
            if method == "llm" and backend is not None:
                assocs.append(llm_association(c, cls, passages, backend))
            else:
                assocs.append(retrieval_association(c, cls, passages, classes))
        out.append(c.model_copy(update={"classes": assocs}))
    return out
