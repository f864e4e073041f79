"""``medcbm adapt``: fit an adapter on a labelled support manifest from a new site and save it beside the model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medcbm.adapt import Adapter, create_adapter
from medcbm.adapt.store import FILE, adaptation_dir, check_site_name, save_adaptation
from medcbm.backbones.features import extract_features
from medcbm.bottleneck.artifacts import backbone_from_meta, load_cbm
from medcbm.data.manifest import Manifest
from medcbm.errors import ConfigError, DataError
from medcbm.bottleneck.metadata import label_indices, mapped_labels, model_groups
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


CONCEPT_PREFIX = "concept_"


def read_corrections(corrections: Manifest, concepts: list[str]) -> np.ndarray:
    """The reviewer's concept values ``(n, K)`` from a ``medcbm review --export`` manifest (1, 0, NaN).

    Raises:
        DataError: no column names one of the model's concepts, or a value other than 1, 0 or empty.
    """
    frame = corrections.frame
    cols = [c for c in frame.columns if c.startswith(CONCEPT_PREFIX)]
    known = [c for c in cols if c[len(CONCEPT_PREFIX):] in concepts]
    if not known:
        raise DataError(f"no column names one of the model's concepts (expected {CONCEPT_PREFIX}<concept>, e.g. "
                        f"{CONCEPT_PREFIX}{concepts[0]}); was it exported from a review of this model?",
                        path=corrections.source)
    extra = sorted(set(cols) - set(known))
    if extra:
        logger.warning("corrections: %d concept column(s) the model does not have are not used: %s", len(extra),
                       ", ".join(extra[:5]))
    T = np.full((len(frame), len(concepts)), np.nan)
    for c in known:
        v = pd.to_numeric(frame[c], errors="coerce")
        bad = ~(v.isna() | v.isin([0, 1])) | (v.isna() & frame[c].notna() & (frame[c].astype(str).str.strip() != ""))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"'{frame[c].iloc[i]}' is not 1 (present), 0 (absent) or empty", path=corrections.source,
                            row=i + 1, field=c)
        T[:, concepts.index(c[len(CONCEPT_PREFIX):])] = v.to_numpy(float)
    return T


def _reviewed(corrections: Manifest, model, meta: dict, spec, cache_dir, progress):
    """``(support manifest or None, reviewed features, their groups, concept values)`` of a corrections file:
    the reviewed images with a diagnosis of the model's classes are the labelled support."""
    T = read_corrections(corrections, list(model.concept_names_))
    feats = extract_features(corrections, spec, cache_dir=cache_dir, progress=progress)
    if len(feats.X) != len(corrections):
        raise DataError("some reviewed images could not be read; fix or remove those rows", path=corrections.source)
    y = label_indices(corrections.frame, meta)
    labelled = np.flatnonzero(y >= 0)
    if len(labelled) < len(y):
        logger.info("corrections: %d of %d reviewed images have no final diagnosis of the model's classes; their "
                    "concepts are used, not their labels", len(y) - len(labelled), len(y))
    support = corrections.subset(labelled) if len(set(y[labelled])) >= 2 else None
    if support is None and len(labelled):
        logger.info("corrections: the diagnoses name one class only, so they cannot adapt the head; only the "
                    "concepts are recalibrated")
    return support, feats.X, model_groups(model, feats.manifest.frame, meta), T


def adapt_cbm(model_dir: str | os.PathLike, manifest: Manifest | None, *, site: str, adapter: str = "site",
              k: int | None = None, unlabelled: Manifest | None = None, corrections: Manifest | None = None,
              out_dir: str | os.PathLike | None = None, force: bool = False, cache_dir=None, progress: bool = True,
              **params) -> tuple[Adapter, Path]:
    """Fit ``adapter`` on the labelled support ``manifest`` (and the site's ``unlabelled`` images) and save it.

    ``params`` go to the adapter (e.g. ``n_mask=2, guard=False``). The default ``site`` adapter re-centres the
    concepts on the site's images and keeps a labelled change only when a nested estimate shows a gain; it
    can run on unlabelled images alone (``manifest=None``). The others need a labelled support.

    ``corrections`` (a ``medcbm review --export`` manifest, ``site`` adapter only) replaces ``manifest``: its
    diagnoses are the labelled support and its concept answers recalibrate each concept at the site first.

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
    review_kw: dict = {}
    if corrections is not None:
        if manifest is not None:
            raise ConfigError("give --support or --corrections, not both (the corrections' diagnoses are the support)")
        if not getattr(fitter, "uses_corrections", False):
            raise ConfigError(f"adapter '{adapter}' does not use concept corrections; use --adapter site")
        manifest, Xr, gr, T = _reviewed(corrections, model, meta, backbone_from_meta(meta), cache_dir, progress)
        review_kw = {"X_reviewed": Xr, "reviewed_groups": gr, "T_reviewed": T}
    uses_unlabelled = getattr(fitter, "uses_unlabelled", False)
    if unlabelled is not None and not uses_unlabelled:
        raise ConfigError(f"adapter '{adapter}' does not use unlabelled images; drop --unlabelled or use --adapter site")
    if manifest is None and not review_kw and not (uses_unlabelled and unlabelled is not None):
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
    fitted = fitter.fit(X, y, groups=groups, backbone_fingerprint=fingerprint, **fit_kw, **review_kw)
    support = {"n": int(len(y)), "per_class": {c: int((y == i).sum()) for i, c in enumerate(model.classes)},
               "n_unlabelled": n_unlabelled, "image_sha256": hashes, "backbone_fingerprint": fingerprint}
    if review_kw:
        T = review_kw["T_reviewed"]
        support["reviewed"] = {"n": int(len(T)), "concept_answers": int((~np.isnan(T)).sum())}
    path = save_adaptation(fitted, model_dir, site=site, support=support, out_dir=out_dir, force=force)
    return fitted, path
