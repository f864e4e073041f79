"""The knowledge store: chunks with provenance in a chromadb collection, plus a BM25 sidecar.

``open_store(path)`` opens an embedded ``PersistentClient`` (one process at a time: chroma's embedded
mode is not multi-process safe); ``open_store(url="http://host:port")`` talks to a ``chroma run`` server.
The collection metadata records the embedder and the corpus hash; a store refuses to be queried or
extended with another embedder. Chroma never embeds anything itself: embeddings are always computed by
our :class:`~medcbm.knowledge.embedders.Embedder` and passed explicitly (chroma's default embedding
function would download a model).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medcbm._io import atomic_write_json, sha256_text
from medcbm.errors import ConfigError, DataError
from medcbm.knowledge.fusion import rrf_fuse
from medcbm.knowledge.passage import FILTER_KEYS, Passage

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "medcbm_knowledge"
DEFAULT_EMBEDDER = "minilm"
MODES = ("dense", "bm25", "hybrid")
_CORE_META = ("doc_id", "source", "title", "section", "license", "modality", "start", "end", "text_hash", "extra")
_PAGE = 5000
_SIZE_TTL_S = 5.0


def meta_to_passage(chunk_id: str, text: str, meta: dict[str, Any], score: float, **extra: Any) -> Passage:
    """Build a :class:`Passage` from a stored metadata dict (``extra`` holds JSON of non-core fields)."""
    more = json.loads(meta.get("extra") or "{}")
    more.update(extra)
    return Passage(
        chunk_id=chunk_id, doc_id=str(meta.get("doc_id", "")), text=text, score=float(score),
        source=str(meta.get("source", "")), title=str(meta.get("title", "")), section=str(meta.get("section", "")),
        license=str(meta.get("license", "")), modality=str(meta.get("modality", "")),
        start=int(meta.get("start", 0)), end=int(meta.get("end", 0)), metadata=more,
    )


class KnowledgeStore:
    """Chunks in a chroma collection with dense, BM25 and hybrid (RRF) search.

    Use :func:`open_store` rather than the constructor.
    """

    def __init__(self, client: Any, collection: Any, *, embedder_name: str | None, cache_dir: Path, location: str):
        self.client, self.collection, self.cache_dir, self.location = client, collection, Path(cache_dir), location
        meta = dict(collection.metadata or {})
        self.recorded_embedder: str | None = meta.get("embedder")
        self.embedder_name: str = embedder_name or self.recorded_embedder or DEFAULT_EMBEDDER
        self._embedder = None
        self._lexical = None
        self.last_ingest = None  # IngestSummary of the latest add_documents call in this process
        self._size_cache: tuple[int, float] | None = None

    # --- bookkeeping --------------------------------------------------------------------------------
    @property
    def corpus_hash(self) -> str:
        """Hash of every (chunk id, text hash) pair in the store; ``""`` while empty."""
        return str((self.collection.metadata or {}).get("corpus_hash", ""))

    @property
    def lexical_dir(self) -> Path:
        return self.cache_dir / "bm25"

    @property
    def manifest_path(self) -> Path:
        return self.cache_dir / "knowledge_store.json"

    def __len__(self) -> int:
        return int(self.collection.count())

    def _size(self) -> int:
        """Chunk count for the query path, cached for a few seconds (``count()`` costs ~8 ms on sqlite)."""
        now = time.monotonic()
        if self._size_cache is None or now - self._size_cache[1] > _SIZE_TTL_S:
            self._size_cache = (len(self), now)
        return self._size_cache[0]

    def manifest(self) -> dict[str, Any]:
        """The JSON sidecar written after each successful ingest (``{}`` before the first)."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def check_embedder(self) -> None:
        """Refuse an embedder other than the one the store was built with."""
        if self.recorded_embedder and self.recorded_embedder != self.embedder_name:
            raise ConfigError(
                f"store {self.location} was built with embedder '{self.recorded_embedder}' but was opened with "
                f"'{self.embedder_name}'; open it with embedder='{self.recorded_embedder}' or rebuild it in a new folder"
            )

    @property
    def embedder(self):
        """The loaded embedder (loaded on first use, shared per process)."""
        if self._embedder is None:
            from medcbm.knowledge.embedders import get_embedder

            self.check_embedder()
            self._embedder = get_embedder(self.embedder_name)
        return self._embedder

    def iter_all(self, include: Sequence[str] = ("documents", "metadatas")):
        """Yield ``(ids, documents, metadatas)`` pages over the whole collection."""
        offset = 0
        while True:
            page = self.collection.get(include=list(include), limit=_PAGE, offset=offset)
            if not page["ids"]:
                return
            row = (page["ids"], page.get("documents"), page.get("metadatas"))
            yield (*row, page.get("embeddings")) if "embeddings" in include else row
            offset += len(page["ids"])

    def stats(self) -> dict[str, Any]:
        """Counts per source/modality/licence, embedder, corpus hash and sizes on disk."""
        by: dict[str, dict[str, int]] = {"source": {}, "modality": {}, "license": {}}
        docs: set[str] = set()
        for _, _, metas in self.iter_all(include=("metadatas",)):
            for m in metas:
                docs.add(m["doc_id"])
                for key, counts in by.items():
                    v = m.get(key) or "(none)"
                    counts[v] = counts.get(v, 0) + 1
        return {
            "location": self.location, "collection": self.collection.name, "embedder": self.recorded_embedder,
            "corpus_hash": self.corpus_hash, "n_chunks": len(self), "n_documents": len(docs),
            "by_source": by["source"], "by_modality": by["modality"], "by_license": by["license"],
            "disk_bytes": _du(self.cache_dir), "bm25_bytes": _du(self.lexical_dir),
            "inputs": self.manifest().get("inputs", {}),
        }

    # --- writing (used by medcbm.knowledge.ingest) ----------------------------------------------------
    def existing_metadata(self, ids: list[str]) -> dict[str, dict]:
        """``chunk id -> stored metadata`` for those of ``ids`` already stored."""
        out: dict[str, dict] = {}
        for i in range(0, len(ids), _PAGE):
            got = self.collection.get(ids=ids[i:i + _PAGE], include=["metadatas"])
            out.update(zip(got["ids"], got["metadatas"]))
        return out

    def chunk_ids_of(self, doc_ids: list[str]) -> list[str]:
        """Ids of stored chunks belonging to ``doc_ids``."""
        out: list[str] = []
        for i in range(0, len(doc_ids), 500):
            got = self.collection.get(where={"doc_id": {"$in": doc_ids[i:i + 500]}}, include=[])
            out.extend(got["ids"])
        return out

    def finalize(self, inputs: dict[str, str] | None = None, *, replace_inputs: bool = False) -> str:
        """Recompute the corpus hash, rebuild the BM25 sidecar and record both (after a successful write)."""
        ids, texts, metas = [], [], []
        for pid, pdocs, pmetas in self.iter_all():
            ids += pid
            texts += pdocs
            metas += pmetas
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids, texts, metas = [ids[i] for i in order], [texts[i] for i in order], [metas[i] for i in order]
        corpus_hash = sha256_text(self.embedder_name, *(f"{i}\t{m.get('text_hash', '')}" for i, m in zip(ids, metas)))
        if ids:
            from medcbm.knowledge.lexical import LexicalIndex

            self._lexical = LexicalIndex.build(ids, texts, metas, corpus_hash)
            self._lexical.save(self.lexical_dir)
        self.collection.modify(metadata={"embedder": self.embedder_name, "corpus_hash": corpus_hash})
        self._size_cache = None
        self.recorded_embedder = self.embedder_name
        manifest = self.manifest()
        manifest.update({"embedder": self.embedder_name, "corpus_hash": corpus_hash, "n_chunks": len(ids),
                         "collection": self.collection.name, "location": self.location})
        if inputs is not None:
            manifest["inputs"] = dict(inputs) if replace_inputs else {**manifest.get("inputs", {}), **inputs}
        atomic_write_json(self.manifest_path, manifest)
        return corpus_hash

    def copy_from(self, other: KnowledgeStore) -> set[str]:
        """Upsert every chunk of ``other`` (same embedder) with its stored embedding: no re-embedding."""
        if other.recorded_embedder != self.embedder_name:
            raise ConfigError(f"cannot copy chunks embedded with '{other.recorded_embedder}' into a store "
                              f"using '{self.embedder_name}'")
        copied: set[str] = set()
        for ids, docs, metas, embs in other.iter_all(include=("documents", "metadatas", "embeddings")):
            self.collection.upsert(ids=ids, documents=docs, metadatas=metas, embeddings=embs)
            copied.update(ids)
        return copied

    # --- reading --------------------------------------------------------------------------------------
    def _check_queryable(self, mode: str, where: dict | None) -> int:
        if mode not in MODES:
            raise ConfigError(f"unknown search mode '{mode}'; choose one of {', '.join(MODES)}")
        n = self._size()
        if n == 0:
            raise DataError(f"knowledge store {self.location} is empty; ingest documents first "
                            "(medcbm knowledge ingest PATH --store DIR)")
        self.check_embedder()
        for key in where or {}:
            if key not in FILTER_KEYS:
                raise ConfigError(f"cannot filter on '{key}'; filter keys: {', '.join(FILTER_KEYS)}")
        return n

    @property
    def lexical(self):
        """The BM25 sidecar, rebuilt when it is missing or was built for another corpus hash."""
        from medcbm.knowledge.lexical import LexicalIndex

        want = self.corpus_hash
        if self._lexical is not None and self._lexical.corpus_hash == want:
            return self._lexical
        if want and LexicalIndex.saved_hash(self.lexical_dir) == want:
            self._lexical = LexicalIndex.load(self.lexical_dir)
        else:
            logger.info("BM25 index for %s is stale or missing; rebuilding", self.location)
            self.finalize()
        return self._lexical

    def _dense(self, queries: list[str], n: int, where: dict | None, exclude: set[str],
               size: int) -> list[list[Passage]]:
        clauses = [{k: {"$in": list(v)} if isinstance(v, (list, tuple, set, frozenset)) else v}
                   for k, v in (where or {}).items()]
        if exclude:
            clauses.append({"doc_id": {"$nin": sorted(exclude)}})
        chroma_where = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}
        emb = self.embedder.encode(queries, batch_size=64)
        # ids + distances only: texts and provenance come from the in-memory chunk table of the BM25
        # sidecar (fetching documents/metadatas from chroma's sqlite tripled the query time)
        res = self.collection.query(query_embeddings=emb, n_results=min(n, size), where=chroma_where,
                                    include=["distances"])
        lex = self.lexical
        missing = [c for ids in res["ids"] for c in ids if c not in lex.row_of]
        extra = {}
        if missing:  # written by another client since the sidecar was built
            got = self.collection.get(ids=missing, include=["documents", "metadatas"])
            extra = {c: (d, m) for c, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
        out = []
        for ids, dists in zip(res["ids"], res["distances"]):
            row = []
            for cid, dist in zip(ids, dists):
                r = lex.row_of.get(cid)
                text, meta = (lex.texts[r], lex.metas[r]) if r is not None else extra[cid]
                row.append(meta_to_passage(cid, text, meta, 1.0 - dist))
            out.append(row)
        return out

    def _bm25(self, query: str, n: int, where: dict | None, exclude: set[str]) -> list[Passage]:
        lex = self.lexical
        hits = lex.top_k(query, n, lex.mask(where, exclude))
        return [meta_to_passage(lex.ids[r], lex.texts[r], lex.metas[r], s) for r, s in hits]

    def search_batch(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", *,
                     exclude_doc_ids: set[str] | frozenset[str] | None = None,
                     where: dict[str, Any] | None = None, candidates: int = 50) -> list[list[Passage]]:
        """Top-``k`` passages for each query.

        Args:
            queries: query strings.
            k: passages per query.
            mode: ``dense`` (cosine similarity), ``bm25`` or ``hybrid`` (reciprocal-rank fusion of both).
            exclude_doc_ids: documents to leave out (e.g. already used by earlier queries).
            where: metadata equality filters on ``source``, ``modality``, ``license`` (a list means any of).
            candidates: how many of each ranking hybrid fuses (at least ``k``).

        Raises:
            DataError: the store is empty.  ConfigError: bad mode, filter key or mismatched embedder.
        """
        queries = list(queries)
        size = self._check_queryable(mode, where)
        if k < 1:
            raise ConfigError(f"k must be >= 1 (got {k})")
        exclude = set(exclude_doc_ids or ())
        if not queries:
            return []
        n = max(k, candidates) if mode == "hybrid" else k
        dense = self._dense(queries, n, where, exclude, size) if mode in ("dense", "hybrid") else None
        if mode == "dense":
            return dense
        lexical = [self._bm25(q, n, where, exclude) for q in queries]
        if mode == "bm25":
            return lexical
        out = []
        for d, b in zip(dense, lexical):
            by_id = {p.chunk_id: p for p in (*b, *d)}
            ranks = {"dense": {p.chunk_id: r for r, p in enumerate(d, 1)}, "bm25": {p.chunk_id: r for r, p in enumerate(b, 1)}}
            fused = rrf_fuse([[p.chunk_id for p in d], [p.chunk_id for p in b]])[:k]
            out.append([
                replace(by_id[cid], score=score,
                        metadata={**by_id[cid].metadata, "ranks": {m: r[cid] for m, r in ranks.items() if cid in r}})
                for cid, score in fused
            ])
        return out

    def search(self, query: str, k: int = 10, mode: str = "hybrid", *,
               exclude_doc_ids: set[str] | frozenset[str] | None = None,
               where: dict[str, Any] | None = None) -> list[Passage]:
        """Top-``k`` passages for one query (see :meth:`search_batch`)."""
        return self.search_batch([query], k, mode, exclude_doc_ids=exclude_doc_ids, where=where)[0]


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def open_store(path: str | os.PathLike | None = "runs/knowledge", *, embedder: str | None = None,
               url: str | None = None, collection: str = DEFAULT_COLLECTION,
               cache_dir: str | os.PathLike | None = None) -> KnowledgeStore:
    """Open (creating if needed) a knowledge store.

    Args:
        path: folder of an embedded chroma ``PersistentClient`` store (ignored when ``url`` is given).
        embedder: embedder name (default: the one the store was built with, else ``minilm``).
        url: ``http://host:port`` of a ``chroma run`` server; uses ``HttpClient``.
        collection: chroma collection name (3-512 characters).
        cache_dir: where the manifest and BM25 sidecar live (default: ``path``; for a server,
            ``runs/knowledge-http/<host>_<port>_<collection>``).
    """
    import chromadb
    from chromadb.config import Settings

    if not 3 <= len(collection) <= 512:
        raise ConfigError(f"collection name must have 3-512 characters (got {collection!r})")
    settings = Settings(anonymized_telemetry=False)
    try:
        if url:
            u = urlparse(url if "://" in url else f"http://{url}")
            if not u.hostname:
                raise ConfigError(f"cannot parse chroma server url {url!r}")
            client = chromadb.HttpClient(host=u.hostname, port=u.port or 8000, ssl=u.scheme == "https",
                                         settings=settings)
            location = f"{u.scheme}://{u.hostname}:{u.port or 8000}/{collection}"
            cache = Path(cache_dir or Path("runs/knowledge-http") / f"{u.hostname}_{u.port or 8000}_{collection}")
        else:
            if path is None:
                raise ConfigError("open_store needs a folder path or a url")
            Path(path).mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path), settings=settings)
            location, cache = str(path), Path(cache_dir or path)
        # embedding_function=None: chroma must never build its default (downloading) embedder
        col = client.get_or_create_collection(collection, embedding_function=None,
                                              configuration={"hnsw": {"space": "cosine"}})
    except ConfigError:
        raise
    except Exception as exc:  # chroma raises many types (connection, sqlite, value errors)
        raise DataError(f"cannot open knowledge store ({type(exc).__name__}: {exc})", path=str(url or path)) from None
    cache.mkdir(parents=True, exist_ok=True)
    return KnowledgeStore(client, col, embedder_name=embedder, cache_dir=cache, location=location)
