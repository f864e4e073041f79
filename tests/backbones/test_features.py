import shutil

import numpy as np
import pytest

from medcbm.backbones.features import extract_features
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.errors import DataError


@pytest.fixture()
def small(ham_manifest):
    return ham_manifest.subset(range(24))


def test_cache_hit_and_resume(tmp_path, small):
    cache = tmp_path / "cache"
    first = extract_features(small.subset(range(16)), cache_dir=cache, shard_size=8, batch_size=8, progress=False)
    assert first.stats["extracted"] == 16 and first.X.shape == (16, 1280)
    # a later, larger run only extracts what is new (as after an interruption)
    full = extract_features(small, cache_dir=cache, shard_size=8, batch_size=8, progress=False)
    assert full.stats["extracted"] == 8 and full.stats["from_cache"] == 16
    np.testing.assert_allclose(full.X[:16], first.X, rtol=1e-5, atol=1e-5)
    again = extract_features(small, cache_dir=cache, progress=False)
    assert again.stats["extracted"] == 0
    np.testing.assert_array_equal(again.X, full.X)
    assert len(list((cache).rglob("shard-*.safetensors"))) == 3
    # features differ between images (not a constant), and are finite
    assert np.isfinite(full.X).all() and full.X.std(0).mean() > 0.01


def test_renamed_copy_hits_cache_by_content(tmp_path, small):
    cache = tmp_path / "cache"
    extract_features(small.subset(range(2)), cache_dir=cache, progress=False)
    src = small.image_path(0)
    shutil.copy(src, tmp_path / "renamed.jpg")
    m = Manifest(__import__("pandas").DataFrame({"id": ["r"], "image": ["renamed.jpg"], "label": ["nv"]}), tmp_path)
    assert extract_features(m, cache_dir=cache, progress=False).stats["extracted"] == 0


def test_bad_image_raises_with_row_or_is_skipped(tmp_path, small):
    frame = small.frame.copy()
    frame["image"] = [str(p) for p in small.image_paths()]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(small.image_path(0).read_bytes()[:1500])
    frame.loc[5, "image"] = str(bad)
    m = Manifest(frame, tmp_path)
    with pytest.raises(DataError, match=r"broken.jpg, manifest row 6, field 'image'"):
        extract_features(m, progress=False, num_workers=0)
    skips = SkipLog()
    out = extract_features(m, progress=False, skips=skips, num_workers=1)
    assert len(out.manifest) == 23 and out.X.shape[0] == 23 and len(skips) == 1
    assert frame.loc[5, "id"] not in out.ids and skips.items[0].row == 6


def test_lesion_crop_features_depend_on_the_mask(tmp_path, ph2_manifest):
    """The cache key covers the mask: a different mask gives different features; a missing one is named."""
    from PIL import Image

    frame = ph2_manifest.subset(range(2)).frame.copy()
    frame["image"] = [str(p) for p in ph2_manifest.subset(range(2)).image_paths()]
    frame["mask"] = [str(p) for p in ph2_manifest.subset(range(2)).mask_paths()]
    cache = tmp_path / "cache"
    first = extract_features(Manifest(frame, tmp_path), "efficientnet_lite0_lesion", cache_dir=cache, progress=False,
                             num_workers=0)
    assert first.X.shape == (2, 2064) and first.stats["extracted"] == 2
    m = np.array(Image.open(frame.loc[0, "mask"])) > 0
    ys, xs = np.nonzero(m)
    small = np.zeros_like(m)
    small[ys.min():(ys.min() + ys.max()) // 2, xs.min():(xs.min() + xs.max()) // 2] = True  # a quarter of the box
    Image.fromarray(small.astype(np.uint8) * 255).save(tmp_path / "quarter.png")
    frame2 = frame.copy()
    frame2.loc[0, "mask"] = str(tmp_path / "quarter.png")
    second = extract_features(Manifest(frame2, tmp_path), "efficientnet_lite0_lesion", cache_dir=cache, progress=False,
                              num_workers=0)
    assert second.stats["extracted"] == 1 and second.stats["from_cache"] == 1
    np.testing.assert_array_equal(second.X[1], first.X[1])
    assert np.abs(second.X[0] - first.X[0]).max() > 1e-2
    Image.fromarray(np.zeros_like(small, np.uint8)).save(tmp_path / "empty.png")
    frame2.loc[1, "mask"] = str(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"lesion mask is empty.*empty.png, manifest row 2, field 'mask'"):
        extract_features(Manifest(frame2, tmp_path), "efficientnet_lite0_lesion", progress=False, num_workers=0)
    frame2.loc[1, "mask"] = str(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"gone.png, manifest row 2, field 'mask'"):
        extract_features(Manifest(frame2, tmp_path), "efficientnet_lite0_lesion", cache_dir=cache, progress=False)


def test_auto_crop_reports_images_without_a_lesion(tmp_path, ph2_manifest, caplog):
    """A featureless image cannot be cropped: it is used whole, counted in the stats and named in a warning."""
    import logging

    import pandas as pd
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 180, np.uint8)).save(tmp_path / "blank.png")
    frame = pd.DataFrame({"id": ["lesion", "blank"], "image": [str(ph2_manifest.image_path(0)), str(tmp_path / "blank.png")],
                          "label": ["a", "b"]})
    with caplog.at_level(logging.WARNING, logger="medcbm.backbones.features"):
        feats = extract_features(Manifest(frame, tmp_path), "efficientnet_lite0_lesion_cc", progress=False, num_workers=0)
    assert feats.X.shape == (2, 2064) and feats.stats["no_lesion_found"] == 1
    assert "no lesion found in 1" in caplog.text and "blank.png" in caplog.text and "IMD" not in caplog.text


def test_flip_averaged_backbone_is_invariant_to_flips_and_cached_apart(tmp_path, small):
    """``tta:`` features are the mean over the four flips: a mirrored image gives the same features, which
    differ from the plain backbone's, and live in their own cache."""
    import torch

    from medcbm.backbones import create_backbone, get_backbone_spec
    from medcbm.errors import RegistryError

    spec = get_backbone_spec("tta:efficientnet_lite0")
    assert spec.fingerprint() != get_backbone_spec("efficientnet_lite0").fingerprint()
    model = create_backbone(spec)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain, tta, mirrored = create_backbone("efficientnet_lite0")(x), model(x), model(torch.flip(x, (3,)))
    torch.testing.assert_close(tta, mirrored, rtol=1e-4, atol=1e-4)
    assert (tta - plain).abs().max() > 1e-3
    cache = tmp_path / "cache"
    a = extract_features(small.subset(range(4)), "tta:efficientnet_lite0", cache_dir=cache, progress=False)
    b = extract_features(small.subset(range(4)), "efficientnet_lite0", cache_dir=cache, progress=False)
    assert a.stats["extracted"] == b.stats["extracted"] == 4 and not np.allclose(a.X, b.X)
    with pytest.raises(RegistryError, match="already test-time augmented"):
        get_backbone_spec("tta:tta:efficientnet_lite0")
    with pytest.raises(RegistryError, match="unknown|available"):
        get_backbone_spec("tta:nope")
