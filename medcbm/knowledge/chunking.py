"""KnoBo-style chunking: sentence-aware chunks of at most ~1000 characters with character offsets.

Consecutive sentences are packed into a chunk until the next one would exceed ``max_chars``; a sentence
longer than ``max_chars`` is split at word boundaries. A short tail (< ``min_chars``) is merged into the
previous chunk (which may then exceed ``max_chars`` by less than ``min_chars``), and a document whose
whole text is shorter than ``min_chars`` yields a chunk only when ``keep_short_docs`` (ontology terms are
short but complete); other fragments under ``min_chars`` are dropped.
"""

from __future__ import annotations

from medcbm._text import trim_spans

import hashlib
import re

# A sentence ends at . ! ? (optionally followed by a closing quote/bracket) and whitespace, or at a blank
# line. Abbreviations such as "e.g." or "Fig. 2" split too; that only makes chunks slightly shorter.
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text used for deduplication."""
    return _WS.sub(" ", text).strip().lower()


def text_hash(text: str) -> str:
    """Short stable hash of the normalised text (identical chunks share it)."""
    return hashlib.sha1(normalise_text(text).encode("utf-8")).hexdigest()[:20]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in _SENT_END.finditer(text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    # trim whitespace inside each span so offsets point at real characters
    return trim_spans(text, spans)


def _split_long(text: str, s: int, e: int, max_chars: int) -> list[tuple[int, int]]:
    """Split one over-long sentence at whitespace so that every piece is <= max_chars."""
    pieces = []
    while e - s > max_chars:
        cut = text.rfind(" ", s + 1, s + max_chars + 1)
        if cut <= s:
            cut = s + max_chars
        pieces.append((s, cut))
        s = cut
        while s < e and text[s].isspace():
            s += 1
    if e > s:
        pieces.append((s, e))
    return pieces


def chunk_text(
    text: str, *, max_chars: int = 1000, min_chars: int = 100, keep_short_docs: bool = False
) -> list[tuple[int, int, str]]:
    """Split ``text`` into sentence-aware chunks.

    Args:
        text: document text.
        max_chars: upper bound on chunk length (a merged tail may add up to ``min_chars``).
        min_chars: tails shorter than this merge into the previous chunk; lone fragments are dropped.
        keep_short_docs: keep a document shorter than ``min_chars`` as a single chunk.

    Returns:
        ``(start, end, chunk_text)`` triples; ``chunk_text == text[start:end]``.
    """
    if max_chars <= min_chars:
        raise ValueError(f"max_chars ({max_chars}) must exceed min_chars ({min_chars})")
    sents: list[tuple[int, int]] = []
    for s, e in _sentence_spans(text):
        sents.extend(_split_long(text, s, e, max_chars))
    chunks: list[list[int]] = []
    for s, e in sents:
        if chunks and e - chunks[-1][0] <= max_chars:
            chunks[-1][1] = e
        else:
            chunks.append([s, e])
    if len(chunks) >= 2 and chunks[-1][1] - chunks[-1][0] < min_chars:
        tail = chunks.pop()
        chunks[-1][1] = tail[1]
    out = [(s, e, text[s:e]) for s, e in chunks if e - s >= min_chars]
    if not out and chunks and keep_short_docs:
        s, e = chunks[0][0], chunks[-1][1]
        out = [(s, e, text[s:e])]
    return out
