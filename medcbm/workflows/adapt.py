"""``medcbm adapt``: fit an adapter on a labelled support manifest from a new site and save it beside the model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medcbm.adapt import Adapter, create_adapter
from medcbm.adapt.store import FILE, adaptation_dir, check_site_name, save_adaptation
from medcbm.backbones.features import extract_features
from medcbm.bottleneck.artifacts import backbone_from_meta, load_cbm
from medcbm.data.manifest import Manifest
from medcbm.errors import ConfigError, DataError
from medcbm.bottleneck.metadata import model_groups
from medcbm.workflows.train import mapped_labels, short_keys

logger = logging.getLogger(__name__)


def check_support(manifest: Manifest, y: np.ndarray, classes: list[str], *, k: int | None,
                  hashes: list[str], trained_on: set[str]) -> None:
    """Refuse a support set that cannot adapt anything; warn about images the model was trained on."""
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    present = [c for c, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(f"the support manifest has images of {present or 'no'} class only; adaptation needs labelled "
                        f"images of at least two of {classes}", path=manifest.source)
    if k is not None:
        short = {c: n for c, n in counts.items() if n < k}
        if short:
            raise DataError(f"--k {k}: the support manifest has fewer than {k} images of {short}; add images or "
                            "lower --k", path=manifest.source)
    seen: dict[str, int] = {}
    for row, h in enumerate(hashes):
        if h in seen:
            raise DataError(f"rows {seen[h] + 1} and {row + 1} are the same image (identical content); remove the "
                            "duplicate so it is not counted twice", path=manifest.source, row=row + 1, field="image")
        seen[h] = row
    reused = [row + 1 for row, h in enumerate(hashes) if h in trained_on]
    if reused:
        logger.warning("support rows %s are images the model was trained on: they say little about the new site",
                       reused[:10])


def adapt_cbm(model_dir: str | os.PathLike, manifest: Manifest, *, site: str, adapter: str = "tfti",
              k: int | None = None, out_dir: str | os.PathLike | None = None, force: bool = False,
              cache_dir=None, progress: bool = True, **params) -> tuple[Adapter, Path]:
    """Fit ``adapter`` on the labelled support ``manifest`` and save the adaptation for ``site``.

    ``params`` go to the adapter (e.g. ``n_mask=2, guard=False``); by default it chooses by leave-one-shot-out.

    Returns:
        ``(fitted adapter, adaptation folder)``. The base model folder gains only ``adaptations/<site>/``.
    """
    if (Path(model_dir) / FILE).is_file():
        raise ConfigError(f"{model_dir} is an adaptation; give the base model folder to --model")
    check_site_name(site)
    target = Path(out_dir) if out_dir else adaptation_dir(model_dir, site)
    if (target / FILE).exists() and not force:
        raise ConfigError(f"site '{site}' already has an adaptation ({target / FILE}); pass --force to replace it")
    model, meta = load_cbm(model_dir)
    manifest, y = mapped_labels(manifest, meta)
    feats = extract_features(manifest, backbone_from_meta(meta), cache_dir=cache_dir, progress=progress)
    hashes = short_keys(feats.keys)
    check_support(manifest, y, list(model.classes), k=k, hashes=hashes,
                  trained_on=set(meta["provenance"].get("train_image_sha256") or ()))
    groups = model_groups(model, manifest.frame, meta)
    fitted = create_adapter(adapter, model, **params).fit(feats.X, y, groups=groups,
                                                          backbone_fingerprint=feats.spec.fingerprint())
    support = {"n": int(len(y)), "per_class": {c: int((y == i).sum()) for i, c in enumerate(model.classes)},
               "image_sha256": hashes, "backbone_fingerprint": feats.spec.fingerprint()}
    path = save_adaptation(fitted, model_dir, site=site, support=support, out_dir=out_dir, force=force)
    return fitted, path
