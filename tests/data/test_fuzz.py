"""Seeded fuzzing of the real readers and transform chain: hostile bytes and DICOM headers may only raise
medcbm's own errors (one line naming the file), and whatever decodes must be a finite tensor of the right shape."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image

from medcbm.data.transforms import load_image
from medcbm.errors import MedcbmError

N_BYTE_MUTANTS = 2000
N_HEADER_MUTANTS = 1000


@pytest.fixture(scope="module")
def seeds(data_root, dicom_file, tmp_path_factory):
    """Small real files: a HAM10000 JPEG and PNG (downsized for speed), real DICOMs from pydicom-data."""
    d = tmp_path_factory.mktemp("fuzz-seeds")
    jpg = sorted((data_root / "ham10000").rglob("*.jpg"))[0]
    img = Image.open(jpg).convert("RGB").resize((96, 72))
    img.save(d / "ham.jpg", quality=90)
    img.save(d / "ham.png")
    out = {"jpg": (d / "ham.jpg").read_bytes(), "png": (d / "ham.png").read_bytes()}
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"):
        with open(dicom_file(name), "rb") as fh:
            out[name] = fh.read()
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    op = rng.integers(4)
    if op == 0:  # flip a few bytes anywhere
        for i in rng.integers(0, len(b), rng.integers(1, 12)):
            b[i] = int(rng.integers(256))
    elif op == 1:  # truncate
        del b[int(rng.integers(1, len(b))):]
    elif op == 2:  # overwrite a run inside the header region, where sizes and offsets live
        i = int(rng.integers(0, min(len(b), 1024)))
        n = int(rng.integers(1, 16))
        b[i:i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    else:  # insert junk
        i = int(rng.integers(0, len(b)))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return bytes(b)


def _check(path) -> str:
    """``ok``, or ``error`` for a medcbm error; anything else fails the test."""
    try:
        x = load_image(str(path))
    except MedcbmError as exc:
        assert "\n" not in str(exc).strip()
        assert "object at 0x" not in str(exc), f"{path}: MONAI's wrapper hides the cause: {exc}"
        return "error"
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.isfinite(x).all(), f"{path}: non-finite tensor returned"
    return "ok"


def test_byte_mutations_of_real_files_raise_only_medcbm_errors(seeds, tmp_path):
    rng = np.random.default_rng(20261202)
    names = list(seeds)
    counts = {"ok": 0, "error": 0}
    for i in range(N_BYTE_MUTANTS):
        name = names[i % len(names)]
        path = tmp_path / f"m{i % 7}{'.dcm' if name.endswith('.dcm') else '.' + name}"
        path.write_bytes(_mutate(seeds[name], rng))
        counts[_check(path)] += 1
    # both outcomes occur: mutants that still decode and mutants refused with a clear error
    assert counts["ok"] > 100 and counts["error"] > 100, counts


HEADER_VALUES = {
    "RescaleSlope": ["nan", "inf", "1e308", "-1e308", "0", "-1", "1e-30"],
    "RescaleIntercept": ["nan", "1e308", "-1e308", "-32768"],
    "WindowCenter": ["nan", "inf", "1e308", "-1e308", "0"],
    "WindowWidth": ["0", "-5", "0.5", "nan", "1e308"],
    "VOILUTFunction": ["SIGMOID", "LINEAR_EXACT", "BOGUS", ""],
    "PhotometricInterpretation": ["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "BOGUS"],
    "Rows": [0, 1, 2, 65535],
    "Columns": [0, 1, 2, 65535],
    "BitsAllocated": [1, 8, 12, 32, 64],
    "BitsStored": [0, 1, 7, 33],
    "HighBit": [0, 31, 63],
    "PixelRepresentation": [0, 1, 2],
    "SamplesPerPixel": [0, 2, 3, 4],
    "NumberOfFrames": [0, 2, 1000],
    "PlanarConfiguration": [0, 1, 2],
}


def test_header_mutations_of_real_dicoms_raise_only_medcbm_errors(seeds, tmp_path):
    import pydicom

    rng = np.random.default_rng(7)
    tags = list(HEADER_VALUES)
    originals = {n: pydicom.dcmread(io.BytesIO(b)) for n, b in seeds.items() if n.endswith(".dcm")}
    counts = {"ok": 0, "error": 0}
    for i in range(N_HEADER_MUTANTS):
        ds = copy.deepcopy(originals[list(originals)[i % len(originals)]])  # Dataset.copy() shares elements
        for tag in rng.choice(tags, int(rng.integers(1, 4)), replace=False):
            values = HEADER_VALUES[str(tag)]
            setattr(ds, str(tag), values[int(rng.integers(len(values)))])
        path = tmp_path / f"h{i % 7}.dcm"
        ds.save_as(path, enforce_file_format=False)
        counts[_check(path)] += 1
    assert counts["ok"] > 50 and counts["error"] > 50, counts
