"""Candidate filters. Each returns a rejection reason (and detail) or ``None`` to keep the candidate.

Order in :class:`CandidateFilter`: length limits, names a class, non-visual, exact duplicate,
near-duplicate by embedding similarity. Every rejection is logged in the bank with its reason.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from medcbm.concepts.backends.base import Candidate, slugify
from medcbm.concepts.negation import find_mentions
from medcbm.concepts.schema import ClassSpec

#: text -> L2-normalised embeddings, shape (n, d)
EmbedFn = Callable[[list[str]], np.ndarray]


def check_length(name: str, min_words: int, max_words: int, max_chars: int = 80) -> str | None:
    """Too short / too long names (in words or characters)."""
    n = len(re.findall(r"[\w'-]+", name))
    if n < min_words:
        return f"{n} word(s) < min_words={min_words}"
    if n > max_words:
        return f"{n} words > max_words={max_words}"
    if len(name) > max_chars:
        return f"{len(name)} characters > {max_chars}"
    return None


def names_class(name: str, classes: Sequence[ClassSpec]) -> str | None:
    """The class whose name or synonym the concept contains (or is contained in), else ``None``."""
    low = name.lower().strip()
    for c in classes:
        for t in c.terms:
            if find_mentions(name, [t]) or (len(low) > 3 and re.search(rf"(?<!\w){re.escape(low)}(?!\w)", t.lower())):
                return f"{c.key} ({t})"
    return None


def embed_minilm(texts: list[str]) -> np.ndarray:
    """Default embedding function: the knowledge store's offline MiniLM embedder."""
    from medcbm.knowledge import get_embedder

    vecs = np.asarray(get_embedder("minilm").encode(list(texts)), dtype=np.float32)
    return vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)


class CandidateFilter:
    """Stateful filter over a generation run (remembers accepted names/embeddings for deduplication).

    Args:
        classes: the bank's classes (concepts naming one are rejected).
        embed: text embedding function (L2-normalised rows).
        dedup_threshold: cosine similarity at or above which a candidate is a near-duplicate.
        min_words / max_words: length limits.
    """

    def __init__(self, classes: Sequence[ClassSpec], embed: EmbedFn, *, dedup_threshold: float = 0.9,
                 min_words: int = 1, max_words: int = 6, exclude_categories: Sequence[str] = ()):
        self.classes = list(classes)
        self.embed = embed
        self.threshold = dedup_threshold
        self.min_words, self.max_words = min_words, max_words
        self.exclude_categories = {c.lower() for c in exclude_categories}
        self.names: list[str] = []
        self.ids: set[str] = set()
        self._vecs: np.ndarray | None = None

    def seed(self, names: Sequence[str]) -> None:
        """Register already-accepted concepts (when resuming a run)."""
        for n in names:
            self._remember(n)

    def _remember(self, name: str, vec: np.ndarray | None = None) -> None:
        vec = self.embed([name])[0] if vec is None else vec
        self.names.append(name)
        self.ids.add(slugify(name))
        self._vecs = vec[None] if self._vecs is None else np.vstack([self._vecs, vec])

    def check(self, cand: Candidate) -> tuple[str, str] | None:
        """``(reason, detail)`` if ``cand`` must be rejected, else ``None`` (and it is remembered)."""
        why = check_length(cand.name, self.min_words, self.max_words)
        if why:
            return "length", why
        cls = names_class(cand.name, self.classes)
        if cls:
            return "names_class", f"names class {cls}"
        if cand.category.lower() in self.exclude_categories:
            return "confounder_category", f"vocabulary category '{cand.category}' describes acquisition, not disease"
        if cand.visual is False:
            return "not_visual", "marked non-visual by the vocabulary or the backend"
        if slugify(cand.name) in self.ids:
            return "duplicate", "same concept already in the bank"
        vec = self.embed([cand.name])[0]
        if self._vecs is not None:
            sims = self._vecs @ vec
            j = int(np.argmax(sims))
            if sims[j] >= self.threshold:
                return "near_duplicate", f"cosine {sims[j]:.3f} to '{self.names[j]}'"
        self._remember(cand.name, vec)
        return None
