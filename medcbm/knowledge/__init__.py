"""Knowledge store and retrieval: clinical corpora with provenance, chromadb vectors, dense/BM25/hybrid search.

Importing this package is light: chromadb, bm25s and sentence-transformers load on first use.

    >>> from medcbm.knowledge import open_store, ingest_paths
    >>> store = open_store("runs/knowledge")
    >>> ingest_paths(store, ["knowledge/corpus"])
    >>> store.search("blue-whitish veil", k=5, mode="hybrid")

Several ``chroma run`` servers hold one store sharded by document (``open_store(url=[url1, url2])``, the CLI's
repeated ``--store-url``), searched exactly as one store would be; ``--engine ray`` embeds on a Ray cluster.
"""

from __future__ import annotations

import importlib
from typing import Any

from medcbm.knowledge.chunking import chunk_text
from medcbm.knowledge.passage import Document, Passage

_LAZY = {
    "open_store": "medcbm.knowledge.store",
    "KnowledgeStore": "medcbm.knowledge.store",
    "ShardedStore": "medcbm.knowledge.sharded",
    "ingest_paths": "medcbm.knowledge.ingest",
    "add_documents": "medcbm.knowledge.ingest",
    "build_default_store": "medcbm.knowledge.ingest",
    "IngestSummary": "medcbm.knowledge.ingest",
    "get_embedder": "medcbm.knowledge.embedders",
    "available_embedders": "medcbm.knowledge.embedders",
    "Embedder": "medcbm.knowledge.embedders",
}

__all__ = ["Document", "Passage", "chunk_text", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medcbm.knowledge' has no attribute {name!r}")
