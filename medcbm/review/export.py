"""The reviewed cases as a manifest: image, the reviewer's final diagnosis as ``label`` (``unknown`` if none), and one
``concept_<name>`` column per concept (1 present, 0 absent, empty when unanswered or unsure).

This file points at the user's own images (absolute paths, like ``save_manifest`` writes) so that ``medcbm adapt
--corrections`` can read them: keep it with the data, not in a shared report. Case ids are the salted ids shown.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medcbm.data.manifest import Manifest, save_manifest
from medcbm.errors import DataError
from medcbm.review.session import ANSWER_VALUE, ReviewSession
from medcbm.review.store import DIAGNOSIS

#: the prefix of concept columns, the one the audit reads annotated concepts from
CONCEPT_PREFIX = "concept_"
KEEP = ("site", "sex", "age", "body_site")
#: the label of a reviewed case without a final diagnosis (adapt uses its concepts, not its label)
NO_DIAGNOSIS = "unknown"


def corrections_frame(session: ReviewSession) -> pd.DataFrame:
    """One row per reviewed case (at least one standing answer or a diagnosis), in worklist order."""
    state = session.store.current()
    frame = session.manifest.absolute_frame()
    rows = []
    for c in session.cases:
        got = state.get(c.key)
        if not got:
            continue
        src = frame.iloc[c.row]
        row = {"id": c.case_id, "image": src["image"], "label": got.get(DIAGNOSIS, NO_DIAGNOSIS)}
        row.update({k: src[k] for k in KEEP if k in frame.columns})
        row.update({CONCEPT_PREFIX + k: ANSWER_VALUE.get(got.get(k, ""), np.nan) for k in session.concepts})
        rows.append(row)
    cols = ["id", "image", "label", *[k for k in KEEP if k in frame.columns],
            *[CONCEPT_PREFIX + k for k in session.concepts]]
    return pd.DataFrame(rows, columns=cols)


def export_corrections(session: ReviewSession, path: str | os.PathLike) -> tuple[Path, int]:
    """Write :func:`corrections_frame` atomically to ``path`` (CSV or Parquet); returns ``(path, rows)``.

    Raises:
        DataError: nothing has been reviewed yet.
    """
    df = corrections_frame(session)
    if df.empty:
        raise DataError("no case has been reviewed yet: nothing to export (open the review and answer some "
                        "concepts first)", path=str(path))
    return save_manifest(Manifest(df, Path(path).parent, source=str(path)), path), len(df)
