"""Reciprocal-rank fusion of ranked lists (Cormack et al., 2009)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

RRF_K = 60


def rrf_fuse(rankings: Sequence[Sequence[Hashable]], *, k: int = RRF_K,
             weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """Fuse ranked id lists: ``score(id) = sum over lists of w / (k + rank)`` with ranks from 1.

    ``weights``: one per list (default 1 each). Returns ``(id, score)`` best first; ties keep the order of
    first appearance.
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} fusion weights for {len(rankings)} rankings")
    scores: dict[Hashable, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])
