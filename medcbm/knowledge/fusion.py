"""Reciprocal-rank fusion of ranked lists (Cormack et al., 2009)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

RRF_K = 60


def rrf_fuse(rankings: Sequence[Sequence[Hashable]], *, k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Fuse ranked id lists: ``score(id) = sum over lists of 1 / (k + rank)`` with ranks from 1.

    Returns ``(id, score)`` best first; ties keep the order of first appearance.
    """
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])
