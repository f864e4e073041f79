"""Small text helpers shared by chunking (knowledge) and negation matching (concepts)."""

from __future__ import annotations


def trim_spans(text: str, spans: list[tuple[int, int]], *, drop_empty: bool = True) -> list[tuple[int, int]]:
    """Shrink ``(start, end)`` spans so they begin and end on non-whitespace characters of ``text``."""
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s or not drop_empty:
            out.append((s, e))
    return out
