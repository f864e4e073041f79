"""COVID-19 image data collection (Cohen et al., MELBA 2020): chest X-rays with sites, views and notes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medcbm.data.manifest import SKIP_HINT, Manifest, SkipLog
from medcbm.errors import DataError

KEEP = ["offset", "view", "modality", "finding", "location", "clinical_notes", "license", "doi", "url", "date"]


def import_covid_cxr(folder: str | Path, *, skips: SkipLog | None = None) -> Manifest:
    """Read ``metadata.csv``: label = ``finding``, site = ``location``, patient = ``patientid``.

    Several rows can point at the same file (the source lists some images twice); the first row is
    kept and the others are recorded in ``skips`` when given, otherwise they raise.
    """
    folder = Path(folder)
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise DataError("chest X-ray metadata.csv not found", path=str(meta))
    df = pd.read_csv(meta, dtype=str, encoding_errors="replace")
    need = {"patientid", "finding", "filename"}
    if need - set(df.columns):
        raise DataError(f"metadata lacks columns {sorted(need - set(df.columns))}", path=str(meta))
    folder_col = df["folder"].fillna("images") if "folder" in df.columns else "images"
    frame = pd.DataFrame({
        "id": df["filename"],
        "image": folder_col + "/" + df["filename"],
        "label": df["finding"],
        "patient_id": "p" + df["patientid"].astype(str),
        "site": df.get("location", pd.Series(index=df.index, dtype=str)).fillna("unknown"),
        "sex": df.get("sex"),
        "age": df.get("age"),
    })
    for c in KEEP:
        if c in df.columns:
            frame[c] = df[c]
    frame["clinical_notes"] = frame.get("clinical_notes", pd.Series(index=df.index, dtype=str)).fillna("")
    dup = frame["id"].duplicated(keep="first")
    if dup.any():
        if skips is None:
            i = int(dup.to_numpy().nonzero()[0][0])
            raise DataError(f"image '{frame.at[i, 'id']}' is listed more than once; {SKIP_HINT} (the "
                            "first row is kept)",
                            path=str(meta), row=i + 1, field="filename")
        for i in dup.to_numpy().nonzero()[0]:
            skips.add(f"duplicate row for image {frame.at[int(i), 'id']} (first row kept)", row=int(i) + 1, path=str(meta))
        frame = frame[~dup]
    return Manifest(frame, folder, source=str(meta)).check_files(skips=skips, hint=SKIP_HINT)
