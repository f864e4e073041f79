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
from medcbm.bottleneck.metadata import mapped_labels
from medcbm.workflows.train import short_keys

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


def adapt_cbm(model_dir: str | os.PathLike, manifest: Manifest | None, *, site: str, adapter: str = "site",
              k: int | None = None, unlabelled: Manifest | None = None, out_dir: str | os.PathLike | None = None,
              force: bool = False, cache_dir=None, progress: bool = True, **params) -> tuple[Adapter, Path]:
    """Fit ``adapter`` on the labelled support ``manifest`` (and the site's ``unlabelled`` images) and save it.

    ``params`` go to the adapter (e.g. ``n_mask=2, guard=False``). The default ``site`` adapter re-centres the
    concepts on the site's images and keeps a labelled change only when a nested estimate shows a gain; it
    can run on unlabelled images alone (``manifest=None``). The others need a labelled support.

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
    fitter = create_adapter(adapter, model, **params)
    uses_unlabelled = getattr(fitter, "uses_unlabelled", False)
    if unlabelled is not None and not uses_unlabelled:
        raise ConfigError(f"adapter '{adapter}' does not use unlabelled images; drop --unlabelled or use --adapter site")
    if manifest is None and not (uses_unlabelled and unlabelled is not None):
        raise ConfigError(f"adapter '{adapter}' needs a labelled --support manifest"
                          + ("" if not uses_unlabelled else " or an --unlabelled one"))
    spec = backbone_from_meta(meta)
    trained_on = set(meta["provenance"].get("train_image_sha256") or ())
    X, y, groups, hashes = np.zeros((0, 1), np.float32), np.zeros(0, int), None, []
    fingerprint = spec.fingerprint()
    if manifest is not None:
        manifest, y = mapped_labels(manifest, meta)
        feats = extract_features(manifest, spec, cache_dir=cache_dir, progress=progress)
        hashes = short_keys(feats.keys)
        check_support(manifest, y, list(model.classes), k=k, hashes=hashes, trained_on=trained_on)
        X, groups, fingerprint = feats.X, model_groups(model, manifest.frame, meta), feats.spec.fingerprint()
    fit_kw = {}
    n_unlabelled = 0
    if unlabelled is not None:
        ufeats = extract_features(unlabelled, spec, cache_dir=cache_dir, progress=progress)
        fit_kw = {"X_unlabelled": ufeats.X, "unlabelled_groups": model_groups(model, unlabelled.frame, meta)}
        n_unlabelled = len(ufeats.X)
    fitted = fitter.fit(X, y, groups=groups, backbone_fingerprint=fingerprint, **fit_kw)
    support = {"n": int(len(y)), "per_class": {c: int((y == i).sum()) for i, c in enumerate(model.classes)},
               "n_unlabelled": n_unlabelled, "image_sha256": hashes, "backbone_fingerprint": fingerprint}
    path = save_adaptation(fitted, model_dir, site=site, support=support, out_dir=out_dir, force=force)
    return fitted, path
