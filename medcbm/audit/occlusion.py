"""Spatial evidence: occlusion maps of a case's top concepts, on the backbone's real preprocessing.

The image goes through exactly the pipeline its features came from (lesion crop, colour constancy, resize,
normalisation); each cell of a ``grid x grid`` partition is replaced by the normalised mid-grey (0) in turn, and
the drop of each concept's activation is that cell's evidence for the concept (positive: the cell supports it).
One backbone pass scores every concept, so the top three cost the same as one.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from medcbm.errors import DataError

logger = logging.getLogger(__name__)


class Occluder:
    """Occlusion maps for one model (the backbone is built and traced once, then reused for every case).

    Args:
        model: fitted KnowledgeCBM; ``spec``: its backbone spec (``backbone_from_meta(meta)``).
        grid: cells per side.
    """

    def __init__(self, model, spec, *, grid: int = 4):
        from medcbm.backbones.features import optimize_for_inference
        from medcbm.backbones.loaders import create_backbone
        from medcbm.data.transforms import preprocess_transforms

        self.model, self.spec, self.grid = model, spec, grid
        self.transform = preprocess_transforms(spec.preprocess)
        self.net = optimize_for_inference(create_backbone(spec), spec.preprocess.image_size)

    def maps(self, path: str | Path, concepts: Sequence[str], groups=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The preprocessed image ``(H, W, 3)`` in [0, 1] and a ``(grid, grid)`` activation-drop map per concept."""
        import torch

        from medcbm.data.transforms import unwrap_transform_error

        try:
            x = self.transform({"image": str(path), "mask": None})["image"]
        except Exception as exc:  # noqa: BLE001 - reported by type only: messages may carry the path
            raise DataError(f"cannot preprocess the image for an occlusion map ({type(unwrap_transform_error(exc)).__name__})") from None
        x = torch.as_tensor(x, dtype=torch.float32)
        _, H, W = x.shape
        g = self.grid
        batch = [x]
        for i in range(g):
            for j in range(g):
                y = x.clone()
                y[:, i * H // g:(i + 1) * H // g, j * W // g:(j + 1) * W // g] = 0.0
                batch.append(y)
        with torch.inference_mode():
            feats = self.net(torch.stack(batch).contiguous(memory_format=torch.channels_last)).float().numpy()
        P = self.model.predict_concepts(feats, None if groups is None else np.repeat(groups, len(feats)))
        names = list(self.model.concept_names_)
        out = {k: (P[0, names.index(k)] - P[1:, names.index(k)]).reshape(g, g) for k in concepts}
        mean, std = np.asarray(self.spec.preprocess.mean), np.asarray(self.spec.preprocess.std)
        img = np.clip(x.numpy().transpose(1, 2, 0) * std + mean, 0, 1)
        return img, out


def overlay_uri(img: np.ndarray, heat: np.ndarray, *, px: int = 160) -> str:
    """The image with the map drawn over it (red: supports the concept, blue: against), as a PNG data URI."""
    from matplotlib import colormaps
    from PIL import Image

    base = Image.fromarray((img * 255).astype(np.uint8)).convert("RGB").resize((px, px))
    lim = max(float(np.abs(heat).max()), 1e-6)
    rgba = colormaps["coolwarm"]((heat / lim + 1) / 2)  # (g, g, 4), symmetric around "no effect"
    layer = Image.fromarray((rgba[..., :3] * 255).astype(np.uint8)).resize((px, px), Image.NEAREST)
    alpha = Image.fromarray((np.abs(heat) / lim * 150).astype(np.uint8)).resize((px, px), Image.NEAREST)
    base.paste(layer, (0, 0), alpha)
    buf = io.BytesIO()
    base.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
