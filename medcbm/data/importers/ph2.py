"""PH2 (Mendonça et al., IEEE EMBC 2013): diagnoses and expert dermoscopic criteria from ``PH2_dataset.xlsx``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medcbm.data.manifest import SKIP_HINT, Manifest, SkipLog
from medcbm.data.ph2_vocab import CONCEPT_PREFIX, PH2_CONCEPTS, PH2_PATTERN_CONCEPTS
from medcbm.errors import DataError

DIAGNOSES = {"Common Nevus": "common_nevus", "Atypical Nevus": "atypical_nevus", "Melanoma": "melanoma"}
COLOURS = {"White": "color_white", "Red": "color_red", "Light-Brown": "color_light_brown",
           "Dark-Brown": "color_dark_brown", "Blue-Gray": "color_blue_gray", "Black": "color_black"}
# sheet header prefix -> allowed codes
CRITERIA = {"Asymmetry": {0, 1, 2}, "Pigment Network": {"AT", "T"}, "Dots/Globules": {"A", "AT", "T"},
            "Streaks": {"A", "P"}, "Regression Areas": {"A", "P"}, "Blue-Whitish Veil": {"A", "P"}}


def _read_sheet(xlsx: Path) -> tuple[list[str], list[tuple], int]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(xlsx, read_only=True, data_only=True)
    except Exception as exc:
        raise DataError(f"cannot open PH2 annotation sheet: {exc}", path=str(xlsx)) from None
    rows = list(wb.worksheets[0].iter_rows(values_only=True))
    for r, row in enumerate(rows):
        if row and row[0] == "Image Name":
            header = [str(c).split("\n")[0].strip() if c is not None else "" for c in row]
            return header, rows[r + 1 :], r + 2  # r+2: 1-based sheet row of the first data row
    raise DataError("no header row starting with 'Image Name' in the PH2 sheet", path=str(xlsx))


def import_ph2(folder: str | Path, *, skips: SkipLog | None = None) -> Manifest:
    """Parse the original sheet into a manifest with ``concept_*`` columns (0/1) and lesion masks."""
    folder = Path(folder)
    xlsx = folder / "PH2_dataset.xlsx"
    if not xlsx.is_file():
        raise DataError("PH2 annotation sheet not found", path=str(xlsx))
    header, data, first_row = _read_sheet(xlsx)
    col = {name: i for i, name in enumerate(header) if name}
    for needed in ["Image Name", *DIAGNOSES, *CRITERIA, *COLOURS]:
        if needed not in col:
            raise DataError(f"PH2 sheet lacks column '{needed}'", path=str(xlsx))
    records = []
    for k, row in enumerate(data):
        sheet_row = first_row + k
        name = row[col["Image Name"]]
        if name is None or str(name).strip() == "":
            continue  # trailing blank rows of the sheet
        name = str(name).strip()
        dx = [v for h, v in DIAGNOSES.items() if str(row[col[h]] or "").strip().upper() == "X"]
        if len(dx) != 1:
            raise DataError(f"image {name}: expected exactly one clinical diagnosis marked X, found {len(dx)}",
                            path=str(xlsx), row=sheet_row, field="Clinical Diagnosis")
        crit = {}
        for h, allowed in CRITERIA.items():
            v = row[col[h]]
            v = int(v) if h == "Asymmetry" and v is not None and str(v).strip().isdigit() else (str(v).strip() if v is not None else None)
            if v not in allowed:
                raise DataError(f"image {name}: value {v!r} not in {sorted(map(str, allowed))}",
                                path=str(xlsx), row=sheet_row, field=h)
            crit[h] = v
        rec = {
            "id": name,
            "image": f"images/{name}.jpg",
            "label": dx[0],
            "patient_id": name,
            "site": "ph2_pedro_hispano",
            "mask": f"masks/{name}_lesion.png",
            "histology": row[col["Histological Diagnosis"]] if "Histological Diagnosis" in col else None,
            "asymmetry_score": crit["Asymmetry"],
        }
        derived = {
            "asymmetry": crit["Asymmetry"] >= 1,
            "asymmetry_full": crit["Asymmetry"] == 2,
            "pigment_network_atypical": crit["Pigment Network"] == "AT",
            "dots_globules": crit["Dots/Globules"] in ("AT", "T"),
            "dots_globules_atypical": crit["Dots/Globules"] == "AT",
            "streaks": crit["Streaks"] == "P",
            "regression_areas": crit["Regression Areas"] == "P",
            "blue_whitish_veil": crit["Blue-Whitish Veil"] == "P",
        }
        for h, key in COLOURS.items():
            derived[key] = str(row[col[h]] or "").strip().upper() == "X"
        derived["melanoma_pattern"] = dx[0] == "melanoma"
        derived["atypical_pattern"] = dx[0] in ("atypical_nevus", "melanoma")
        assert set(derived) == set(PH2_CONCEPTS) | set(PH2_PATTERN_CONCEPTS), "PH2 vocabulary and parser disagree"
        rec.update({CONCEPT_PREFIX + k: int(v) for k, v in derived.items()})
        records.append(rec)
    if not records:
        raise DataError("PH2 sheet has no image rows", path=str(xlsx))
    return Manifest(pd.DataFrame(records), folder, source=str(xlsx)).check_files(skips=skips, hint=SKIP_HINT)
