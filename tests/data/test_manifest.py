from pathlib import Path

import pandas as pd
import pytest

from medcbm.data.manifest import Manifest, SkipLog, load_manifest, save_manifest
from medcbm.errors import DataError


def _frame(tmp_path, n=4):
    for i in range(n):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
    return pd.DataFrame({"id": [f"s{i}" for i in range(n)], "image": [f"{i}.jpg" for i in range(n)],
                         "label": ["a", "b"] * (n // 2), "sex": ["male", "F", None, "weird"][:n], "age": [30, None, "41", 50][:n]})


def test_normalises_standard_columns(tmp_path):
    m = Manifest(_frame(tmp_path), tmp_path)
    assert m.frame["sex"].tolist() == ["M", "F", "unknown", "unknown"]
    assert m.frame["age"].isna().tolist() == [False, True, False, False]
    assert m.frame["patient_id"].tolist() == ["s0", "s1", "s2", "s3"]  # defaults to the sample id
    assert (m.frame["site"] == "unknown").all()
    assert m.image_path(0) == tmp_path / "0.jpg"


def test_duplicate_id_names_both_rows(tmp_path):
    f = _frame(tmp_path)
    f.loc[3, "id"] = "s1"
    with pytest.raises(DataError, match=r"duplicate id 's1' \(first seen at row 2\).*manifest row 4.*field 'id'"):
        Manifest(f, tmp_path, source="m.csv")


def test_missing_column_and_bad_age(tmp_path):
    with pytest.raises(DataError, match="required column"):
        Manifest(_frame(tmp_path).drop(columns=["label"]), tmp_path)
    f = _frame(tmp_path)
    f.loc[2, "age"] = "forty"
    with pytest.raises(DataError, match="manifest row 3.*field 'age'"):
        Manifest(f, tmp_path)


def test_missing_file_raises_or_is_recorded(tmp_path):
    m = Manifest(_frame(tmp_path), tmp_path)
    (tmp_path / "2.jpg").unlink()
    with pytest.raises(DataError, match=r"image file not found \[file .*2.jpg, manifest row 3"):
        m.check_files()
    skips = SkipLog()
    kept = m.check_files(skips=skips)
    assert len(kept) == 3 and len(skips) == 1 and skips.items[0].row == 3
    skips.write(tmp_path / "skipped.json")
    assert "2.jpg" in (tmp_path / "skipped.json").read_text()


def test_unknown_label(tmp_path):
    m = Manifest(_frame(tmp_path), tmp_path)
    with pytest.raises(DataError, match="unknown label 'b'.*manifest row 2"):
        m.check_labels(["a"])
    skips = SkipLog()
    assert len(m.check_labels(["a"], skips=skips)) == 2 and len(skips) == 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_roundtrip(tmp_path, suffix):
    m = Manifest(_frame(tmp_path).assign(extra=["x", "y", "z", "w"]), tmp_path)
    save_manifest(m, tmp_path / f"m{suffix}")
    back = load_manifest(tmp_path / f"m{suffix}")
    assert back.frame["id"].tolist() == m.frame["id"].tolist()
    assert back.frame["extra"].tolist() == ["x", "y", "z", "w"]
    assert back.image_path(1) == tmp_path / "1.jpg"


def test_unparseable_manifest(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot parse manifest.*bad.parquet"):
        load_manifest(p)
    with pytest.raises(DataError, match="not found"):
        load_manifest(tmp_path / "nope.csv")


def test_csv_outputs_escape_formulas_and_read_back_unchanged(tmp_path, monkeypatch):
    from medcbm._io import safe_csv_bytes
    from medcbm.data.manifest import Manifest, load_manifest, save_manifest

    (tmp_path / "a.jpg").write_bytes(b"")
    ids = ['=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "plain"]
    m = Manifest(pd.DataFrame({"id": ids, "image": ["a.jpg"] * 5, "label": ["nv"] * 5}), tmp_path)
    monkeypatch.chdir(tmp_path)
    save_manifest(Manifest(m.frame, "."), tmp_path / "out" / "m.csv")  # a relative root, as from import-folder
    raw = (tmp_path / "out" / "m.csv").read_text()
    # no cell a spreadsheet would run: every formula-like text starts with a quote
    cells = [c for line in raw.splitlines()[1:] for c in line.split(",")]
    assert not [c for c in cells if c.lstrip('"').startswith(("=", "+", "-", "@"))]
    back = load_manifest(tmp_path / "out" / "m.csv")
    assert list(back.frame["id"]) == ids  # medcbm reads its own escaping back
    assert all(Path(p).is_absolute() for p in back.frame["image"])  # not relative to the working directory
    assert b"'=HYPERLINK" in safe_csv_bytes(pd.DataFrame({"top": ['=HYPERLINK("x")'], "p": [0.5]}))


def test_skips_shared_in_artifacts_name_files_not_machine_paths(tmp_path):
    """A benchmark JSON leaves this machine: its skip records carry paths relative to the data root."""
    from medcbm.data.manifest import SkipLog

    skips = SkipLog()
    skips.add("duplicate image", row=3, path=str(tmp_path / "covid-cxr" / "metadata.csv"))
    skips.add("unreadable", row=4, path="/elsewhere/private/img.jpg")
    recs = skips.shareable_records(tmp_path)
    assert [r["path"] for r in recs] == ["covid-cxr/metadata.csv", "img.jpg"]
    assert recs[0]["row"] == 3 and recs[0]["reason"] == "duplicate image"
    assert str(tmp_path) not in str(recs) and [r["path"] for r in skips.shareable_records(None)][0] == "metadata.csv"
