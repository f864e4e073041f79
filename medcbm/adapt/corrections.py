"""Per-concept recalibration at a new site from a reviewer's concept corrections (``medcbm review``).

A reviewed case says, for some concepts, whether the finding is there (1) or not (0). Where the concept probe is
calibrated at the source, its probability's mean error on such cases is zero; at a new site it drifts. Each
concept's activation is shifted by the mean error of the probe on that concept's reviewed cases, shrunk towards
no shift (the source calibration) with the weight of ``n0`` cases: ``shift_k = sum(t - p) / (n_k + n0)`` — the
same shrinkage as the label-based recalibration (``recalibrate_tfti``). Answers of "unsure" carry no value.
"""

from __future__ import annotations

import numpy as np

from medcbm.adapt.base import ConceptChange
from medcbm.adapt.edit import ConceptEdit
from medcbm.errors import DataError

#: reviewed cases a concept's shift is shrunk with (a concept answered on n cases moves n / (n + N0) of the way)
N0 = 8.0


def concept_recalibration(model, P: np.ndarray, T: np.ndarray, *, n0: float = N0) -> tuple[ConceptEdit, list[ConceptChange]]:
    """The shift edit in the model's standardised space and the concepts it moved.

    Args:
        model: the base CBM (its ``p_scale_`` converts probability shifts into its input space).
        P: the model's concept activations on the reviewed cases ``(n, K)``.
        T: the reviewer's values ``(n, K)``: 1 present, 0 absent, NaN unanswered or unsure.
        n0: shrinkage towards no shift, in cases.

    Raises:
        DataError: shapes disagree, a value other than 0, 1 or NaN, or no concept answered at all.
    """
    P, T = np.asarray(P, np.float64), np.asarray(T, np.float64)
    if P.shape != T.shape:
        raise DataError(f"concept corrections have shape {T.shape}; the model read {P.shape}")
    known = ~np.isnan(T)
    if not known.any():
        raise DataError("the corrections answer no concept (every concept column is empty or unsure)")
    if not np.isin(T[known], (0.0, 1.0)).all():
        raise DataError("concept corrections must be 1 (present), 0 (absent) or empty")
    n = known.sum(0)
    delta = np.where(known, T - P, 0.0).sum(0) / (n + n0)
    identity = ConceptEdit.identity(model)
    shift = (delta / np.asarray(model.p_scale_, np.float64)).astype(np.float32)
    changes = [ConceptChange(concept=k, action="recalibrated", statistic=float(delta[j]), factor=float(n[j]))
               for j, k in enumerate(model.concept_names_) if n[j]]
    return ConceptEdit(identity.scale, shift, identity.W, identity.b), changes
