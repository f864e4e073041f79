"""A corrupt image in ``medcbm predict`` / ``evaluate`` is one line naming the file, its row and the real cause:
never MONAI's "applying transform <LoadMedicalImaged object at 0x...>", never a traceback."""

from __future__ import annotations

import pandas as pd

from tests.data.dicom_utils import write_unknown_vr_dicom
from tests.test_cli import medcbm, run_main


def _manifest(tmp_path, ham_own, bad: str):
    _, df = ham_own
    good = df[df["split"] == "test"].head(3)
    rows = pd.concat([good[["id", "image", "label"]],
                      pd.DataFrame({"id": ["bad"], "image": [bad], "label": ["benign"]})])
    rows.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv"


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]


def test_predict_names_a_corrupt_dicom_in_one_line(audit_model, ham_own, dicom_file, feature_cache, tmp_path):
    bad = write_unknown_vr_dicom(tmp_path / "bad.dcm", dicom_file("CT_small.dcm"))
    r = medcbm("predict", "--model", audit_model, "--manifest", _manifest(tmp_path, ham_own, bad),
               "--out", tmp_path / "p.csv", "--cache-dir", feature_cache)
    errors = _errors(r.stderr)
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "object at 0x" not in r.stderr + r.stdout
    assert "Unknown Value Representation" in errors[0] and "bad.dcm" in errors[0]
    assert "manifest row 4, field 'image'" in errors[0]
    assert not (tmp_path / "p.csv").exists()


def test_evaluate_names_a_truncated_jpeg(audit_model, ham_own, feature_cache, tmp_path, capsys, monkeypatch):
    _, df = ham_own
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(open(df["image"].iloc[0], "rb").read()[:3000])  # a real image, cut short
    code, err = run_main(capsys, monkeypatch, "evaluate", "--model", audit_model, "--manifest",
                         _manifest(tmp_path, ham_own, str(truncated)), "--cache-dir", feature_cache)
    errors = _errors(err)  # the rest of stderr is the progress bar
    assert code == 2 and len(errors) == 1 and "object at 0x" not in err
    assert "image file is truncated" in errors[0] and "cut.jpg, manifest row 4, field 'image'" in errors[0]
