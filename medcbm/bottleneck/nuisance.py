"""Nuisance adjustment of concept activations: remove what a site does to a concept, whatever the lesion.

A transferred concept probe can read systematically higher on one acquisition site's images than on
another's *for the same class* (a dermatoscope's optics, a clinic's lighting). With the site tied to the
label in training, that offset passes for evidence; when the tie changes at deployment it becomes error.
The offset of each (site group, concept) is estimated on the training images within each class and
subtracted before the bottleneck — at prediction time too, from the image's site metadata (a deployment
knows which scanner took the image; labels are never needed). Unknown sites are left unadjusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from medcbm.errors import DataError

logger = logging.getLogger(__name__)

MIN_CELL = 5  # a (class, group) cell with fewer images gives a noisy mean: it does not vote


@dataclass(frozen=True)
class ConceptOffsets:
    """Per nuisance group, the mean within-class shift of every concept's activation ``(G, K)``."""

    groups: list[str]
    offsets: np.ndarray

    @classmethod
    def fit(cls, P: np.ndarray, y: np.ndarray, groups: np.ndarray) -> "ConceptOffsets":
        """Estimate offsets from concept probabilities ``P`` of labelled training images and their groups."""
        groups = np.asarray(groups).astype(str)
        if len(groups) != len(P):
            raise DataError(f"{len(groups)} nuisance groups for {len(P)} training images")
        names, rows = [], []
        for g in np.unique(groups):
            shifts = [P[(y == c) & (groups == g)].mean(0) - P[y == c].mean(0) for c in np.unique(y)
                      if ((y == c) & (groups == g)).sum() >= MIN_CELL]
            if shifts:
                names.append(str(g))
                rows.append(np.mean(shifts, axis=0))
        offsets = np.array(rows, np.float32) if rows else np.zeros((0, P.shape[1]), np.float32)
        return cls(names, offsets)

    def apply(self, P: np.ndarray, groups) -> np.ndarray:
        """``P`` minus each row's group offset (rows of unknown groups, or no groups at all, unchanged)."""
        if groups is None or not self.groups:
            return P
        groups = np.asarray(groups).astype(str)
        index = {g: i for i, g in enumerate(self.groups)}
        unknown = sorted({g for g in groups if g not in index})
        if unknown:
            logger.info("no concept offsets for nuisance groups %s (not seen in training): left unadjusted", unknown)
        out = P.copy()
        for g, i in index.items():
            m = groups == g
            out[m] -= self.offsets[i]
        return out

    def largest(self, concepts: list[str], k: int = 5) -> dict[str, dict[str, float]]:
        """The ``k`` largest offsets per group, for logs and model cards."""
        return {g: {concepts[j]: round(float(self.offsets[i, j]), 3) for j in np.argsort(-np.abs(self.offsets[i]))[:k]}
                for i, g in enumerate(self.groups)}
