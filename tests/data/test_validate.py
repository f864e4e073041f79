"""``medcbm data validate`` and ``Manifest.check_files`` on hostile paths and masks: paths that leave the manifest's
folder, files that are not images, missing, non-image and empty lesion masks, a DICOM with a corrupt header
element. Each is one line naming the row and the field, with or without ``--decode``."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medcbm.data.manifest import Manifest, SkipLog, load_manifest, save_manifest
from medcbm.data.validate import validate_files
from medcbm.errors import DataError
from tests.data.dicom_utils import write_unknown_vr_dicom
from tests.test_cli import run_main


@pytest.fixture()
def folder(tmp_path, data_root):
    """A manifest folder with two real HAM10000 images and a real PH2 image with its lesion mask."""
    d = tmp_path / "site"
    (d / "images").mkdir(parents=True)
    for name in sorted(os.listdir(data_root / "ham10000" / "images"))[:2]:
        shutil.copy(data_root / "ham10000" / "images" / name, d / "images" / name)
    shutil.copy(data_root / "ph2" / "images" / "IMD002.jpg", d / "images" / "IMD002.jpg")
    (d / "masks").mkdir()
    shutil.copy(data_root / "ph2" / "masks" / "IMD002_lesion.png", d / "masks" / "IMD002_lesion.png")
    return d


def _write(folder, images, masks=None, name="m.csv"):
    df = pd.DataFrame({"id": [f"c{i}" for i in range(len(images))], "image": images, "label": "nv"})
    if masks is not None:
        df["mask"] = masks
    df.to_csv(folder / name, index=False)
    return folder / name


def _images(folder):
    """The PH2 image (the one with a mask) first, then the two HAM10000 images."""
    ham = sorted(n for n in os.listdir(folder / "images") if n.startswith("ISIC"))
    return ["images/IMD002.jpg"] + [f"images/{n}" for n in ham]


@pytest.fixture()
def cli(capsys, monkeypatch):
    return lambda *args: run_main(capsys, monkeypatch, *args)


def test_relative_paths_may_not_leave_the_manifest_folder(folder, cli):
    good = _images(folder)
    secret = folder.parent / "secret.jpg"  # a real image, but outside the manifest's folder
    shutil.copy(folder / good[0], secret)
    m = load_manifest(_write(folder, [good[0], "images/../" + good[1], "../secret.jpg"]))
    with pytest.raises(DataError, match=r"image path '\.\./secret\.jpg' leads out of the manifest's folder.*"
                                        r"m\.csv, manifest row 3, field 'image'"):
        m.check_files()
    skips = SkipLog()
    assert len(m.check_files(skips=skips)) == 2 and skips.items[0].row == 3  # `..` that stays inside is fine
    code, err = cli("data", "validate", _write(folder, [good[0], "../../../../../../etc/passwd"]))
    assert code == 2 and "leads out of the manifest's folder" in err and "manifest row 2" in err
    assert len(err.strip().splitlines()) == 1


def test_absolute_paths_must_be_regular_image_files(folder, tmp_path, cli):
    good = str(folder / _images(folder)[0])
    m = Manifest(pd.DataFrame({"id": ["a", "b"], "image": [good, "/dev/null"], "label": "nv"}), folder)
    with pytest.raises(DataError, match=r"image path is not a regular file.*manifest row 2, field 'image'"):
        m.check_files()
    # an existing regular file that is not an image passes check_files but not validate, even without --decode
    text = tmp_path / "notes.jpg"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    csv = _write(folder, [good, str(text)])
    code, err = cli("data", "validate", csv)
    assert code == 2 and "not an image file" in err and "manifest row 2, field 'image'" in err
    # a symlink inside the folder to an image elsewhere is an ordinary file (as its absolute path would be)
    (folder / "linked.jpg").symlink_to(good)
    assert validate_files(load_manifest(_write(folder, ["linked.jpg"])).check_files(), decode=True) == {"JPEG": 1}


def test_masks_are_checked_like_images(folder, tmp_path):
    imgs = _images(folder)
    mask = "masks/IMD002_lesion.png"
    m = load_manifest(_write(folder, imgs, [mask, None, None]))
    assert validate_files(m.check_files(), decode=True) == {"JPEG": 3, "masks": 1}
    missing = load_manifest(_write(folder, imgs, [mask, "masks/gone.png", None]))
    with pytest.raises(DataError, match=r"lesion mask file not found.*gone\.png, manifest row 2, field 'mask'"):
        missing.check_files()
    skips = SkipLog()
    assert len(missing.check_files(skips=skips)) == 2 and "lesion mask" in skips.items[0].reason
    with pytest.raises(DataError, match=r"lesion mask path '\.\./x\.png' leads out.*row 1, field 'mask'"):
        load_manifest(_write(folder, imgs, ["../x.png", None, None])).check_files()
    (folder / "masks" / "notes.png").write_text("not a mask")
    with pytest.raises(DataError, match=r"not an image file.*notes\.png, manifest row 3, field 'mask'"):
        validate_files(load_manifest(_write(folder, imgs, [None, None, "masks/notes.png"])).check_files())
    # a mask with no lesion decodes but cannot crop: found by --decode only
    Image.fromarray(np.zeros((560, 768), np.uint8)).save(folder / "masks" / "empty.png")
    empty = load_manifest(_write(folder, imgs, ["masks/empty.png", None, None])).check_files()
    validate_files(empty)
    with pytest.raises(DataError, match=r"lesion mask is empty.*manifest row 1, field 'mask'"):
        validate_files(empty, decode=True)


def test_saved_manifests_keep_their_masks(folder, tmp_path):
    m = load_manifest(_write(folder, _images(folder), ["masks/IMD002_lesion.png", None, None]))
    save_manifest(m, tmp_path / "elsewhere" / "copy.csv")  # another folder: relative masks would break
    copy = load_manifest(tmp_path / "elsewhere" / "copy.csv").check_files()
    assert copy.mask_paths() == [folder / "masks" / "IMD002_lesion.png", None, None]


def test_decode_names_the_row_of_a_dicom_with_a_corrupt_header_element(folder, dicom_file, cli):
    write_unknown_vr_dicom(folder / "images" / "bad.dcm", dicom_file("CT_small.dcm"))
    shutil.copy(dicom_file("CT_small.dcm"), folder / "images" / "ct.dcm")
    csv = _write(folder, ["images/ct.dcm", "images/bad.dcm"])
    for args in ((), ("--decode",)):
        code, err = cli("data", "validate", csv, *args)
        assert code == 2 and "object at 0x" not in err and "Unknown Value Representation" in err
        assert "manifest row 2, field 'image'" in err and len(err.strip().splitlines()) == 1
