"""The knowledge store: chunks with provenance in a chromadb collection, plus a BM25 sidecar.

``open_store(path)`` opens an embedded ``PersistentClient`` (one writing process at a time: chroma's embedded
mode is not multi-process safe, so writers hold the folder's lock, :mod:`medcbm.knowledge.locking`);
``open_store(url="http://host:port")`` talks to a ``chroma run`` server, and several urls give a
:class:`~medcbm.knowledge.sharded.ShardedStore`. The collection metadata records the embedder and the
corpus hash; a store refuses to be queried or extended with another embedder. Chroma never embeds anything
itself: embeddings are always computed by our :class:`~medcbm.knowledge.embedders.Embedder` and passed
explicitly (chroma's default embedding function would download a model).

Crash safety: a write first sets ``write_pending`` (and blanks ``corpus_hash``) in the collection metadata,
and only :meth:`KnowledgeStore.finalize` clears it, after the BM25 sidecar for the new contents is saved.
The marker is the commit point: a reader that finds it (a crash between the vector upsert and the
finalisation) rebuilds the BM25 index from the stored chunks instead of trusting a sidecar whose recorded
hash still matches the old corpus hash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from medcbm._io import sha256_text
from medcbm.errors import ConfigError, DataError
from medcbm.knowledge.locking import DEFAULT_TIMEOUT_S, write_lock
from medcbm.knowledge.retrieval import SearchMixin, SidecarMixin, du

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "medcbm_knowledge"
DEFAULT_EMBEDDER = "minilm"
_CORE_META = ("doc_id", "source", "title", "section", "license", "modality", "start", "end", "text_hash", "extra")
_PAGE = 5000
_SIZE_TTL_S = 5.0


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (chroma and httpx errors can span many lines)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def corpus_hash_of(embedder: str, ids: Sequence[str], metas: Sequence[dict]) -> str:
    """Hash of the embedder and every (chunk id, text hash) pair, ``ids`` sorted."""
    return sha256_text(embedder, *(f"{i}\t{m.get('text_hash', '')}" for i, m in zip(ids, metas)))


class KnowledgeStore(SidecarMixin, SearchMixin):
    """Chunks in a chroma collection with dense, BM25 and hybrid (RRF) search.

    Use :func:`open_store` rather than the constructor.
    """

    def __init__(self, client: Any, collection: Any, *, embedder_name: str | None, cache_dir: Path, location: str,
                 lock_dir: Path | None = None, lock_timeout: float = DEFAULT_TIMEOUT_S, shard: str | None = None):
        self.client, self.collection, self.cache_dir, self.location = client, collection, Path(cache_dir), location
        self.lock_dir, self.lock_timeout, self.shard = lock_dir, lock_timeout, shard
        meta = dict(collection.metadata or {})
        self.recorded_embedder: str | None = meta.get("embedder")
        self.embedder_name: str = embedder_name or self.recorded_embedder or DEFAULT_EMBEDDER
        self._embedder = None
        self._lexical = None
        self._lexical_key: str | None = None  # the collection state the in-memory BM25 index was built for
        self.last_ingest = None  # IngestSummary of the latest add_documents call in this process
        self._size_cache: tuple[int, float] | None = None

    # --- bookkeeping --------------------------------------------------------------------------------
    @property
    def corpus_hash(self) -> str:
        """Hash of every (chunk id, text hash) pair in the store; ``""`` while empty or mid-write."""
        return str((self.collection.metadata or {}).get("corpus_hash", ""))

    @property
    def write_pending(self) -> str:
        """Who started the write that is not finalised yet (``""`` when the store is consistent)."""
        return str((self.collection.metadata or {}).get("write_pending", ""))

    def __len__(self) -> int:
        return int(self.collection.count())

    def _size(self) -> int:
        """Chunk count for the query path, cached for a few seconds (``count()`` costs ~8 ms on sqlite)."""
        now = time.monotonic()
        if self._size_cache is None or now - self._size_cache[1] > _SIZE_TTL_S:
            self._size_cache = (len(self), now)
        return self._size_cache[0]

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
            "corpus_hash": self.corpus_hash, "write_pending": self.write_pending, "n_chunks": len(self),
            "n_documents": len(docs), "by_source": by["source"], "by_modality": by["modality"],
            "by_license": by["license"], "disk_bytes": du(self.cache_dir), "bm25_bytes": du(self.lexical_dir),
            "inputs": self.manifest().get("inputs", {}),
        }

    # --- writing (used by medcbm.knowledge.ingest) ----------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's inter-process write lock (embedded stores; a server needs none)."""
        if self.lock_dir is None:
            yield
            return
        with write_lock(self.lock_dir, timeout=self.lock_timeout):
            yield

    def mark_dirty(self) -> None:
        """Record in the collection that a write is under way; :meth:`finalize` clears it."""
        meta = dict(self.collection.metadata or {})
        meta.update(embedder=self.embedder_name, corpus_hash="",
                    write_pending=f"pid {os.getpid()} on {socket.gethostname()} at {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        if self.shard:
            meta["shard"] = self.shard
        self.collection.modify(metadata=meta)
        self.recorded_embedder = self.embedder_name

    def existing_metadata(self, ids: list[str]) -> dict[str, dict]:
        """``chunk id -> stored metadata`` for those of ``ids`` already stored."""
        out: dict[str, dict] = {}
        for i in range(0, len(ids), _PAGE):
            got = self.collection.get(ids=ids[i:i + _PAGE], include=["metadatas"])
            out.update(zip(got["ids"], got["metadatas"]))
        return out

    def chunks_with_text_hashes(self, hashes: list[str]) -> list[tuple[str, dict]]:
        """``(chunk id, metadata)`` of stored chunks whose ``text_hash`` is one of ``hashes``."""
        out: list[tuple[str, dict]] = []
        for i in range(0, len(hashes), 500):
            got = self.collection.get(where={"text_hash": {"$in": hashes[i:i + 500]}}, include=["metadatas"])
            out.extend(zip(got["ids"], got["metadatas"]))
        return out

    def chunk_ids_of(self, doc_ids: list[str]) -> list[str]:
        """Ids of stored chunks belonging to ``doc_ids``."""
        out: list[str] = []
        for i in range(0, len(doc_ids), 500):
            got = self.collection.get(where={"doc_id": {"$in": doc_ids[i:i + 500]}}, include=[])
            out.extend(got["ids"])
        return out

    def write_chunks(self, ids: list[str], embeddings: Any, texts: list[str], metas: list[dict], *,
                     delete: Sequence[str] = (), new_ids: Sequence[str] = ()) -> None:
        """Upsert chunks and delete ``delete`` as one write, after marking the store dirty.

        On failure the chunks in ``new_ids`` are deleted again and the bookkeeping is recomputed (best
        effort: with a server that went away, the marker stays and the next reader or ingest repairs).

        Raises:
            DataError: the write failed (the message names the store).
        """
        max_batch = 1000
        try:
            max_batch = self.client.get_max_batch_size()
            self.mark_dirty()
            for s in range(0, len(ids), max_batch):
                self.collection.upsert(ids=ids[s:s + max_batch], embeddings=embeddings[s:s + max_batch],
                                       documents=texts[s:s + max_batch], metadatas=metas[s:s + max_batch])
            for s in range(0, len(delete), max_batch):
                self.collection.delete(ids=list(delete[s:s + max_batch]))
        except Exception as exc:
            undone = self._roll_back(list(new_ids), max_batch)
            raise DataError(f"writing to the knowledge store failed ({one_line(exc)}); "
                            + ("chunks added by this ingest were removed" if undone else
                               "rerun the ingest when the store is reachable again (it resumes)"),
                            path=self.location) from exc

    def _roll_back(self, new_ids: list[str], max_batch: int) -> bool:
        try:
            for s in range(0, len(new_ids), max_batch):
                self.collection.delete(ids=new_ids[s:s + max_batch])
            self.finalize()  # the contents match the last finalised state again: record it
            return True
        except Exception as exc:  # e.g. the server that failed the write is still down
            logger.warning("could not undo the failed write to %s (%s); it stays marked unfinished",
                           self.location, one_line(exc))
            return False

    def _scan(self) -> tuple[list[str], list[str], list[dict], str]:
        """Every stored chunk ``(ids, texts, metas)`` sorted by id, and their corpus hash."""
        ids, texts, metas = [], [], []
        for pid, pdocs, pmetas in self.iter_all():
            ids += pid
            texts += pdocs
            metas += pmetas
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids, texts, metas = [ids[i] for i in order], [texts[i] for i in order], [metas[i] for i in order]
        return ids, texts, metas, corpus_hash_of(self.embedder_name, ids, metas)

    def _build_lexical(self, *, save: bool) -> str:
        """Rebuild the in-memory BM25 index from the stored chunks (and save it); returns their hash."""
        from medcbm.knowledge.lexical import LexicalIndex

        ids, texts, metas, corpus_hash = self._scan()
        self._lexical = LexicalIndex.build(ids, texts, metas, corpus_hash) if ids else None
        if self._lexical is not None and save:
            self._lexical.save(self.lexical_dir)
        return corpus_hash

    def finalize(self, inputs: dict[str, str] | None = None, *, replace_inputs: bool = False) -> str:
        """Recompute the corpus hash, rebuild the BM25 sidecar and record both (after a successful write).

        The sidecar is saved before the ``write_pending`` marker is cleared, so a crash in between leaves
        the store marked and the next reader rebuilds.
        """
        with self.writing():
            corpus_hash = self._build_lexical(save=True)
            meta = {k: v for k, v in (self.collection.metadata or {}).items() if k != "write_pending"}
            meta.update(embedder=self.embedder_name, corpus_hash=corpus_hash)
            self.collection.modify(metadata=meta)
            self._lexical_key = corpus_hash
            self._size_cache = None
            self.recorded_embedder = self.embedder_name
            self.write_manifest(inputs, replace_inputs, corpus_hash=corpus_hash, n_chunks=len(self._lexical or ()),
                                collection=self.collection.name, location=self.location)
        return corpus_hash

    def copy_from(self, other: Any) -> set[str]:
        """Upsert every chunk of ``other`` (same embedder) with its stored embedding: no re-embedding."""
        self.check_copy_source(other)
        copied: set[str] = set()
        with self.writing():
            self.mark_dirty()
            for ids, docs, metas, embs in other.iter_all(include=("documents", "metadatas", "embeddings")):
                self.collection.upsert(ids=ids, documents=docs, metadatas=metas, embeddings=embs)
                copied.update(ids)
        return copied

    # --- reading --------------------------------------------------------------------------------------
    @property
    def lexical(self):
        """The BM25 sidecar: loaded when it matches the corpus hash, else rebuilt from the stored chunks.

        A store marked mid-write is repaired: an embedded one is finalised under its lock; a server's is
        only rebuilt in memory, since another client may be writing it right now.
        """
        from medcbm.knowledge.lexical import CorruptIndexError, LexicalIndex

        pending, want = self.write_pending, self.corpus_hash
        key = f"pending:{pending}" if pending or not want else want
        if self._lexical is not None and self._lexical_key == key:
            return self._lexical
        if pending or not want:
            if self.lock_dir is not None:
                logger.warning("knowledge store %s was left mid-write (%s); rebuilding its BM25 index and corpus "
                               "hash from the stored chunks", self.location, pending or "no corpus hash")
                self.finalize()
                return self._lexical
            logger.warning("knowledge store %s has an unfinished write (%s): another client is writing it or an "
                           "ingest was interrupted; BM25 uses an index rebuilt from its current chunks (rerun "
                           "`medcbm knowledge ingest` to finalise it)", self.location, pending or "no corpus hash")
            self._build_lexical(save=False)
        elif LexicalIndex.saved_hash(self.lexical_dir) == want:
            try:
                self._lexical = LexicalIndex.load(self.lexical_dir)
            except CorruptIndexError as exc:
                logger.warning("BM25 index %s is damaged (%s); rebuilding it from the store", self.lexical_dir, exc)
                self._build_lexical(save=True)
        else:
            logger.info("BM25 index for %s is stale or missing; rebuilding", self.location)
            self._build_lexical(save=True)
        self._lexical_key = key
        return self._lexical

    def _query_dense(self, emb: np.ndarray, n: int, where: dict | None) -> list[list[tuple[str, float]]]:
        res = self.collection.query(query_embeddings=emb, n_results=n, where=where, include=["distances"])
        return [list(zip(ids, dists)) for ids, dists in zip(res["ids"], res["distances"])]

    def fetch_chunks(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        got = self.collection.get(ids=ids, include=["documents", "metadatas"])
        return {c: (d, m) for c, d, m in zip(got["ids"], got["documents"], got["metadatas"])}


def connect(path: str | os.PathLike | None, url: str | None, collection: str,
            cache_dir: str | os.PathLike | None) -> tuple[Any, Any, str, Path]:
    """``(client, collection, location, cache folder)`` of an embedded folder or of one server's collection.

    Raises:
        ConfigError: bad collection name or url.  DataError: the store cannot be opened (names it).
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
        raise DataError(f"cannot open knowledge store ({one_line(exc)})", path=str(url or path)) from None
    cache.mkdir(parents=True, exist_ok=True)
    return client, col, location, cache


def check_shard(store: KnowledgeStore) -> None:
    """Refuse a collection that was written as another shard than the one it is opened as."""
    recorded = str((store.collection.metadata or {}).get("shard", ""))
    if store.shard and not recorded and len(store):
        raise ConfigError(f"{store.location} holds a store that is not sharded; open it on its own (one --store-url), "
                          "or give each shard an empty collection")
    if recorded and recorded != (store.shard or ""):
        given = f"as --store-url number {store.shard}" if store.shard else "on its own"
        raise ConfigError(f"{store.location} holds shard {recorded} of a sharded store but was opened {given}; "
                          f"pass every --store-url of that store, in the order used at ingest")


def open_store(path: str | os.PathLike | None = "runs/knowledge", *, embedder: str | None = None,
               url: str | Sequence[str] | None = None, collection: str = DEFAULT_COLLECTION,
               cache_dir: str | os.PathLike | None = None, lock_timeout: float = DEFAULT_TIMEOUT_S):
    """Open (creating if needed) a knowledge store.

    Args:
        path: folder of an embedded chroma ``PersistentClient`` store (ignored when ``url`` is given).
        embedder: embedder name (default: the one the store was built with, else ``minilm``).
        url: ``http://host:port`` of a ``chroma run`` server (uses ``HttpClient``), or several: documents are
            then sharded across them (:class:`~medcbm.knowledge.sharded.ShardedStore`; keep the order).
        collection: chroma collection name (3-512 characters).
        cache_dir: where the manifest and BM25 sidecar live (default: ``path``; for a server,
            ``runs/knowledge-http/<host>_<port>_<collection>``).
        lock_timeout: seconds a writer to an embedded store waits for another process's write to finish
            before it is refused (:class:`~medcbm.knowledge.locking.StoreBusyError`).

    Returns:
        a :class:`KnowledgeStore`, or a :class:`~medcbm.knowledge.sharded.ShardedStore` for several urls.
    """
    urls = [u for u in ([url] if isinstance(url, str) else list(url or [])) if u]
    if len(urls) > 1:
        from medcbm.knowledge.sharded import open_sharded

        return open_sharded(urls, embedder=embedder, collection=collection, cache_dir=cache_dir)
    client, col, location, cache = connect(path, urls[0] if urls else None, collection, cache_dir)
    store = KnowledgeStore(client, col, embedder_name=embedder, cache_dir=cache, location=location,
                           lock_dir=None if urls else Path(location), lock_timeout=lock_timeout)
    check_shard(store)
    return store
