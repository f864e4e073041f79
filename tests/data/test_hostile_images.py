"""Hostile and unusual image files: bounded before decoding, decoded in the right colours, or refused clearly."""

from __future__ import annotations

import copy
import glob
import io

import numpy as np
import pytest
import torch
from PIL import Image

from medcbm.data.transforms import PreprocessConfig, load_image
from medcbm.errors import DataError

RAW = PreprocessConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def photo(data_root, tmp_path_factory):
    """A real HAM10000 photograph (small), its lossless PNG and that PNG's decoded tensor as the reference."""
    d = tmp_path_factory.mktemp("hostile")
    img = Image.open(sorted(glob.glob(str(data_root / "ham10000" / "images" / "*.jpg")))[0]).convert("RGB")
    img = img.resize((120, 90))
    img.save(d / "ref.png")
    return d, img, load_image(str(d / "ref.png"), RAW)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def test_cmyk_and_palette_files_decode_in_their_real_colours(photo):
    d, img, ref = photo
    img.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    img.quantize(256).save(d / "palette.png")
    img.convert("RGBA").save(d / "rgba.png")
    assert _diff(load_image(str(d / "cmyk.jpg"), RAW), ref) < 0.03  # C, M, Y no longer read as R, G, B
    assert _diff(load_image(str(d / "palette.png"), RAW), ref) < 0.03  # colours, not palette indices
    assert _diff(load_image(str(d / "rgba.png"), RAW), ref) < 1e-6


def test_bilevel_float_and_16_bit_files_are_not_black_or_mistaken_for_8_bit(photo):
    d, img, _ = photo
    grey = img.convert("L")
    grey.save(d / "grey.png")
    ref = load_image(str(d / "grey.png"), RAW)
    bw = grey.point(lambda v: 255 if v > 128 else 0)
    bw.convert("1").save(d / "bw.png")
    bw.save(d / "bw8.png")
    assert _diff(load_image(str(d / "bw.png"), RAW), load_image(str(d / "bw8.png"), RAW)) < 1e-6
    Image.fromarray(np.asarray(grey, np.float32) / 255.0, mode="F").save(d / "float.tif")
    assert _diff(load_image(str(d / "float.tif"), RAW), ref) < 1e-3
    # a 16-bit file is min-max scaled whatever its maximum: values <= 255 are not read as 8-bit
    low = np.asarray(grey).astype(np.uint16)
    Image.fromarray(low).save(d / "low16.png")
    Image.fromarray(low * 257).save(d / "full16.png")
    a, b = load_image(str(d / "low16.png"), RAW), load_image(str(d / "full16.png"), RAW)
    assert _diff(a, b) < 1e-3 and float(a.max()) > 0.99


@pytest.mark.parametrize("w,h", [(60000, 2), (65500, 1), (4, 4)])
def test_degenerate_sizes_are_refused_before_decoding(tmp_path, w, h):
    Image.new("L", (w, h)).save(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size < 400  # a few hundred bytes declaring a huge or tiny image
    with pytest.raises(DataError, match=rf"{w} x {h} pixels.*x\.png"):
        load_image(str(tmp_path / "x.png"))


def test_a_huge_jpeg_header_is_refused_and_the_limit_is_configurable(tmp_path, monkeypatch):
    buf = io.BytesIO()
    Image.new("L", (16, 16)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.index(b"\xff\xc0")
    for side, match in ((30000, "900000000 pixels.*decompression bomb"),  # PIL's own limit acts first
                        (8000, "8000 x 8000 pixels: more than .* MEDCBM_MAX_PIXELS")):
        b[i + 5:i + 9] = side.to_bytes(2, "big") * 2  # height, width in the frame header
        (tmp_path / "huge.jpg").write_bytes(bytes(b))
        with pytest.raises(DataError, match=match):
            load_image(str(tmp_path / "huge.jpg"))
    Image.new("L", (900, 30)).save(tmp_path / "strip.png")
    with pytest.raises(DataError, match="aspect ratio"):
        load_image(str(tmp_path / "strip.png"))
    monkeypatch.setenv("MEDCBM_MAX_ASPECT", "40")
    assert load_image(str(tmp_path / "strip.png")).shape == (3, 224, 224)
    monkeypatch.setenv("MEDCBM_MAX_ASPECT", "lots")
    with pytest.raises(Exception, match="MEDCBM_MAX_ASPECT='lots' is not a number"):
        load_image(str(tmp_path / "strip.png"))


@pytest.mark.parametrize("tag,value,match", [
    ("RescaleSlope", "nan", "non-finite"), ("RescaleSlope", "1e308", "non-finite"),
    ("RescaleIntercept", "-1e308", "non-finite"), ("WindowWidth", "0", "LUT"),
    ("VOILUTFunction", "BOGUS", "LUT"), ("Rows", 1, "too small"),
])
def test_hostile_dicom_header_values_get_a_clear_error(dicom_file, tmp_path, tag, value, match):
    import pydicom

    ds = copy.deepcopy(pydicom.dcmread(dicom_file("CT_small.dcm")))
    if tag in ("WindowWidth", "VOILUTFunction"):
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    setattr(ds, tag, value)
    ds.save_as(tmp_path / "h.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=match) as exc:
        load_image(str(tmp_path / "h.dcm"))
    assert "h.dcm" in str(exc.value)


def test_palette_colour_dicom_is_decoded_through_its_lookup_table(dicom_file):
    import pydicom
    from pydicom.pixels import apply_color_lut

    path = dicom_file("OBXXXX1A.dcm")
    x = load_image(path, RAW)
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float32)
    rgb = rgb / 257.0 if rgb.max() > 255 else rgb
    assert (x[0] - x[2]).abs().mean() > 0.01  # colour, not indices repeated as grey
    ref = torch.nn.functional.interpolate(torch.from_numpy(rgb / 255.0).permute(2, 0, 1)[None], size=(224, 298),
                                          mode="bilinear", antialias=True, align_corners=False)[0]
    left = (298 - 224) // 2
    assert _diff(x, ref[:, :, left:left + 224]) < 0.02
