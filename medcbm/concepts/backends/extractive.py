"""The offline extractive backend (default): vocabulary-guided finding extraction from retrieved passages.

Deterministic and model-free. For each retrieved passage, every sentence is scanned for affirmed
(non-negated) mentions of clinical findings from the modality's vocabulary (starter-corpus lexicon plus
HPO terms). Each finding becomes a candidate citing the sentence it was read from. Candidates are
ranked by how specific their retrieval evidence is to one class (the classes co-mentioned with the
finding in the retrieved passages), then by how often and how highly they were retrieved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from medcbm._io import sha256_text
from medcbm.concepts.backends.base import (
    Backend,
    Candidate,
    Proposal,
    ProposalRequest,
    default_question,
    register_backend,
)
from medcbm.concepts.negation import find_mentions, sentence_spans
from medcbm.concepts.schema import GeneratorInfo
from medcbm.concepts.vocab import FindingTerm, finding_vocabulary

VERSION = "extractive-v1"


def class_specificity(class_hits: dict[str, int], n_classes: int) -> float:
    """1 − normalised entropy of the (add-one smoothed) class co-mention counts, in [0, 1].

    A finding co-mentioned with one class only scores high; one spread evenly over all classes (or
    never co-mentioned) scores 0.
    """
    if n_classes <= 1:
        return 0.0
    counts = [v + 1 for v in class_hits.values()] + [1] * (n_classes - len(class_hits))
    total = sum(counts)
    ent = -sum(c / total * math.log(c / total) for c in counts)
    return 1.0 - ent / math.log(n_classes)


@register_backend("extractive")
class ExtractiveBackend(Backend):
    """Mine visual findings from passages with a lexicon/HPO vocabulary.

    Args:
        use_hpo: add HPO terms of the modality's subtree to the vocabulary.
        lexicon_path: override the shipped lexicon TSV.
    """

    def __init__(self, use_hpo: bool = True, lexicon_path: str | None = None, **_: object):
        self.use_hpo = use_hpo
        self.lexicon_path = lexicon_path
        self.model = VERSION + ("+hpo" if use_hpo else "")
        self._vocab: dict[str, list[FindingTerm]] = {}

    def vocabulary(self, modality: str) -> list[FindingTerm]:
        """The finding vocabulary for ``modality`` (loaded once)."""
        if modality not in self._vocab:
            self._vocab[modality] = finding_vocabulary(modality, use_hpo=self.use_hpo, lexicon_path=self.lexicon_path)
        return self._vocab[modality]

    def propose(self, request: ProposalRequest) -> Proposal:
        vocab = self.vocabulary(request.modality)
        by_term = {v.term: v for v in vocab}
        term_map = {v.term: list(v.synonyms) for v in vocab}
        class_map = {c.key: c.terms for c in request.classes}
        prompt_hash = sha256_text(VERSION, request.modality, request.query,
                                  *[p.chunk_id or p.doc_id for p in request.passages])
        gen = GeneratorInfo(backend=self.name, model=self.model, prompt_hash=prompt_hash)

        # term -> evidence: first (best-ranked) passage/sentence, hit count, rank weight, class co-mentions
        first: dict[str, tuple[int, str, str, str]] = {}
        weight: dict[str, float] = defaultdict(float)
        classes_with: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for rank, p in enumerate(request.passages):
            affirmed_classes = {m.term for m in find_mentions(p.text, class_map) if not m.negated}
            in_passage: set[str] = set()
            for s, e in sentence_spans(p.text):
                sent = p.text[s:e]
                for m in find_mentions(sent, term_map):
                    if m.negated:
                        continue
                    if m.term not in first:
                        first[m.term] = (rank, p.doc_id, getattr(p, "chunk_id", ""), sent)
                    weight[m.term] += 1.0 / (1 + rank)
                    in_passage.add(m.term)
            for term in in_passage:
                for ck in affirmed_classes:
                    classes_with[term][ck] += 1

        n_classes = len(request.classes)
        scored = []
        for term, (rank, doc_id, chunk_id, sent) in first.items():
            spec = class_specificity(dict(classes_with[term]), n_classes)
            score = (0.5 + spec) * weight[term]
            scored.append((-score, term, doc_id, chunk_id, sent))
        scored.sort()
        cands = []
        for neg_score, term, doc_id, chunk_id, sent in scored[: request.max_candidates]:
            entry = by_term[term]
            cands.append(Candidate(
                name=term, doc_id=doc_id, chunk_id=chunk_id, reference=sent,
                question=entry.question or default_question(term), visual=entry.visual,
                synonyms=list(entry.synonyms), category=entry.category or entry.source, score=round(-neg_score, 4),
            ))
        return Proposal(cands, gen)

