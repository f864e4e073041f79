import glob
import shutil

import numpy as np
import pytest

from medcbm.data.importers import import_dataset, import_folder, import_ph2
from medcbm.data.manifest import SkipLog
from medcbm.data.ph2_vocab import PH2_CONCEPTS
from medcbm.errors import DataError, RegistryError

from tests.data.dicom_utils import gray_from_jpeg, write_dicom


def test_ham10000(ham_manifest):
    f = ham_manifest.frame
    assert len(f) == 5764
    assert f["site"].value_counts().to_dict() == {"vidir_molemax": 3159, "vidir_modern": 1346, "rosendahl": 1259}
    assert set(f["label"]) == {"nv", "mel", "bkl", "bcc", "akiec", "df", "vasc"}
    assert f["malignant"].sum() == (f["label"].isin(["mel", "bcc", "akiec"])).sum()
    assert ham_manifest.image_path(0).is_file()


def test_ph2_concepts_parsed_from_the_original_sheet(ph2_manifest):
    f = ph2_manifest.frame.set_index("id")
    assert len(f) == 200
    assert f["label"].value_counts().to_dict() == {"common_nevus": 80, "atypical_nevus": 80, "melanoma": 40}
    # IMD003: common nevus, symmetric, typical network, no veil, dark-brown only
    r = f.loc["IMD003"]
    assert r["label"] == "common_nevus" and r["concept_asymmetry"] == 0 and r["concept_pigment_network_atypical"] == 0
    assert r["concept_color_dark_brown"] == 1 and r["concept_color_light_brown"] == 0
    # IMD435: lentigo maligna melanoma, fully asymmetric, atypical network, veil, four colours
    r = f.loc["IMD435"]
    assert r["label"] == "melanoma" and r["histology"] == "Lentigo Maligna"
    assert r["concept_asymmetry_full"] == 1 and r["concept_blue_whitish_veil"] == 1 and r["concept_streaks"] == 0
    assert [r[f"concept_color_{c}"] for c in ("white", "red", "light_brown", "dark_brown", "blue_gray", "black")] == [0, 0, 1, 1, 1, 1]
    assert all(f"concept_{k}" in f.columns for k in PH2_CONCEPTS)
    # whole-lesion pattern concepts follow the clinical diagnosis
    assert (f["concept_melanoma_pattern"] == (f.label == "melanoma")).all()
    assert (f["concept_atypical_pattern"] == (f.label != "common_nevus")).all()
    # melanomas carry the atypical criteria far more often than common nevi
    mel, cn = f[f.label == "melanoma"], f[f.label == "common_nevus"]
    assert mel["concept_pigment_network_atypical"].mean() > cn["concept_pigment_network_atypical"].mean() + 0.3


def test_ph2_bad_cell_names_row_and_field(tmp_path, data_root):
    from openpyxl import load_workbook

    folder = tmp_path / "ph2"
    folder.mkdir()
    (folder / "images").symlink_to(data_root / "ph2" / "images")
    (folder / "masks").symlink_to(data_root / "ph2" / "masks")
    wb = load_workbook(data_root / "ph2" / "PH2_dataset.xlsx")
    ws = wb.worksheets[0]
    ws.cell(row=20, column=9).value = "maybe"  # Streaks column of sheet row 20
    wb.save(folder / "PH2_dataset.xlsx")
    with pytest.raises(DataError, match=r"value 'maybe' not in \['A', 'P'\].*manifest row 20, field 'Streaks'"):
        import_ph2(folder)


def test_covid_cxr_duplicates_are_recorded_not_dropped(data_root):
    with pytest.raises(DataError, match="listed more than once"):
        import_dataset("covid-cxr", data_root)
    skips = SkipLog()
    m = import_dataset("covid-cxr", data_root, skips=skips)
    assert len(m) == 570 and len(skips) == 5
    f = m.frame
    assert {"view", "clinical_notes", "location"} <= set(f.columns)
    assert (f["site"] == f["site"].str.strip()).all()
    assert (f["clinical_notes"].str.len() > 20).sum() > 300


def test_unknown_dataset_lists_names(data_root):
    with pytest.raises(RegistryError, match="Available: covid-cxr, derm7pt, ham10000, ph2"):
        import_dataset("mnist", data_root)


def test_folder_import_with_dicoms_and_subfolder_labels(tmp_path, data_root):
    jpgs = sorted(glob.glob(str(data_root / "covid-cxr" / "images" / "*.jpg")))[:4]
    for i, j in enumerate(jpgs):
        lab = "covid" if i % 2 else "normal"
        (tmp_path / lab).mkdir(exist_ok=True)
        if i < 2:
            write_dicom(tmp_path / lab / f"img{i}", gray_from_jpeg(j, 64), bits=8, institution=f"Hosp{i}",
                        sex="M", age="070Y", patient=f"P{i}")  # no suffix: detected by the DICM magic
        else:
            shutil.copy(j, tmp_path / lab / f"img{i}.jpg")
    m = import_folder(tmp_path, keep_identifiers=True)
    f = m.frame.set_index("id")
    assert sorted(f["label"]) == ["covid", "covid", "normal", "normal"]
    assert f.loc["normal/img0", "site"] == "Hosp0" and f.loc["normal/img0", "sex"] == "M"
    assert np.isclose(f.loc["normal/img0", "age"], 70.0) and f.loc["covid/img1", "patient_id"] == "P1"
    assert f.loc["normal/img2.jpg", "site"] == "unknown"
    # by default patient and institution are keyed hashes: stable, distinct, not the header values
    p = import_folder(tmp_path).frame.set_index("id")
    assert p.loc["normal/img0", "site"].startswith("site-") and p.loc["covid/img1", "patient_id"].startswith("pt-")
    assert p.loc["normal/img0", "patient_id"] != p.loc["covid/img1", "patient_id"]
    assert p.equals(import_folder(tmp_path).frame.set_index("id")) and "Hosp0" not in p.to_csv()


def test_folder_import_with_csv_reports_missing_rows(tmp_path, data_root):
    j = sorted(glob.glob(str(data_root / "ham10000" / "images" / "*.jpg")))[0]
    shutil.copy(j, tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("file,dx,site\na.jpg,mel,clinicA\nmissing.jpg,nv,clinicB\n")
    with pytest.raises(DataError, match="missing.jpg.*manifest row 2, field 'file'"):
        import_folder(tmp_path, labels_csv=tmp_path / "labels.csv", image_col="file", label_col="dx")
    skips = SkipLog()
    m = import_folder(tmp_path, labels_csv=tmp_path / "labels.csv", image_col="file", label_col="dx", skips=skips)
    assert len(m) == 1 and m.frame.loc[0, "site"] == "clinicA" and len(skips) == 1


def test_bad_labels_csv_and_empty_manifests_are_one_line_errors(tmp_path, data_root):
    from medcbm.data.manifest import load_manifest

    jpg = sorted(glob.glob(str(data_root / "covid-cxr" / "images" / "*.jpg")))[0]
    (tmp_path / "imgs").mkdir()
    shutil.copy(jpg, tmp_path / "imgs" / "a.jpg")
    with pytest.raises(DataError, match="labels CSV not found"):
        import_folder(tmp_path / "imgs", labels_csv=tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="labels CSV is empty"):
        import_folder(tmp_path / "imgs", labels_csv=tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("image,label\n")
    with pytest.raises(DataError, match="header but no rows"):
        import_folder(tmp_path / "imgs", labels_csv=tmp_path / "header.csv")
    for bad in ("../imgs/a.jpg", jpg):
        (tmp_path / "esc.csv").write_text(f"image,label\na.jpg,x\n{bad},y\n")
        with pytest.raises(DataError, match=r"leaves the image folder.*manifest row 2, field 'image'"):
            import_folder(tmp_path / "imgs", labels_csv=tmp_path / "esc.csv")
    (tmp_path / "m.csv").write_text("id,image,label\n")
    with pytest.raises(DataError, match="header but no rows"):
        load_manifest(tmp_path / "m.csv")
    (tmp_path / "m0.csv").write_text("")
    with pytest.raises(DataError, match="manifest is empty"):
        load_manifest(tmp_path / "m0.csv")
