"""Derm7pt on the real release: importer, checklist concepts, splits, expert prior and grounding map."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medcbm.data.derm7pt_vocab import (CONCEPT_PREFIX, DERM7PT_CONCEPTS, DERM7PT_CRITERIA, DERM7PT_DIAGNOSES,
                                       DERM7PT_PATTERN_CONCEPTS, SHARED_WITH_PH2)
from medcbm.data.importers import import_dataset, import_derm7pt
from medcbm.data.manifest import SkipLog
from medcbm.data.ph2_vocab import PH2_CONCEPTS
from medcbm.errors import DataError

REPO = Path(__file__).resolve().parents[2]
CASE_ROW = "FCl/Fcl068.jpg"  # meta.csv spells the folder FCl/, the disk has FCL/


@pytest.fixture(scope="module")
def derm7pt(data_root):
    return import_dataset("derm7pt", data_root)


@pytest.fixture(scope="module")
def meta_rows(data_root) -> list[dict[str, str]]:
    with open(data_root / "derm7pt" / "meta.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _link_release(data_root: Path, dst: Path, rows: list[dict[str, str]] | None = None) -> Path:
    """A derm7pt folder in ``dst`` sharing the real images, with ``rows`` as its meta.csv and split files cut to them."""
    src = data_root / "derm7pt"
    dst.mkdir()
    (dst / "images").symlink_to(src / "images")
    (dst / "splits").mkdir()
    for f in (src / "splits").glob("*.csv"):
        idx = [line for line in f.read_text().split()[1:] if rows is None or int(line) < len(rows)]
        (dst / "splits" / f.name).write_text("\n".join(["indexes", *idx]) + "\n")
    if rows is not None:
        with open(dst / "meta.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return dst


def test_every_case_imported_with_the_case_mismatch_resolved(derm7pt, meta_rows):
    f = derm7pt.frame
    assert len(f) == len(meta_rows) == 1011 and f["id"].is_unique
    i = [r["derm"] for r in meta_rows].index(CASE_ROW)
    assert f.at[i, "image"] != f"images/{CASE_ROW}" and f.at[i, "image"].lower() == f"images/{CASE_ROW}".lower()
    assert derm7pt.image_path(i).is_file()
    # every other row keeps its path exactly as written
    same = [f.at[k, "image"] == f"images/{r['derm']}" for k, r in enumerate(meta_rows) if k != i]
    assert all(same)
    assert set(f["site"]) == {"derm7pt"} and (f["patient_id"] == f["id"]).all()


def test_labels_merge_melanoma_variants_and_keep_the_raw_diagnosis(derm7pt, meta_rows):
    f = derm7pt.frame
    assert (f["diagnosis"] == [r["diagnosis"] for r in meta_rows]).all()
    mel_raw = sum(r["diagnosis"].startswith("melanoma") for r in meta_rows)
    assert (f["label"] == "melanoma").sum() == mel_raw and f.loc[f.label == "melanoma", "diagnosis"].nunique() > 1
    assert f["malignant"].sum() == mel_raw + sum(r["diagnosis"] == "basal cell carcinoma" for r in meta_rows)
    assert set(f["label"]) == set(DERM7PT_DIAGNOSES.values())


@pytest.mark.parametrize("key, column, values", [
    ("vascular_arborizing", "vascular_structures", {"arborizing"}),
    ("pigment_network_atypical", "pigment_network", {"atypical"}),
    ("regression_blue", "regression_structures", {"blue areas", "combinations"}),
    ("pigmentation_irregular", "pigmentation", {"diffuse irregular", "localized irregular"}),
])
def test_concept_columns_match_meta_csv(derm7pt, meta_rows, key, column, values):
    f = derm7pt.frame
    expected = [int(r[column] in values) for r in meta_rows]
    assert f[CONCEPT_PREFIX + key].tolist() == expected and sum(expected) >= 5


def test_all_concepts_are_binary_with_enough_positives(derm7pt):
    f = derm7pt.frame
    for k in DERM7PT_CONCEPTS:
        col = f[CONCEPT_PREFIX + k]
        assert set(col.unique()) <= {0, 1} and col.sum() >= 5, k
    # the any-form concept is exactly the union of its grades
    assert (f["concept_streaks"] == (f["concept_streaks_regular"] | f["concept_streaks_irregular"])).all()


def test_split_column_follows_the_asymmetric_index_files(derm7pt, data_root):
    f = derm7pt.frame
    assert set(f["derm7pt_split"]) == {"train", "valid", "test", "unassigned"}
    for split in ("train", "valid", "test"):
        with open(data_root / "derm7pt" / "splits" / f"asymmetric_{split}_indexes_filtered.csv") as fh:
            idx = sorted(int(r["indexes"]) for r in csv.DictReader(fh))
        assert sorted(f.index[f["derm7pt_split"] == split]) == idx
    sym = import_derm7pt(data_root / "derm7pt", split_filter="symmetric").frame["derm7pt_split"]
    # the symmetric filtering keeps a subset of each asymmetric split
    assert ((sym == f["derm7pt_split"]) | (sym == "unassigned")).all() and (sym == "unassigned").sum() > 170


def _edited_release(data_root: Path, dst: Path, meta_rows: list[dict[str, str]], n: int, row: int, field: str,
                    value: str) -> Path:
    """The first ``n`` meta.csv rows with ``field`` of zero-based ``row`` set to ``value``."""
    rows = [dict(r) for r in meta_rows[:n]]
    rows[row][field] = value
    return _link_release(data_root, dst, rows)


@pytest.mark.parametrize("row, field, value, match", [
    (6, "streaks", "wavy", r"unknown streaks value 'wavy'.*manifest row 7, field 'streaks'"),
    (3, "diagnosis", "melanoma (huge)", r"unknown diagnosis value 'melanoma \(huge\)'.*manifest row 4, field 'diagnosis'"),
    (2, "derm", "NEL/Nel999.jpg", r"image file not found.*manifest row 3, field 'image'"),
])
def test_bad_row_names_row_and_field(tmp_path, data_root, meta_rows, row, field, value, match):
    with pytest.raises(DataError, match=match):
        import_derm7pt(_edited_release(data_root, tmp_path / "derm7pt", meta_rows, 12, row, field, value))


def test_missing_column_and_file_are_named(tmp_path, data_root, meta_rows):
    rows = [{k: v for k, v in r.items() if k != "blue_whitish_veil"} for r in meta_rows[:3]]
    folder = _link_release(data_root, tmp_path / "a", rows)
    with pytest.raises(DataError, match=r"lacks columns \['blue_whitish_veil'\].*meta.csv"):
        import_derm7pt(folder)
    with pytest.raises(DataError, match=r"meta.csv not found"):
        import_derm7pt(_link_release(data_root, tmp_path / "b"))
    # split files that index rows meta.csv does not have
    folder = _link_release(data_root, tmp_path / "c", [dict(r) for r in meta_rows[:5]])
    (folder / "splits" / "asymmetric_test_indexes_filtered.csv").write_text("indexes\n3\n1010\n")
    with pytest.raises(DataError, match=r"index '1010' is not a meta.csv row.*asymmetric_test.*manifest row 2, field 'indexes'"):
        import_derm7pt(folder)


def test_missing_image_is_recorded_when_skips_are_opted_in(tmp_path, data_root, meta_rows):
    skips = SkipLog()
    m = import_derm7pt(_edited_release(data_root, tmp_path / "derm7pt", meta_rows, 5, 2, "derm", "NEL/Nel999.jpg"),
                       skips=skips)
    assert len(m) == 4 and len(skips) == 1 and 2 not in m.frame["derm7pt_index"].tolist()


def test_ambiguous_case_insensitive_path_is_an_error(tmp_path, data_root, meta_rows):
    folder = tmp_path / "derm7pt"
    (folder / "images" / "FCL").mkdir(parents=True)
    (folder / "images" / "Fcl").mkdir()
    row = next(r for r in meta_rows if r["derm"] == CASE_ROW)
    with open(folder / "meta.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    with pytest.raises(DataError, match=r"ambiguous image path.*manifest row 1, field 'derm'"):
        import_derm7pt(folder)


def test_vocabulary_covers_every_criterion_and_shares_only_same_findings():
    assert set(DERM7PT_CRITERIA) == {"pigment_network", "streaks", "pigmentation", "regression_structures",
                                     "dots_and_globules", "blue_whitish_veil", "vascular_structures"}
    shared = set(DERM7PT_CONCEPTS) & set(PH2_CONCEPTS)
    assert shared == set(SHARED_WITH_PH2)
    assert all(DERM7PT_CONCEPTS[k][0] == PH2_CONCEPTS[k][0] for k in shared)


def test_expert_prior_names_only_derm7pt_concepts_and_agrees_with_ph2():
    from medcbm.bottleneck.priors import load_prior_file

    prior, refs = load_prior_file(REPO / "knowledge" / "priors" / "derm7pt_benign_malignant.yaml")
    vocab = set(DERM7PT_CONCEPTS) | set(DERM7PT_PATTERN_CONCEPTS)
    assert set(prior) == {"benign", "malignant"} and set(prior["malignant"]) == vocab == set(refs)
    mal = prior["malignant"]
    assert mal["vascular_arborizing"] == 1 and mal["vascular_comma"] == -1 and mal["pigment_network_typical"] == -1
    assert all(prior["benign"][k] == -v for k, v in mal.items())
    ph2, _ = load_prior_file(REPO / "knowledge" / "priors" / "ph2_benign_malignant.yaml")
    # a concept shared with PH2 is one concept: both reviewed priors must give it the same sign
    shared = [*SHARED_WITH_PH2, "melanoma_pattern"]
    assert {k: mal[k] for k in shared} == {k: ph2["malignant"][k] for k in shared}
    assert mal["bcc_pattern"] == 1 and mal["keratosis_pattern"] == -1


def test_bank_concepts_ground_to_derm7pt(tmp_path):
    from typer.testing import CliRunner

    from medcbm.concepts import default_bank_path, load_bank
    from medcbm.concepts.alignment import align_bank, coverage, derm7pt_targets, ph2_targets
    from medcbm.concepts.cli import app

    shipped = default_bank_path("dermoscopy", "ham10000")
    r = CliRunner().invoke(app, ["align", str(shipped), "--out", str(tmp_path / "bank.json")], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    bank, aligned = load_bank(shipped), load_bank(tmp_path / "bank.json")
    n_derm7pt = sum(c.grounding.source_for("derm7pt:") is not None for c in aligned.concepts)
    assert f"'derm7pt': {n_derm7pt}" in r.output and n_derm7pt >= 8
    by_id = {c.id: c.grounding for c in aligned.concepts}
    # only Derm7pt annotates vessel types: the bank's "arborizing vessels" becomes groundable through it
    assert by_id["arborizing_vessels"].source == "derm7pt:vascular_arborizing"
    assert by_id["arborizing_vessels"].method == "mapping"
    # a finding both sets annotate keeps PH2 as its source and lists Derm7pt as an extra one
    bwv = by_id["blue_whitish_veil"]
    assert bwv.source == "ph2:blue_whitish_veil" and bwv.extra_sources == ["derm7pt:blue_whitish_veil"]
    assert by_id["streaks"].source_for("derm7pt:") == "derm7pt:streaks"
    # adding Derm7pt leaves every PH2 grounding as aligning with PH2 alone gives it
    ph2_only = {c.id: c.grounding for c in align_bank(bank, targets=ph2_targets()).concepts}
    for cid, g in ph2_only.items():
        if g.status == "annotation":
            assert (by_id[cid].source, by_id[cid].method, by_id[cid].similarity) == (g.source, g.method, g.similarity)
    # the shipped bank is aligned already (medcbm concepts align): re-aligning changes nothing
    assert aligned == bank
    assert len([t for t, ids in coverage(bank, derm7pt_targets()).items() if ids]) >= 8
