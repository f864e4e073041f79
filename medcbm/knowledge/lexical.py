"""BM25 index (bm25s) over the store's chunks, persisted beside the store and keyed by the corpus hash.

The sidecar folder holds the bm25s arrays plus ``chunks.jsonl`` (chunk ids, texts and provenance) so that
BM25 hits and metadata filters need no round trip to chroma. It is rebuilt whenever the store's corpus
hash differs from the one it was built for, and when :meth:`LexicalIndex.load` finds it unreadable
(:class:`CorruptIndexError`: truncated or edited files, row counts or checksum that disagree).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medcbm._io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class CorruptIndexError(Exception):
    """A saved BM25 index cannot be read back; the store rebuilds it (never shown to users)."""


def tokenize(text: str, stopwords: frozenset[str]) -> list[str]:
    """Lower-cased word tokens (2+ characters) without English stopwords."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in stopwords]


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


class LexicalIndex:
    """BM25 scores plus an in-memory table of chunk texts and metadata, aligned by row."""

    def __init__(self, bm25: Any, ids: list[str], texts: list[str], metas: list[dict], corpus_hash: str):
        self.bm25, self.ids, self.texts, self.metas, self.corpus_hash = bm25, ids, texts, metas, corpus_hash
        self.stopwords = _stopwords()
        self._columns: dict[str, np.ndarray] = {}
        self.row_of: dict[str, int] = {cid: i for i, cid in enumerate(ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, ids: list[str], texts: list[str], metas: list[dict], corpus_hash: str) -> LexicalIndex:
        """Index the given chunks (rows aligned across the three lists), as rows sorted by chunk id.

        The canonical row order makes an index over the same chunks the same index (same scores, same
        tie order) however the chunks were gathered: from one store or from several shards.
        """
        import bm25s

        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids, texts, metas = [ids[i] for i in order], [texts[i] for i in order], [metas[i] for i in order]
        stop = _stopwords()
        bm25 = bm25s.BM25()
        # an empty token list would break bm25s; a placeholder token keeps rows aligned and never matches
        bm25.index([tokenize(t, stop) or ["\u2205"] for t in texts], show_progress=False)
        return cls(bm25, ids, texts, metas, corpus_hash)

    def save(self, folder: Path) -> None:
        """Write the index to ``folder`` (replacing it); the hash file goes last so a crash leaves it stale."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.bm25.save(str(tmp), show_progress=False)
        lines = (json.dumps({"id": i, "text": t, "meta": m}, ensure_ascii=False)
                 for i, t, m in zip(self.ids, self.texts, self.metas))
        table = ("\n".join(lines) + "\n").encode("utf-8")
        atomic_write_bytes(tmp / "chunks.jsonl", table)
        # the checksum lets load() tell a damaged chunk table from a good one without trusting its parse
        atomic_write_json(tmp / "index.json", {"corpus_hash": self.corpus_hash, "n_chunks": len(self.ids),
                                               "chunks_sha256": hashlib.sha256(table).hexdigest()})
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    @staticmethod
    def saved_hash(folder: Path) -> str | None:
        """Corpus hash a saved index was built for, or None when there is none."""
        try:
            return json.loads((Path(folder) / "index.json").read_text())["corpus_hash"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """Load a saved index (no pickle: bm25s stores numpy arrays and JSON).

        Raises:
            CorruptIndexError: a file is missing, unparsable, or disagrees with ``index.json``.
        """
        import bm25s

        folder = Path(folder)
        try:
            info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            want_sha = info.get("chunks_sha256")  # absent in indexes written before it was recorded
            table = (folder / "chunks.jsonl").read_bytes()  # read once: hashed, then parsed
            if want_sha and hashlib.sha256(table).hexdigest() != want_sha:
                raise CorruptIndexError("chunks.jsonl does not match its recorded checksum")
            bm25 = bm25s.BM25.load(str(folder), load_corpus=False)
            ids, texts, metas = [], [], []
            for line in table.decode("utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    ids.append(str(row["id"]))
                    texts.append(str(row["text"]))
                    metas.append(dict(row["meta"]))
            n_rows = int(bm25.scores["num_docs"])
            want_n = int(info["n_chunks"])
        except CorruptIndexError:
            raise
        except Exception as exc:  # bm25s/numpy/json raise many types on damaged files
            raise CorruptIndexError(f"{type(exc).__name__}: {exc}") from None
        if not len(ids) == n_rows == want_n:
            raise CorruptIndexError(f"{len(ids)} chunk rows and {n_rows} BM25 rows, index.json says {want_n}")
        return cls(bm25, ids, texts, metas, str(info.get("corpus_hash", "")))

    def _column(self, key: str) -> np.ndarray:
        if key not in self._columns:
            self._columns[key] = np.array([str(m.get(key, "")) for m in self.metas], dtype=object)
        return self._columns[key]

    def mask(self, where: dict[str, Any] | None, exclude_doc_ids: set[str] | frozenset[str] | None) -> np.ndarray | None:
        """Boolean row mask for equality/``in`` filters and excluded documents (None when unfiltered)."""
        if not where and not exclude_doc_ids:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        for key, value in (where or {}).items():
            allowed = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
            keep &= np.isin(self._column(key), list(allowed))
        if exclude_doc_ids:
            keep &= ~np.isin(self._column("doc_id"), list(exclude_doc_ids))
        return keep

    def top_k(self, query: str, k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Best ``k`` rows ``(row, score)`` with a positive BM25 score, best first."""
        toks = tokenize(query, self.stopwords)
        ids = self.bm25.get_tokens_ids(toks) if toks else []
        if not ids:
            return []
        scores = self.bm25.get_scores_from_ids(ids)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        k = min(k, len(scores))
        cand = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        cand = cand[np.argsort(-scores[cand], kind="stable")]
        return [(int(i), float(scores[i])) for i in cand if scores[i] > 0]
