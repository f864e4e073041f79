"""The images concept-supervised fine-tuning reads: labels, splits, decoded and augmented views.

Images are decoded once with the base backbone's own preprocessing (lesion crop, colour constancy, size),
so the fine-tuned layer is trained on exactly what it will later read. Augmented views are drawn here, once,
with MONAI dictionary transforms that imitate what changes between dermatoscopes and clinics: colour cast
and exposure (per-channel intensity scale, contrast), focus (Gaussian blur), framing (zoom) and
orientation (flips, 90° turns, which a dermoscopic image has no canonical one of).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from medcbm._io import sha256_file, sha256_text
from medcbm.backbones._registry import BackboneSpec
from medcbm.backbones.inference import decode_sample
from medcbm.data.concept_labels import annotated_concepts, concept_matrix, union_names
from medcbm.data.concept_splits import HELDOUT, SELECT, TRAIN, concept_split
from medcbm.data.manifest import Manifest
from medcbm.data.transforms import preprocess_transforms
from medcbm.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class ConceptImages:
    """Every annotated image of the fine-tuning datasets, in one row order.

    Attributes:
        paths, masks: image (and lesion-mask) files per row.
        dataset: which dataset each row comes from.
        split: ``train`` / ``select`` / ``heldout`` per row (:func:`concept_split`).
        labels: ``(n, K)`` 0/1 concept labels, NaN where a dataset does not annotate a concept.
        names: the ``K`` concept names.
        image_sha256: content hash per image (what "trained on" is recorded as; no ids or paths).
    """

    paths: list[str]
    masks: list[str | None]
    dataset: np.ndarray
    split: np.ndarray
    labels: np.ndarray
    names: list[str]
    image_sha256: list[str]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return np.flatnonzero(self.split == split)

    def data_summary(self) -> dict:
        """Per dataset and split: image count and a hash of the images' contents and labels (for the JSON)."""
        out: dict = {}
        for d in dict.fromkeys(self.dataset.tolist()):
            out[d] = {}
            for s in (TRAIN, SELECT, HELDOUT):
                idx = np.flatnonzero((self.dataset == d) & (self.split == s))
                lab = np.nan_to_num(self.labels[idx], nan=-1).astype(int)
                out[d][s] = {"images": int(len(idx)),
                             "sha256": sha256_text(*[self.image_sha256[i] for i in idx], lab.tobytes().hex())}
        return out


def load_concept_images(manifests: dict[str, Manifest], *, min_positives: int = 5) -> ConceptImages:
    """Pool the manifests' concept annotations; keep concepts with ``min_positives`` training positives.

    Raises:
        DataError: a manifest annotates no concept, or no concept has enough training positives.
    """
    per = {}
    for name, m in manifests.items():
        have = annotated_concepts(m)
        if not have:
            raise DataError("the manifest has no concept_<name> column to fine-tune on", path=m.source)
        per[name] = (m, have)
    names = union_names([h for _, h in per.values()])
    labels = np.concatenate([concept_matrix(m, names) for m, _ in per.values()])
    split = np.concatenate([concept_split(m) for m, _ in per.values()])
    pos = np.nansum(labels[split == TRAIN] == 1, axis=0)
    keep = pos >= min_positives
    if not keep.any():
        raise DataError(f"no concept has {min_positives} positive training images; annotate more or lower min_positives")
    dropped = [n for n, k in zip(names, keep) if not k]
    if dropped:
        logger.info("fine-tuning skips %d concepts with < %d training positives: %s", len(dropped), min_positives,
                    ", ".join(dropped))
    paths = [str(p) for m, _ in per.values() for p in m.image_paths()]
    masks = [None if p is None else str(p) for m, _ in per.values() for p in m.mask_paths()]
    dataset = np.concatenate([[n] * len(m) for n, (m, _) in per.items()])
    return ConceptImages(paths, masks, dataset, split, labels[:, keep], [n for n, k in zip(names, keep) if k],
                         [sha256_file(p)[:16] for p in paths])


def augment_transform(seed: int):
    """Acquisition-style augmentation of a preprocessed ``image`` tensor (MONAI dictionary transforms)."""
    from monai.transforms import (Compose, RandAdjustContrastd, RandFlipd, RandGaussianSmoothd, RandRotate90d,
                                  RandScaleIntensityd, RandZoomd)

    k = ["image"]
    t = Compose([
        RandFlipd(k, prob=0.5, spatial_axis=0), RandFlipd(k, prob=0.5, spatial_axis=1),
        RandRotate90d(k, prob=0.5, max_k=3),
        RandZoomd(k, prob=0.5, min_zoom=0.85, max_zoom=1.15, keep_size=True, padding_mode="reflect"),
        RandScaleIntensityd(k, factors=0.15, prob=0.8, channel_wise=True),  # colour cast / exposure
        RandAdjustContrastd(k, prob=0.3, gamma=(0.8, 1.25)),
        RandGaussianSmoothd(k, prob=0.2, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0)),  # focus
    ])
    t.set_random_state(seed)
    return t


def decode_images(images: ConceptImages, rows: np.ndarray, spec: BackboneSpec) -> torch.Tensor:
    """Decode and preprocess ``rows`` with the backbone's preprocessing, ``(n, 3, S, S)`` float32.

    Raises:
        DataError: an image cannot be read (naming the file); fine-tuning data is curated, so nothing is skipped.
    """
    transform = preprocess_transforms(spec.preprocess)
    use_mask = spec.preprocess.crop in ("mask_bbox", "mask_or_auto")  # the same rule as feature extraction
    out = []
    for i in rows:
        mask = images.masks[i] if use_mask else None
        x, fail, _ = decode_sample(transform, images.paths[i], mask)
        if fail is not None:
            raise DataError(f"cannot use this image for fine-tuning: {fail.message}", path=fail.path, field=fail.field)
        out.append(x.as_tensor() if hasattr(x, "as_tensor") else x)
    return torch.stack(out).float()


def augmented_views(x: torch.Tensor, views: int, seed: int) -> list[torch.Tensor]:
    """``views`` versions of a decoded batch: the original first, then augmented draws."""
    if len(x) == 0:
        return [x] * views
    aug = augment_transform(seed)
    out = [x]
    for _ in range(views - 1):
        v = torch.stack([torch.as_tensor(aug({"image": img})["image"]) for img in x])
        out.append(v.float())
    return out
