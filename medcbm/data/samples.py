"""Features plus metadata of one split, in two shapes: labelled (train/val) and unlabelled (test).

The split types are what model-fitting code receives. A test split is :class:`UnlabelledSplit`, whose
metadata table keeps only the columns in :data:`UNLABELLED_COLUMNS`: no label, diagnosis, concept
annotation or clinical note can reach code that predicts on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medcbm.errors import DataError

#: metadata a model may read from a split it predicts on (images to re-extract, site/demographics for
#: reports). Everything else — ``label``, diagnoses, ``concept_*`` annotations, notes — is dropped.
UNLABELLED_COLUMNS = ("id", "image", "mask", "patient_id", "site", "sex", "age", "view", "localization")


@dataclass(frozen=True)
class LabelledSplit:
    """Training-side data: features ``X``, class indices ``y``, the metadata ``frame``.

    Attributes:
        backbone: name of the backbone that produced ``X`` (other backbones re-extract from ``frame``).
        groups: nuisance group of every row (e.g. the site), used to balance the objective; ``None`` if unknown.
    """

    X: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame
    backbone: str
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.frame)
        if len(self.X) != n or len(self.y) != n or (self.groups is not None and len(self.groups) != n):
            raise DataError(f"split arrays disagree in length: X {len(self.X)}, y {len(self.y)}, frame {n}"
                            + (f", groups {len(self.groups)}" if self.groups is not None else ""))


@dataclass(frozen=True)
class UnlabelledSplit:
    """Prediction-side data: features ``X`` and label-free metadata (see :data:`UNLABELLED_COLUMNS`).

    Attributes:
        groups: nuisance group of every row (metadata such as the site, never a label), or ``None``.
    """

    X: np.ndarray
    frame: pd.DataFrame
    backbone: str
    groups: np.ndarray | None = None

    @classmethod
    def from_frame(cls, X: np.ndarray, frame: pd.DataFrame, backbone: str, *, keep: tuple[str, ...] = (),
                   groups: np.ndarray | None = None) -> "UnlabelledSplit":
        """Build one from a full metadata table, dropping every column not allowed for prediction.

        Args:
            keep: extra label-free columns to keep (e.g. a protocol's nuisance column).
            groups: nuisance group per row.
        """
        allowed = [c for c in dict.fromkeys((*UNLABELLED_COLUMNS, *keep)) if c in frame.columns and c != "label"]
        return cls(X, frame[allowed].reset_index(drop=True), backbone, groups)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.frame):
            raise DataError(f"split arrays disagree in length: X {len(self.X)}, frame {len(self.frame)}")
        if "label" in self.frame.columns:
            raise DataError("an unlabelled split must not carry a 'label' column")
