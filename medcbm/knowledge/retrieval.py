"""Dense, BM25 and hybrid (RRF) search and the client-side sidecar files, shared by one store and by a set
of sharded stores.

A class using :class:`SearchMixin` supplies where the vectors and the BM25 index live (``_query_dense``,
``lexical``, ``fetch_chunks``); ranking, filtering, fusion and passage building are the same code for both,
which is what makes a sharded search return exactly what one store holding everything returns.
:class:`SidecarMixin` holds the manifest and BM25 folder kept in ``cache_dir``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medcbm._io import atomic_write_json
from medcbm.errors import ConfigError, DataError
from medcbm.knowledge.fusion import rrf_fuse
from medcbm.knowledge.passage import FILTER_KEYS, Passage

MODES = ("dense", "bm25", "hybrid")


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


def chroma_where(where: dict[str, Any] | None, exclude: set[str]) -> dict | None:
    """A chroma ``where`` clause for equality/``in`` filters plus excluded documents (None when unfiltered)."""
    clauses = [{k: {"$in": list(v)} if isinstance(v, (list, tuple, set, frozenset)) else v}
               for k, v in (where or {}).items()]
    if exclude:
        clauses.append({"doc_id": {"$nin": sorted(exclude)}})
    return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}


def du(path: Path) -> int:
    """Bytes of all files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class SidecarMixin:
    """The manifest (``knowledge_store.json``) and BM25 folder in ``cache_dir``, beside the client."""

    cache_dir: Path
    embedder_name: str

    @property
    def lexical_dir(self) -> Path:
        return self.cache_dir / "bm25"

    @property
    def manifest_path(self) -> Path:
        return self.cache_dir / "knowledge_store.json"

    def manifest(self) -> dict[str, Any]:
        """The JSON sidecar written after each successful ingest (``{}`` before the first)."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_manifest(self, inputs: dict[str, str] | None, replace_inputs: bool, **fields: Any) -> None:
        """Record ``fields`` and the ingest ``inputs`` (replacing or extending the recorded ones)."""
        manifest = {**self.manifest(), "embedder": self.embedder_name, **fields}
        if inputs is not None:
            manifest["inputs"] = dict(inputs) if replace_inputs else {**manifest.get("inputs", {}), **inputs}
        atomic_write_json(self.manifest_path, manifest)

    def check_copy_source(self, other: Any) -> None:
        """Refuse to copy stored vectors made by another embedder."""
        if other.recorded_embedder != self.embedder_name:
            raise ConfigError(f"cannot copy chunks embedded with '{other.recorded_embedder}' into a store "
                              f"using '{self.embedder_name}'")


class SearchMixin:
    """``search``/``search_batch`` for a class providing ``location``, ``embedder``, ``lexical``,
    ``check_embedder()``, ``_size()``, ``_query_dense(emb, n, where)`` and ``fetch_chunks(ids)``."""

    location: str

    def _query_dense(self, emb: np.ndarray, n: int, where: dict | None) -> list[list[tuple[str, float]]]:
        """Per query, up to ``n`` ``(chunk id, cosine distance)`` pairs, nearest first."""
        raise NotImplementedError

    def fetch_chunks(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        """``chunk id -> (text, metadata)`` read from chroma."""
        raise NotImplementedError

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

    def _dense(self, queries: list[str], n: int, where: dict | None, exclude: set[str]) -> list[list[Passage]]:
        emb = self.embedder.encode(queries, batch_size=64)
        hits = self._query_dense(emb, n, chroma_where(where, exclude))
        # ids + distances only: texts and provenance come from the in-memory chunk table of the BM25
        # sidecar (fetching documents/metadatas from chroma's sqlite tripled the query time)
        lex = self.lexical
        missing = [c for row in hits for c, _ in row if c not in lex.row_of]
        extra = self.fetch_chunks(missing) if missing else {}  # written by another client since the build
        out = []
        for row in hits:
            passages = []
            for cid, dist in row:
                r = lex.row_of.get(cid)
                text, meta = (lex.texts[r], lex.metas[r]) if r is not None else extra[cid]
                passages.append(meta_to_passage(cid, text, meta, 1.0 - dist))
            out.append(passages)
        return out

    def _bm25(self, query: str, n: int, where: dict | None, exclude: set[str]) -> list[Passage]:
        lex = self.lexical
        hits = lex.top_k(query, n, lex.mask(where, exclude))
        return [meta_to_passage(lex.ids[r], lex.texts[r], lex.metas[r], s) for r, s in hits]

    def search_batch(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", *,
                     exclude_doc_ids: set[str] | frozenset[str] | None = None,
                     where: dict[str, Any] | None = None, candidates: int = 50,
                     weights: tuple[float, float] = (1.0, 1.0)) -> list[list[Passage]]:
        """Top-``k`` passages for each query.

        Args:
            queries: query strings.
            k: passages per query.
            mode: ``dense`` (cosine similarity), ``bm25`` or ``hybrid`` (reciprocal-rank fusion of both).
            exclude_doc_ids: documents to leave out (e.g. already used by earlier queries).
            where: metadata equality filters on ``source``, ``modality``, ``license`` (a list means any of).
            candidates: how many of each ranking hybrid fuses (at least ``k``).
            weights: hybrid's reciprocal-rank weights of the (dense, BM25) rankings.

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
        dense = self._dense(queries, min(n, size), where, exclude) if mode in ("dense", "hybrid") else None
        if mode == "dense":
            return dense
        lexical = [self._bm25(q, n, where, exclude) for q in queries]
        if mode == "bm25":
            return lexical
        out = []
        for d, b in zip(dense, lexical):
            by_id = {p.chunk_id: p for p in (*b, *d)}
            ranks = {"dense": {p.chunk_id: r for r, p in enumerate(d, 1)},
                     "bm25": {p.chunk_id: r for r, p in enumerate(b, 1)}}
            fused = rrf_fuse([[p.chunk_id for p in d], [p.chunk_id for p in b]], weights=weights)[:k]
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
