import glob

import numpy as np
import pytest
import torch

from medcbm.data.transforms import PreprocessConfig, load_image
from medcbm.errors import DataError

from tests.data.dicom_utils import gray_from_jpeg, write_dicom

RAW = PreprocessConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # outputs in [0, 1] for easy checks


@pytest.fixture(scope="module")
def cxr_jpeg(data_root):
    return sorted(glob.glob(str(data_root / "covid-cxr" / "images" / "*.jpg")))[0]


def test_real_monochrome1_cr_is_inverted_for_display(dicom_file):
    import pydicom

    path = dicom_file("RG1_UNCI.dcm")
    assert pydicom.dcmread(path).PhotometricInterpretation == "MONOCHROME1"
    x = load_image(path, RAW)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()
    # after inversion bright (bone/body) dominates the centre of a chest CR, dark air surrounds it
    centre, border = x[0, 80:144, 80:144].mean(), torch.cat([x[0, :16].flatten(), x[0, -16:].flatten()]).mean()
    assert centre > border


def test_monochrome1_written_from_shared_cxr_matches_monochrome2(tmp_path, cxr_jpeg):
    g = gray_from_jpeg(cxr_jpeg, 256).astype(np.uint16) * 16  # 12-bit range
    m2 = write_dicom(tmp_path / "m2.dcm", g, photometric="MONOCHROME2")
    m1 = write_dicom(tmp_path / "m1.dcm", g.max() + g.min() - g, photometric="MONOCHROME1")
    a, b = load_image(m2, RAW), load_image(m1, RAW)
    assert torch.allclose(a, b, atol=1e-4)
    assert a.std() > 0.05


def test_voi_window_is_applied(tmp_path, cxr_jpeg):
    g = gray_from_jpeg(cxr_jpeg, 128).astype(np.uint16) * 16
    narrow = write_dicom(tmp_path / "w.dcm", g, window=(2000.0, 400.0))
    plain = write_dicom(tmp_path / "p.dcm", g)
    w, p = load_image(narrow, RAW), load_image(plain, RAW)
    # a narrow window saturates: many pixels pinned at 0 or 1, unlike the full-range image
    sat_w = ((w < 1e-3) | (w > 1 - 1e-3)).float().mean()
    sat_p = ((p < 1e-3) | (p > 1 - 1e-3)).float().mean()
    assert sat_w > sat_p + 0.2


def test_rgb_dicom_keeps_colour_and_matches_jpeg(tmp_path, data_root):
    from PIL import Image

    jpg = sorted(glob.glob(str(data_root / "ham10000" / "images" / "*.jpg")))[0]
    rgb = np.asarray(Image.open(jpg).convert("RGB"))
    dcm = write_dicom(tmp_path / "rgb.dcm", rgb)
    a, b = load_image(dcm, RAW), load_image(jpg, RAW)
    assert torch.allclose(a, b, atol=1e-4)
    assert (a[0] - a[2]).abs().mean() > 0.02  # colour kept, not collapsed to gray


def test_real_rgb_and_ct_dicoms_load(dicom_file):
    rgb = load_image(dicom_file("SC_rgb.dcm"), RAW)
    assert (rgb[0] - rgb[1]).abs().max() > 0.1
    ct = load_image(dicom_file("CT_small.dcm"), RAW)
    assert ct.shape == (3, 224, 224) and 0.0 <= float(ct.min()) and float(ct.max()) <= 1.0


def test_dicom_without_pixel_data_names_the_file(tmp_path):
    p = write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4)), with_pixels=False)
    with pytest.raises(DataError, match="no pixel data") as e:
        load_image(p)
    assert "nopix.dcm" in str(e.value)


def test_truncated_and_garbage_files_name_the_file(tmp_path, data_root):
    jpg = sorted(glob.glob(str(data_root / "ham10000" / "images" / "*.jpg")))[0]
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(open(jpg, "rb").read()[:2000])
    with pytest.raises(DataError, match="trunc.jpg"):
        load_image(trunc)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="garbage.png"):
        load_image(garbage)
    bad_dcm = tmp_path / "bad.dcm"
    bad_dcm.write_bytes(b"\0" * 200)
    with pytest.raises(DataError, match="bad.dcm"):
        load_image(bad_dcm)
