"""The KnoBo concept generation loop, resumable, with full provenance on every concept.

Seed queries are "<class name> <modality>". Each query retrieves the top-k passages (excluding documents
already used), the backend proposes candidates citing those passages, the filters accept or reject them
(rejections are logged with a reason), and every accepted concept becomes a new query. The loop stops at
the target size or when the queue is exhausted. After each query the state is written atomically, so an
interrupted run resumes where it stopped (with the same configuration).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, deque
from pathlib import Path
from typing import Any, Sequence

from medcbm._io import atomic_write_json, sha256_text
from medcbm.concepts.backends.base import Backend, ProposalRequest, slugify
from medcbm.concepts.filters import CandidateFilter, EmbedFn, embed_minilm
from medcbm.concepts.prior import Retriever
from medcbm.concepts.schema import (
    Concept,
    ConceptBank,
    GenerationConfig,
    Provenance,
    RejectedCandidate,
)
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class StoreRetriever:
    """Adapts a :class:`medcbm.knowledge.KnowledgeStore` to the :class:`Retriever` protocol.

    Args:
        store: the knowledge store.
        mode: ``dense``, ``bm25`` or ``hybrid``.
        where: metadata filter (e.g. ``{"modality": "dermoscopy"}``).
    """

    def __init__(self, store: Any, *, mode: str = "hybrid", where: dict[str, str] | None = None):
        self.store, self.mode, self.where = store, mode, dict(where or {}) or None

    def search(self, query: str, *, k: int, exclude_doc_ids: set[str] | None = None) -> list:
        return self.store.search(query, k=k, mode=self.mode, exclude_doc_ids=set(exclude_doc_ids or ()), where=self.where)

    def search_batch(self, queries: Sequence[str], *, k: int) -> list[list]:
        """Top-``k`` passages for each query (one embedding pass)."""
        return self.store.search_batch(list(queries), k=k, mode=self.mode, where=self.where)

    @property
    def identity(self) -> dict[str, str]:
        """Store location, corpus hash and embedder (recorded in every concept's provenance)."""
        s = self.store
        return {"store": str(getattr(s, "location", "") or getattr(s, "path", "") or "knowledge-store"),
                "corpus_hash": str(s.corpus_hash), "embedder": str(getattr(s, "embedder_name", "") or "")}


def config_hash(config: GenerationConfig) -> str:
    """Identity of a run's configuration (a resume must match it)."""
    return sha256_text(json.dumps(config.model_dump(mode="json"), sort_keys=True))


def _load_state(path: Path, chash: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"generation state file is unreadable ({err}); delete it to start over", path=str(path)) from None
    if state.get("config_hash") != chash:
        raise ConfigError(f"state file {path} belongs to a different generation config; delete it or rerun with the "
                          "same classes, modality, store and options")
    return state


def generate_bank(retriever: Retriever, backend: Backend, config: GenerationConfig, *, identity: dict[str, str] | None = None,
                  state_path: str | os.PathLike | None = None, embed: EmbedFn | None = None,
                  name: str = "") -> ConceptBank:
    """Run the generation loop and return the bank (concepts without priors or grounding yet).

    Args:
        retriever: knowledge store adapter (:class:`StoreRetriever`).
        backend: concept proposer.
        config: the run configuration (classes, modality, sizes, filter settings).
        identity: ``{"store", "corpus_hash", "embedder"}`` for provenance (default: ``retriever.identity``).
        state_path: JSON file for resuming (written after every query).
        embed: embedding function for near-duplicate filtering (default MiniLM).

    Raises:
        DataError: no concept was accepted (the message summarises the rejection reasons).
    """
    ident = identity or getattr(retriever, "identity", None)
    if not ident or not ident.get("corpus_hash"):
        raise ConfigError("generation needs the store identity (store path and corpus hash) for provenance")
    chash = config_hash(config)
    spath = Path(state_path) if state_path else None
    state = _load_state(spath, chash) if spath else None
    if state is None:
        state = {"config_hash": chash, "queue": [f"{c.name} {config.modality.replace('_', ' ')}" for c in config.classes],
                 "used_docs": [], "done_queries": [], "concepts": [], "rejected": [], "n_queries": 0}
    concepts = [Concept.model_validate(c) for c in state["concepts"]]
    rejected = [RejectedCandidate.model_validate(r) for r in state["rejected"]]
    queue: deque[str] = deque(state["queue"])
    used: set[str] = set(state["used_docs"])
    done: list[str] = list(state["done_queries"])
    filt = CandidateFilter(config.classes, embed or embed_minilm, dedup_threshold=config.dedup_threshold,
                           min_words=config.min_words, max_words=config.max_words,
                           exclude_categories=config.exclude_categories)
    filt.seed([c.name for c in concepts])

    def save() -> None:
        if spath:
            atomic_write_json(spath, {"config_hash": chash, "queue": list(queue), "used_docs": sorted(used),
                                      "done_queries": done, "concepts": [c.model_dump(mode="json") for c in concepts],
                                      "rejected": [r.model_dump(mode="json") for r in rejected], "n_queries": len(done)})

    while queue and len(concepts) < config.target_size and len(done) < config.max_queries:
        query = queue.popleft()
        passages = retriever.search(query, k=config.k, exclude_doc_ids=used)
        done.append(query)
        if not passages:
            logger.info("query %r: no unused passages left", query)
            save()
            continue
        used.update(p.doc_id for p in passages)
        prop = backend.propose(ProposalRequest(query, passages, config.classes, config.modality, config.max_per_query))
        rejected.extend(prop.rejected)
        by_doc = {p.doc_id: p for p in passages}
        for cand in prop.candidates:
            if len(concepts) >= config.target_size:
                break

            def reject(reason: str, detail: str) -> None:
                rejected.append(RejectedCandidate(name=cand.name, reason=reason, detail=detail, query=query,
                                                  doc_id=cand.doc_id, backend=backend.name))

            p = by_doc.get(cand.doc_id)
            if p is None:  # backends should have caught this; never let an uncited concept through
                reject("unknown_doc_id", f"cites {cand.doc_id!r} which this query did not retrieve")
                continue
            verdict = filt.check(cand)
            if verdict:
                reject(*verdict)
                continue
            meta = getattr(p, "metadata", {}) or {}
            concepts.append(Concept(
                id=slugify(cand.name), name=cand.name, question=cand.question or f"Is there {cand.name}?",
                modality=config.modality, synonyms=cand.synonyms, category=cand.category,
                provenance=Provenance(query=query, doc_id=p.doc_id, chunk_id=getattr(p, "chunk_id", ""),
                                      reference=cand.reference, source=getattr(p, "source", ""),
                                      citation=str(meta.get("reference", "")), store=ident["store"],
                                      corpus_hash=ident["corpus_hash"], embedder=ident.get("embedder", "")),
                generator=prop.generator,
            ))
            queue.append(f"{cand.name} {config.modality.replace('_', ' ')}")
        logger.info("query %d %r: %d passages, %d candidates, bank %d/%d", len(done), query, len(passages),
                    len(prop.candidates), len(concepts), config.target_size)
        save()

    if not concepts:
        reasons = Counter(r.reason for r in rejected)
        raise DataError(f"no concept accepted after {len(done)} queries; rejections: {dict(reasons) or 'none'}. "
                        "Check the store holds passages for this modality and the backend's output.")
    stop = "target_size" if len(concepts) >= config.target_size else "max_queries" if len(done) >= config.max_queries else "exhausted"
    stats: dict[str, float | int | str] = {"n_concepts": len(concepts), "n_rejected": len(rejected), "n_queries": len(done),
                                           "n_used_docs": len(used), "stopped": stop}
    stats.update({f"rejected_{k}": v for k, v in sorted(Counter(r.reason for r in rejected).items())})
    return ConceptBank(name=name, modality=config.modality, classes=config.classes, concepts=concepts,
                       rejected=rejected, config=config, stats=stats)


def build_bank(store: Any, config: GenerationConfig, *, backend: Backend, state_path: str | os.PathLike | None = None,
               prior_method: str | None = None, embed: EmbedFn | None = None, name: str = "",
               overrides: dict[str, str | None] | None = None) -> ConceptBank:
    """Generation loop + class–concept prior + grounding map: the full bank from a knowledge store.

    Args:
        store: a :class:`medcbm.knowledge.KnowledgeStore`.
        prior_method: ``retrieval`` or ``llm`` (default: ``llm`` for backends that can judge, else ``retrieval``).
        overrides: reviewed grounding decisions ``{concept_id: source or None}``.
    """
    from medcbm.concepts.alignment import align_bank
    from medcbm.concepts.prior import compute_priors

    retriever = StoreRetriever(store, where=config.where)
    bank = generate_bank(retriever, backend, config, state_path=state_path, embed=embed, name=name)
    method = prior_method or ("llm" if backend.can_judge else "retrieval")
    concepts = compute_priors(bank.concepts, bank.classes, retriever, method=method, backend=backend)
    bank = bank.model_copy(update={"concepts": concepts})
    return align_bank(bank, embed=embed, overrides=overrides)


def parse_classes(specs: Sequence[str]) -> list:
    """Parse ``key=Name|synonym|...`` (or just ``Name``) class specs from the CLI."""
    from medcbm.concepts.schema import ClassSpec

    out = []
    for s in specs:
        for part in [x for x in s.split(",") if x.strip()]:
            key, _, rest = part.partition("=")
            if not rest:
                key, rest = slugify(part), part
            names = [x.strip() for x in rest.split("|") if x.strip()]
            if not names:
                raise ConfigError(f"class spec {part!r} has no name (use key=Name|synonym)")
            out.append(ClassSpec(key=key.strip(), name=names[0], synonyms=names[1:]))
    keys = [c.key for c in out]
    if len(set(keys)) != len(keys) or not out:
        raise ConfigError(f"--classes needs distinct class keys, got {keys}")
    return out
