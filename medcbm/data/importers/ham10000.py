"""HAM10000 (Tschandl et al., Sci. Data 2018) with its acquisition sites."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medcbm.data.manifest import SKIP_HINT, Manifest, SkipLog
from medcbm.errors import DataError

DX_NAMES = {
    "nv": "melanocytic nevus",
    "mel": "melanoma",
    "bkl": "benign keratosis",
    "bcc": "basal cell carcinoma",
    "akiec": "actinic keratosis / Bowen's disease",
    "df": "dermatofibroma",
    "vasc": "vascular lesion",
}
MALIGNANT = ("mel", "bcc", "akiec")


def import_ham10000(folder: str | Path, *, skips: SkipLog | None = None) -> Manifest:
    """Read ``metadata.csv`` + ``images/`` into a manifest (label = ``dx``, site = ``dataset``)."""
    folder = Path(folder)
    meta = folder / "metadata.csv"
    if not meta.is_file():
        raise DataError("HAM10000 metadata.csv not found", path=str(meta))
    df = pd.read_csv(meta, dtype=str)
    need = {"lesion_id", "image_id", "dx", "dataset"}
    if need - set(df.columns):
        raise DataError(f"HAM10000 metadata lacks columns {sorted(need - set(df.columns))}", path=str(meta))
    unknown = ~df["dx"].isin(DX_NAMES)
    if unknown.any():
        i = int(unknown.to_numpy().nonzero()[0][0])
        raise DataError(f"unknown diagnosis '{df.at[i, 'dx']}'", path=str(meta), row=i + 1, field="dx")
    frame = pd.DataFrame({
        "id": df["image_id"],
        "image": "images/" + df["image_id"] + ".jpg",
        "label": df["dx"],
        "patient_id": df["lesion_id"],
        "site": df["dataset"],
        "sex": df.get("sex"),
        "age": df.get("age"),
        "dx_type": df.get("dx_type"),
        "localization": df.get("localization"),
        "malignant": df["dx"].isin(MALIGNANT).astype(int),
    })
    return Manifest(frame, folder, source=str(meta)).check_files(skips=skips, hint=SKIP_HINT)
