"""One knowledge store spread over several ``chroma run`` servers, searched as if it were a single store.

Documents are sharded by a stable hash of their ``doc_id`` (:func:`shard_of`), so all chunks of a document
live on one server and a re-ingest touches the same server with the same content-derived chunk ids
(idempotent, resumable). Each server's collection records its position (``shard: "i/n"``); opening the
servers in another order, or a shard on its own, is refused, since routing depends on the order.

Search returns exactly what one store holding every chunk returns:

* dense: every shard returns its own top ``n`` by cosine distance; the global top ``n`` is among their
  union, so merging by distance gives the single-store ranking.
* BM25: see :attr:`ShardedStore.lexical`: scores need corpus-wide statistics, so one index is built
  over all shards' chunk tables.
* hybrid: RRF over the two merged lists, the same code as for one store.

Writes go to all servers concurrently, one writer thread per server. A write is all-or-nothing per shard:
if a server fails, the other shards keep (and finalise) their part, and rerunning the same ingest writes
only what is missing. Servers serialise writes themselves; there is no cross-server lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medcbm._io import sha256_text
from medcbm.errors import ConfigError, DataError, MedcbmError
from medcbm.knowledge.retrieval import SearchMixin, SidecarMixin, du
from medcbm.knowledge.store import DEFAULT_EMBEDDER, KnowledgeStore, check_shard, connect, one_line

logger = logging.getLogger(__name__)


def shard_of(doc_id: str, n_shards: int) -> int:
    """Shard index of a document: SHA-256 of its id modulo ``n_shards`` (stable across runs and hosts)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % n_shards


def doc_of(chunk_id: str) -> str:
    """Document id of a chunk id (``<doc_id>#<start>``)."""
    return chunk_id.rpartition("#")[0]


class ShardedStore(SidecarMixin, SearchMixin):
    """The :class:`~medcbm.knowledge.store.KnowledgeStore` interface over several servers' collections.

    Use :func:`~medcbm.knowledge.store.open_store` with several urls rather than the constructor.
    """

    def __init__(self, shards: list[KnowledgeStore], *, cache_dir: Path, embedder_name: str):
        self.shards, self.cache_dir, self.embedder_name = shards, Path(cache_dir), embedder_name
        self.location = ", ".join(s.location for s in shards)
        self._lexical = None
        self._lexical_key: str | None = None
        self.last_ingest = None

    # --- plumbing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _naming(self, shard: KnowledgeStore) -> Iterator[None]:
        """Turn a server's failure into a one-line error naming it."""
        try:
            yield
        except MedcbmError:
            raise
        except Exception as exc:  # httpx/chroma raise many types for a server that is down or failing
            raise DataError(f"chroma server {shard.location} failed ({one_line(exc)}); check that it is running "
                            "(chroma run --path DIR --host HOST --port N) and retry") from exc

    def _each(self, fn: Callable[[int, KnowledgeStore], Any]) -> list[Any]:
        """``fn(i, shard)`` for every shard, one thread per server; the first failure is raised."""
        def run(i: int) -> Any:
            with self._naming(self.shards[i]):
                return fn(i, self.shards[i])

        with ThreadPoolExecutor(max_workers=len(self.shards)) as pool:
            futures = [pool.submit(run, i) for i in range(len(self.shards))]
        return [f.result() for f in futures]

    def _split(self, doc_ids: Sequence[str]) -> list[list[int]]:
        """Positions of ``doc_ids`` per shard."""
        parts: list[list[int]] = [[] for _ in self.shards]
        for pos, d in enumerate(doc_ids):
            parts[shard_of(d, len(self.shards))].append(pos)
        return parts

    # --- bookkeeping ----------------------------------------------------------------------------------
    @property
    def recorded_embedder(self) -> str | None:
        names = {s.recorded_embedder for s in self.shards if s.recorded_embedder}
        return names.pop() if len(names) == 1 else None

    def check_embedder(self) -> None:
        """Refuse shards built with different embedders, or an embedder other than theirs."""
        recorded = {s.location: s.recorded_embedder for s in self.shards if s.recorded_embedder}
        if len(set(recorded.values())) > 1:
            raise ConfigError("the shards were built with different embedders ("
                              + ", ".join(f"{loc}: '{e}'" for loc, e in recorded.items())
                              + "); all --store-url servers of one store need the same embedder: rebuild the odd one")
        for s in self.shards:
            s.check_embedder()

    @property
    def embedder(self):
        """The shared embedder (shards load the same cached instance)."""
        return self.shards[0].embedder

    @property
    def corpus_hash(self) -> str:
        """Hash of the shards' corpus hashes; ``""`` while any shard is unfinalised."""
        hashes = [s.corpus_hash for s in self.shards]
        return sha256_text(*hashes) if all(hashes) else ""

    @property
    def write_pending(self) -> str:
        return "; ".join(f"{s.location}: {s.write_pending}" for s in self.shards if s.write_pending)

    def __len__(self) -> int:
        return sum(self._each(lambda i, s: len(s)))

    def _size(self) -> int:
        return sum(self._each(lambda i, s: s._size()))

    def iter_all(self, include: Sequence[str] = ("documents", "metadatas")):
        """Yield pages over every shard's collection (see :meth:`KnowledgeStore.iter_all`)."""
        for s in self.shards:
            with self._naming(s):
                yield from s.iter_all(include)

    def stats(self) -> dict[str, Any]:
        """The single-store statistics summed over the shards, plus one entry per shard."""
        parts = self._each(lambda i, s: s.stats())
        out: dict[str, Any] = {"location": self.location, "collection": parts[0]["collection"],
                               "embedder": self.recorded_embedder, "corpus_hash": self.corpus_hash,
                               "write_pending": self.write_pending}
        for key in ("n_chunks", "n_documents"):
            out[key] = sum(p[key] for p in parts)
        for key in ("by_source", "by_modality", "by_license"):
            merged: dict[str, int] = {}
            for p in parts:
                for k, v in p[key].items():
                    merged[k] = merged.get(k, 0) + v
            out[key] = merged
        out.update(disk_bytes=du(self.cache_dir) + sum(p["disk_bytes"] for p in parts),
                   bm25_bytes=du(self.lexical_dir), inputs=self.manifest().get("inputs", {}),
                   shards=[{k: p[k] for k in ("location", "n_chunks", "n_documents", "corpus_hash")} for p in parts])
        return out

    # --- writing --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for s in self.shards:
                stack.enter_context(s.writing())
            yield

    def existing_metadata(self, ids: list[str]) -> dict[str, dict]:
        parts = self._split([doc_of(c) for c in ids])
        out: dict[str, dict] = {}
        for got in self._each(lambda i, s: s.existing_metadata([ids[p] for p in parts[i]]) if parts[i] else {}):
            out.update(got)
        return out

    def chunks_with_text_hashes(self, hashes: list[str]) -> list[tuple[str, dict]]:
        # identical text may sit in any shard (dedup is corpus-wide, as in one store): ask them all
        return [row for got in self._each(lambda i, s: s.chunks_with_text_hashes(hashes)) for row in got]

    def chunk_ids_of(self, doc_ids: list[str]) -> list[str]:
        parts = self._split(doc_ids)
        got = self._each(lambda i, s: s.chunk_ids_of([doc_ids[p] for p in parts[i]]) if parts[i] else [])
        return [c for ids in got for c in ids]

    def write_chunks(self, ids: list[str], embeddings: Any, texts: list[str], metas: list[dict], *,
                     delete: Sequence[str] = (), new_ids: Sequence[str] = ()) -> None:
        """Route chunks to their shards and write them concurrently, one writer per server.

        Raises:
            DataError: a server failed; the message names it. The other shards keep and finalise their part.
        """
        emb = np.asarray(embeddings) if len(ids) else np.zeros((0, 0), np.float32)
        parts = self._split([m["doc_id"] for m in metas])
        dels = self._split([doc_of(c) for c in delete])
        news = self._split([doc_of(c) for c in new_ids])

        def write(i: int) -> BaseException | None:
            sel = parts[i]
            if not sel and not dels[i]:
                return None
            try:
                self.shards[i].write_chunks([ids[p] for p in sel], emb[sel], [texts[p] for p in sel],
                                            [metas[p] for p in sel], delete=[delete[p] for p in dels[i]],
                                            new_ids=[new_ids[p] for p in news[i]])
            except DataError as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=len(self.shards)) as pool:
            errors = list(pool.map(write, range(len(self.shards))))
        failed = [i for i, e in enumerate(errors) if e is not None]
        if not failed:
            return
        for i in range(len(self.shards)):
            if i not in failed and (parts[i] or dels[i]):
                with contextlib.suppress(Exception):  # best effort: the rerun finalises them anyway
                    self.shards[i].finalize()
        first = errors[failed[0]]
        cause = one_line(first.__cause__) if first.__cause__ else str(first)
        raise DataError(f"chroma server {self.shards[failed[0]].location} failed during the write ({cause}); the "
                        f"chunks written to the other servers are kept: bring it back and rerun the same ingest "
                        f"to resume (nothing is lost or duplicated)")

    def finalize(self, inputs: dict[str, str] | None = None, *, replace_inputs: bool = False) -> str:
        """Finalise every shard, rebuild the corpus-wide BM25 index and record the inputs."""
        self._each(lambda i, s: s.finalize())
        corpus_hash = self.corpus_hash
        self._lexical = None
        self.lexical  # noqa: B018 - build and save the merged index now, as finalize does for one store
        self.write_manifest(inputs, replace_inputs, corpus_hash=corpus_hash, n_chunks=len(self._lexical or ()),
                            collection=self.shards[0].collection.name, location=self.location,
                            shards=[s.location for s in self.shards])
        return corpus_hash

    def copy_from(self, other: Any) -> set[str]:
        """Upsert every chunk of ``other`` (same embedder) into its shard, with its stored embedding."""
        self.check_copy_source(other)
        copied: set[str] = set()
        self._each(lambda i, s: s.mark_dirty())
        for ids, docs, metas, embs in other.iter_all(include=("documents", "metadatas", "embeddings")):
            parts = self._split([m["doc_id"] for m in metas])
            embs = np.asarray(embs)
            self._each(lambda i, s: s.collection.upsert(
                ids=[ids[p] for p in parts[i]], documents=[docs[p] for p in parts[i]],
                metadatas=[metas[p] for p in parts[i]], embeddings=embs[parts[i]]) if parts[i] else None)
            copied.update(ids)
        return copied

    # --- reading --------------------------------------------------------------------------------------
    @property
    def lexical(self):
        """One BM25 index over every shard's chunks, cached beside the client.

        BM25 scores depend on corpus statistics: a term's IDF (``log`` of the number of chunks over the
        number containing it) and the average chunk length. Per-shard indexes would use per-shard
        statistics, so their scores (and the merged ranking) would differ from one store's. bm25s bakes
        both statistics into its precomputed score matrix, so per-shard document frequencies cannot be
        combined after the fact; instead the index is built over the union of the shards' chunk tables
        (each shard's own sidecar, rebuilt from its server when stale), rows sorted by chunk id exactly as
        a single store sorts them, which makes the scores and tie order identical. It costs what one
        store's sidecar costs; the vectors, the part that grows, stay on the servers.
        """
        from medcbm.knowledge.lexical import CorruptIndexError, LexicalIndex

        pending = [bool(s.write_pending or not s.corpus_hash) for s in self.shards]
        key = sha256_text(*(f"pending:{s.write_pending}" if p else s.corpus_hash
                            for s, p in zip(self.shards, pending)))
        if self._lexical is not None and self._lexical_key == key:
            return self._lexical
        if not any(pending) and LexicalIndex.saved_hash(self.lexical_dir) == key:
            try:
                self._lexical, self._lexical_key = LexicalIndex.load(self.lexical_dir), key
                return self._lexical
            except CorruptIndexError as exc:
                logger.warning("BM25 index %s is damaged (%s); rebuilding it", self.lexical_dir, exc)
        parts = [p for p in self._each(lambda i, s: s.lexical) if p is not None]
        ids = [c for p in parts for c in p.ids]
        self._lexical = LexicalIndex.build(ids, [t for p in parts for t in p.texts],
                                           [m for p in parts for m in p.metas], key) if ids else None
        for s in self.shards:  # the merged index holds the same rows: keep one copy in memory
            s._lexical = None
        if self._lexical is not None and not any(pending):
            self._lexical.save(self.lexical_dir)
        self._lexical_key = key
        return self._lexical

    def _query_dense(self, emb: np.ndarray, n: int, where: dict | None) -> list[list[tuple[str, float]]]:
        def query(i: int, s: KnowledgeStore) -> list[list[tuple[str, float]]]:
            size = s._size()
            return s._query_dense(emb, min(n, size), where) if size else [[] for _ in range(len(emb))]

        per_shard = self._each(query)
        # the global top n is within the union of each shard's top n: a stable sort by distance merges them
        return [sorted((h for rows in per_shard for h in rows[q]), key=lambda h: h[1])[:n] for q in range(len(emb))]

    def fetch_chunks(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        parts = self._split([doc_of(c) for c in ids])
        out: dict[str, tuple[str, dict]] = {}
        for got in self._each(lambda i, s: s.fetch_chunks([ids[p] for p in parts[i]]) if parts[i] else {}):
            out.update(got)
        return out


def open_sharded(urls: Sequence[str], *, embedder: str | None = None, collection: str,
                 cache_dir: str | os.PathLike | None = None) -> ShardedStore:
    """Open one collection on each of several servers as a :class:`ShardedStore` (order matters).

    Args:
        urls: ``http://host:port`` of each ``chroma run`` server, in the same order every time.
        embedder: embedder name (default: the one the shards were built with, else ``minilm``).
        collection: the collection name used on every server.
        cache_dir: the merged BM25 index and manifest (shard ``i`` caches in ``cache_dir/shard-i``); default
            ``runs/knowledge-http/sharded_<hash of the urls>_<collection>``.

    Raises:
        ConfigError: a repeated url, shards out of order, or shards with different embedders.
        DataError: a server cannot be reached (named).
    """
    urls = [u.rstrip("/") for u in urls]
    dup = next((u for i, u in enumerate(urls) if u in urls[:i]), None)
    if dup:
        raise ConfigError(f"--store-url {dup} is given twice; each shard needs its own server or collection")
    n = len(urls)
    shards = []
    for i, u in enumerate(urls):
        client, col, location, cache = connect(None, u, collection, Path(cache_dir) / f"shard-{i}" if cache_dir else None)
        shard = KnowledgeStore(client, col, embedder_name=embedder, cache_dir=cache, location=location, shard=f"{i}/{n}")
        check_shard(shard)
        shards.append(shard)
    root = Path(cache_dir) if cache_dir else Path("runs/knowledge-http") / f"sharded_{sha256_text(*urls)[:12]}_{collection}"
    root.mkdir(parents=True, exist_ok=True)
    # shards that disagree have no common recorded embedder; check_embedder then names them all
    name = embedder or next((s.recorded_embedder for s in shards if s.recorded_embedder), None) or DEFAULT_EMBEDDER
    for s in shards:
        s.embedder_name = name
    store = ShardedStore(shards, cache_dir=root, embedder_name=name)
    store.check_embedder()
    return store
