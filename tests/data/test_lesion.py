import numpy as np
import torch
from PIL import Image

from medcbm.data.lesion import auto_lesion_mask, otsu_threshold, shades_of_gray
from medcbm.data.transforms import PreprocessConfig, preprocess_transforms


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def _box_iou(a, b) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = lambda r: (r[1] - r[0]) * (r[3] - r[2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_otsu_splits_a_bimodal_sample_between_its_modes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.7, 0.03, 1500)])
    assert 0.3 < otsu_threshold(x) < 0.6


def test_auto_mask_finds_the_central_lesion_not_the_vignette():
    h, w = 300, 400
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w, 3), [0.85, 0.65, 0.6])  # pinkish skin
    lesion = (yy - 160) ** 2 / 60**2 + (xx - 210) ** 2 / 90**2 < 1
    img[lesion] = [0.35, 0.2, 0.15]
    ring = (yy - h / 2) ** 2 / (h / 2) ** 2 + (xx - w / 2) ** 2 / (w / 2) ** 2 > 1.05  # dark dermatoscope corners
    img[ring] = 0.02
    mask = auto_lesion_mask(torch.from_numpy(img).permute(2, 0, 1).float())
    assert mask is not None and mask.shape == (h, w)
    assert _box_iou(_box(mask.numpy()), _box(lesion)) > 0.85
    assert not mask[ring].any()
    # a blank image has no lesion: the caller keeps it whole
    assert auto_lesion_mask(torch.full((3, 100, 100), 0.7)) is None


def test_auto_mask_agrees_with_ph2_expert_masks(ph2_manifest):
    ious = []
    for i in range(0, len(ph2_manifest), max(1, len(ph2_manifest) // 25)):
        rgb = np.asarray(Image.open(ph2_manifest.image_path(i)).convert("RGB"), np.float32) / 255
        expert = np.asarray(Image.open(ph2_manifest.mask_paths()[i]).convert("L")) > 127
        mask = auto_lesion_mask(torch.from_numpy(rgb).permute(2, 0, 1))
        ious.append(0.0 if mask is None else _box_iou(_box(mask.numpy()), _box(expert)))
    # ~0.77 on all 200 PH2 images; a broken segmenter (whole image, a corner) lands far below 0.6
    assert np.mean(ious) > 0.65, ious


def test_shades_of_gray_removes_a_colour_cast():
    rng = np.random.default_rng(1)
    scene = torch.from_numpy(rng.uniform(0.1, 0.8, (3, 64, 64))).float()
    scene = scene.mean(0, keepdim=True).expand(3, -1, -1).clone()  # a grey scene ...
    cast = scene * torch.tensor([1.0, 0.8, 0.6])[:, None, None]  # ... under a warm illuminant
    out = shades_of_gray(cast)
    ch = out.mean(dim=(1, 2))
    assert (ch.max() - ch.min()) < 0.01 < (cast.mean(dim=(1, 2)).max() - cast.mean(dim=(1, 2)).min())
    assert torch.allclose(shades_of_gray(scene), scene, atol=1e-5)  # neutral input is left alone


def test_auto_crop_and_colour_constancy_in_the_pipeline(ph2_manifest):
    img, mask = str(ph2_manifest.image_path(0)), str(ph2_manifest.mask_paths()[0])
    run = lambda cfg, m=None: preprocess_transforms(cfg)({"image": img, "mask": m})["image"]  # noqa: E731
    whole = run(PreprocessConfig(image_size=96))
    auto = run(PreprocessConfig(image_size=96, crop="auto"), mask)  # ignores the mask
    expert = run(PreprocessConfig(image_size=96, crop="mask_or_auto"), mask)
    fallback = run(PreprocessConfig(image_size=96, crop="mask_or_auto"))
    assert torch.allclose(fallback, auto)  # no mask: the automatic box
    assert torch.allclose(expert, run(PreprocessConfig(image_size=96, crop="mask_bbox"), mask))
    assert auto.mean() < whole.mean() and not torch.allclose(auto, expert)
    cc = run(PreprocessConfig(image_size=96, color_constancy="shades_of_gray"))
    assert cc.shape == whole.shape and not torch.allclose(cc, whole)
    base = PreprocessConfig()
    assert PreprocessConfig(color_constancy="none").fingerprint() == base.fingerprint()
    assert PreprocessConfig(color_constancy="shades_of_gray").fingerprint() != base.fingerprint()
