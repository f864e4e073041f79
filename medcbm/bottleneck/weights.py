"""Sample weights that remove a known nuisance–label correlation from the training objective."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medcbm.errors import ConfigError


def group_balance_weights(y: np.ndarray, groups: np.ndarray | pd.Series, *, max_weight: float = 10.0) -> np.ndarray:
    """Weights making every nuisance group equally represented within each class.

    With 90% of malignant images from one site, the rare (class, site) cells are up-weighted so the site no
    longer predicts the class in the weighted data. Weights are capped at ``max_weight`` (times the mean) so
    a handful of images cannot dominate, and normalised to mean 1.

    Args:
        y: class indices.
        groups: nuisance value per sample (e.g. the manifest's ``site``).
    """
    y = np.asarray(y)
    g = np.asarray(groups).astype(str)
    w = np.ones(len(y), dtype=float)
    for c in np.unique(y):
        in_c = y == c
        vals, counts = np.unique(g[in_c], return_counts=True)
        for v, n in zip(vals, counts):
            w[in_c & (g == v)] = in_c.sum() / (len(vals) * n)
    w = np.minimum(w / w.mean(), max_weight)
    return w / w.mean()


def balance_weights(train, val) -> dict:
    """``sample_weight``/``val_weight`` balancing the nuisance groups of two labelled splits.

    Args:
        train, val: :class:`~medcbm.data.samples.LabelledSplit` with ``groups`` set.

    Raises:
        ConfigError: a split has no nuisance groups to balance.
    """
    for name, split in (("training", train), ("validation", val)):
        if split.groups is None:
            raise ConfigError(f"nuisance balancing needs the {name} split's groups (e.g. a site column); "
                              "set `balance: false` or name the column to balance")
    return {"sample_weight": group_balance_weights(train.y, train.groups),
            "val_weight": group_balance_weights(val.y, val.groups)}
