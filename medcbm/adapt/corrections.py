"""Per-concept recalibration at a new site from a reviewer's concept corrections (``medcbm review``).

A reviewed case says, for some concepts, whether the finding is there (1) or not (0). Each concept's activation is
shifted by the probe's mean error on that concept's reviewed cases, shrunk towards no shift (the source
calibration) with the weight of ``n0`` cases — the same shrinkage as the label-based recalibration
(``recalibrate_tfti``). The error is measured where the head reads it: the answer and the reading both clipped to
the concept's training range and standardised, exactly as an intervention is read, so ``shift_k = sum(z(t) -
z(p)) / (n_k + n0)`` in standard deviations can never exceed the head's input range. (Measured in raw
probability, one "present" for a rare concept whose training activations barely spread moved every case by 16
SD and made 96 % of a held-out set malignant: ``bench review``, before this rule.) "Unsure" carries no value.
"""

from __future__ import annotations

import numpy as np

from medcbm.adapt.base import ConceptChange
from medcbm.adapt.edit import ConceptEdit
from medcbm.errors import DataError

#: reviewed cases a concept's shift is shrunk with (a concept answered on n cases moves n / (n + N0) of the way)
N0 = 8.0


def check_answers(T: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The reviewer's table as float ``(n, K)``: 1 present, 0 absent, NaN unanswered; anything else is an error."""
    T = np.asarray(T, np.float64)
    if T.shape != shape:
        raise DataError(f"concept corrections have shape {T.shape}; expected {shape}")
    known = ~np.isnan(T)
    if not np.isin(T[known], (0.0, 1.0)).all():
        raise DataError("concept corrections must be 1 (present), 0 (absent) or empty")
    return T


def concept_recalibration(model, P: np.ndarray, T: np.ndarray, *, n0: float = N0) -> tuple[ConceptEdit, list[ConceptChange]]:
    """The shift edit in the model's standardised space and the concepts it moved (statistic: the shift in SD;
    factor: the reviewed cases that answered the concept).

    Args:
        model: the base CBM (its input map clips and standardises answers and readings alike).
        P: the model's concept activations on the reviewed cases ``(n, K)``.
        T: the reviewer's values ``(n, K)``: 1 present, 0 absent, NaN unanswered or unsure.
        n0: shrinkage towards no shift, in cases.

    Raises:
        DataError: shapes disagree, a value other than 0, 1 or NaN, or no concept answered at all.
    """
    P = np.asarray(P, np.float64)
    T = check_answers(T, P.shape)
    known = ~np.isnan(T)
    if not known.any():
        raise DataError("the corrections answer no concept (every concept column is empty or unsure)")
    n = known.sum(0)
    read = model.concept_inputs(P.astype(np.float32)).astype(np.float64)
    said = model.concept_inputs(np.where(known, T, P).astype(np.float32)).astype(np.float64)
    shift = np.where(known, said - read, 0.0).sum(0) / (n + n0)
    identity = ConceptEdit.identity(model)
    changes = [ConceptChange(concept=k, action="recalibrated", statistic=float(shift[j]), factor=float(n[j]))
               for j, k in enumerate(model.concept_names_) if n[j]]
    return ConceptEdit(identity.scale, shift.astype(np.float32), identity.W, identity.b), changes
