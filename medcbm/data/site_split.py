"""A new site's images cut for adaptation: a few labelled (support), the rest unlabelled, a held-out query.

The site's patients are split once, seeded, into a *pool* and a *query* set (whole patients, each class at
its share). From the pool, ``k`` images per class are drawn as the labelled support; the pool's other
images are the unlabelled ones an adapter may look at without their labels. The query set is never used
to adapt or choose anything: it is where the base and the adapted model are compared.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from medcbm.data.manifest import Manifest
from medcbm.errors import DataError

UNLABELLED = "unlabelled"  # the label column is required in a manifest; this placeholder is never read


def pool_query_split(groups: np.ndarray, y: np.ndarray, seed: int, query_frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Patient-disjoint cut of a site's images into a support pool and a query set (per class, seeded)."""
    rng = np.random.default_rng([seed, 7])
    pats = np.unique(groups)
    rng.shuffle(pats)
    # assign whole patients to the query set until each class has its share there
    need = {c: int(round(query_frac * (y == c).sum())) for c in np.unique(y)}
    have: Counter = Counter()
    query_pats = set()
    for p in pats:
        rows = groups == p
        cls = Counter(y[rows].tolist())
        if any(have[c] < need[c] for c in cls):
            query_pats.add(p)
            have.update(cls)
    q = np.isin(groups, list(query_pats))
    return np.flatnonzero(~q), np.flatnonzero(q)


def draw_support(y_pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` pool positions per class (``None`` when a class has fewer than ``k``)."""
    out = []
    for c in np.unique(y_pool):
        idx = np.flatnonzero(y_pool == c)
        if len(idx) < k:
            return None
        out.append(rng.choice(idx, k, replace=False))
    return np.concatenate(out) if out else np.zeros(0, int)


@dataclass(frozen=True)
class SiteSplit:
    """Row positions (into the site manifest) of the support, the unlabelled rest of the pool and the query."""

    support: np.ndarray
    unlabelled: np.ndarray
    query: np.ndarray

    def manifests(self, site: Manifest) -> dict[str, Manifest]:
        """``support`` and ``query`` keep their labels; ``unlabelled`` has its labels replaced by ``UNLABELLED``."""
        unl = site.subset(self.unlabelled)
        frame = unl.frame.copy()
        frame["label"] = UNLABELLED
        return {"support": site.subset(self.support), "unlabelled": Manifest(frame, site.root, source=unl.source),
                "query": site.subset(self.query)}


def split_site(site: Manifest, y: np.ndarray, *, k: int, seed: int, query_frac: float = 0.5,
               classes: list[str] | None = None) -> SiteSplit:
    """Cut a labelled site manifest (class index ``y`` per row) into support / unlabelled / query.

    Raises:
        DataError: a class has fewer than ``k`` images in the pool, or ``query_frac`` is outside (0, 1).
    """
    if not 0 < query_frac < 1:
        raise DataError(f"query fraction {query_frac} must be between 0 and 1", path=site.source)
    if k < 0:
        raise DataError(f"k = {k}: the number of labelled images per class cannot be negative", path=site.source)
    y = np.asarray(y, int)
    pool, query = pool_query_split(site.frame["patient_id"].astype(str).to_numpy(), y, seed, query_frac)
    sel = draw_support(y[pool], k, np.random.default_rng([seed, k, 0])) if k else np.zeros(0, int)
    if sel is None:
        counts = Counter(y[pool].tolist())
        short = {(classes[c] if classes else c): counts.get(c, 0) for c in np.unique(y) if counts.get(c, 0) < k}
        raise DataError(f"k = {k}: the site's pool (the {1 - query_frac:.0%} of patients not held out) has fewer "
                        f"than {k} images of {short}; lower k or add images", path=site.source)
    support = pool[sel]
    return SiteSplit(support=np.sort(support), unlabelled=np.setdiff1d(pool, support), query=np.sort(query))
