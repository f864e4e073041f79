import numpy as np
import pytest
import torch
from PIL import Image

from medcbm.data.transforms import PreprocessConfig, crop_to_mask, preprocess_transforms, unwrap_transform_error
from medcbm.errors import DataError


def test_crop_to_mask_is_a_square_around_the_lesion_with_edge_padding():
    img = torch.arange(3 * 40 * 60, dtype=torch.float32).reshape(3, 40, 60)
    mask = torch.zeros(40, 60, dtype=torch.bool)
    mask[10:20, 30:50] = True  # 10 rows x 20 columns
    out = crop_to_mask(img, mask, 0.0)
    assert out.shape == (3, 20, 20)  # the longer side (20 px), square
    assert torch.equal(out[:, 5, :], img[:, 10, 30:50])  # the lesion's first row sits where expected
    # a margin that overflows the border is filled with edge pixels, never shrinks the square
    big = crop_to_mask(img, mask, 1.5)
    assert big.shape[1] == big.shape[2] > 40
    assert torch.equal(big[:, 0, :], big[:, 1, :])  # replicated top edge
    with pytest.raises(DataError, match="lesion mask is empty"):
        crop_to_mask(img, torch.zeros(40, 60, dtype=torch.bool), 0.0, path="m.png")


def test_lesion_crop_on_ph2_and_whole_image_without_mask(ph2_manifest, tmp_path):
    cfg = PreprocessConfig(image_size=96, crop="mask_bbox")
    t = preprocess_transforms(cfg)
    img, mask = str(ph2_manifest.image_path(0)), str(ph2_manifest.mask_paths()[0])
    cropped = t({"image": img, "mask": mask})["image"]
    whole = t({"image": img, "mask": None})["image"]
    assert cropped.shape == whole.shape == (3, 96, 96)
    assert not torch.allclose(cropped, whole)
    # the crop is lesion: darker than the whole view, which includes surrounding skin
    assert cropped.mean() < whole.mean()
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((560, 768), np.uint8)).save(empty)
    with pytest.raises(Exception) as err:
        t({"image": img, "mask": str(empty)})
    cause = unwrap_transform_error(err.value)  # MONAI wraps transform errors; the pipeline unwraps them
    assert isinstance(cause, DataError) and "lesion mask is empty" in str(cause) and "empty.png" in str(cause)


def test_crop_settings_are_part_of_the_fingerprint_only_when_used():
    base = PreprocessConfig()
    assert PreprocessConfig(crop_margin=0.3).fingerprint() == base.fingerprint()  # ignored without a crop
    assert PreprocessConfig(crop="mask_bbox").fingerprint() != base.fingerprint()
    assert PreprocessConfig(crop="mask_bbox", crop_margin=0.3).fingerprint() != PreprocessConfig(crop="mask_bbox").fingerprint()
    with pytest.raises(ValueError, match="crop"):
        PreprocessConfig(crop="circle")


def test_a_library_error_inside_the_chain_surfaces_as_its_cause(data_root):
    """MONAI reports any failure as "applying transform <... object at 0x...>"; the user sees the real cause."""
    from monai.transforms import Compose, Lambdad

    from medcbm.data.transforms import apply_preprocess, load_transforms

    jpg = str(sorted((data_root / "ham10000" / "images").glob("*.jpg"))[0])

    def odd(_):
        raise ValueError("pixel spacing\nis odd")  # a library message over two lines

    t = Compose(load_transforms() + [Lambdad(keys="image", func=odd)])
    with pytest.raises(RuntimeError, match="object at 0x") as err:
        t({"image": jpg})
    assert isinstance(unwrap_transform_error(err.value), ValueError)
    with pytest.raises(DataError, match=r"^cannot load image \(ValueError: pixel spacing is odd\) \[file .*\.jpg\]$"):
        apply_preprocess(t, jpg)
