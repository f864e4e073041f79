"""Adaptations as human-readable files beside the base model: ``<model>/adaptations/<site>/adaptation.json``.

The base model folder is never written to except for its ``adaptations/`` sub-folder. An adaptation file
records the site, the adapter and its chosen setting, the evidence (the leave-one-out table, or the site
adapter's unlabelled statistics and estimated gain with its interval), every concept it masked
or amplified with its statistic, the edit itself (per-concept scale and shift, the head), the content
hashes of the support images (never their paths or ids) and the base model's weight checksum, so it
refuses to load on top of another model. The file carries its own checksum and is validated (finite,
bounded, shaped like the model) before use: :mod:`medcbm.adapt.integrity`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from medcbm import __version__
from medcbm._io import atomic_write_json
from medcbm.adapt.base import Adapter
from medcbm.adapt.edit import AdaptedCBM, ConceptEdit
from medcbm.adapt.integrity import check_shapes, verify, with_checksum
from medcbm.bottleneck.artifacts import load_cbm
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FORMAT = "medcbm.adaptation/2"  # /2 adds the checksum; /1 files are refused (re-run medcbm adapt)
FILE = "adaptation.json"
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_site_name(site: str) -> str:
    if not _SITE.match(site or ""):
        raise ConfigError(f"site name '{site}' must be 1-64 letters, digits, '_', '.' or '-' (it names a folder)")
    return site


def adaptation_dir(model_dir: str | os.PathLike, site: str) -> Path:
    return Path(model_dir) / "adaptations" / check_site_name(site)


def save_adaptation(adapter: Adapter, model_dir: str | os.PathLike, *, site: str, support: dict,
                    out_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the fitted adapter's adaptation of the model in ``model_dir`` for ``site``.

    Args:
        support: what the support set was (``n``, ``per_class``, ``image_sha256``: content hashes).
        out_dir: default ``<model_dir>/adaptations/<site>``.
        force: replace an existing adaptation of the same site.
    """
    base_meta = json.loads((Path(model_dir) / "model.json").read_text())
    out = Path(out_dir) if out_dir else adaptation_dir(model_dir, site)
    if (out / FILE).exists() and not force:
        raise ConfigError(f"site '{check_site_name(site)}' already has an adaptation ({out / FILE}); "
                          "pass --force to replace it, or remove it first")
    doc = {
        "format": FORMAT,
        "medcbm_version": __version__,
        "site": check_site_name(site),
        "adapter": adapter.name,
        "changed": adapter.edit_.changed(ConceptEdit.identity(adapter.model)),
        "reason": adapter.reason_,
        **adapter.evidence(),
        "changes": [c.to_json() for c in adapter.changes_],
        "classes": list(adapter.model.classes),
        "concepts": list(adapter.model.concept_names_),
        "edit": adapter.edit_.to_json(),
        "support": support,
        "base_model": {"path": os.path.relpath(Path(model_dir).resolve(), out.resolve()),
                       "weights_sha256": base_meta["weights_sha256"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / FILE, with_checksum(doc))
    return out


def read_adaptation(path: str | os.PathLike) -> dict:
    p = Path(path)
    f = p / FILE if p.is_dir() else p
    try:
        doc = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{f}: not a readable adaptation file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise ConfigError(f"{f}: unsupported adaptation format {got!r} (expected {FORMAT}: files without a "
                          "checksum are not used); re-run medcbm adapt")
    verify(doc, f)
    return doc


def load_model(path: str | os.PathLike):
    """A base model folder or an adaptation folder -> ``(model, meta)``.

    For an adaptation, ``model`` is an :class:`AdaptedCBM` over the base model and ``meta`` is the base
    model's metadata with the adaptation document under ``"adaptation"``.
    """
    p = Path(path)
    if not (p / FILE).is_file():
        return load_cbm(p)
    doc = read_adaptation(p)
    base_dir = (p / doc["base_model"]["path"]).resolve()
    base, meta = load_cbm(base_dir)
    if meta["weights_sha256"] != doc["base_model"]["weights_sha256"]:
        raise DataError(f"{p / FILE} was made for another base model (weights checksum differs from {base_dir}); "
                        "re-run medcbm adapt on this model")
    if list(doc["concepts"]) != list(base.concept_names_) or list(doc["classes"]) != list(base.classes):
        raise DataError(f"{p / FILE}: concepts or classes differ from the base model's")
    check_shapes(doc, n_classes=len(base.classes), n_concepts=len(base.concept_names_),
                 path=p / FILE)
    model = AdaptedCBM(base, ConceptEdit.from_json(doc["edit"]), site=doc["site"])
    return model, {**meta, "adaptation": doc}


def read_adaptations(model_dir: str | os.PathLike) -> list[dict]:
    """Every adaptation document saved beside the model, by site name."""
    return [read_adaptation(f) for f in sorted((Path(model_dir) / "adaptations").glob(f"*/{FILE}"))]


def list_adaptations(model_dir: str | os.PathLike) -> list[dict]:
    """One summary row per saved adaptation of the model."""
    rows = []
    for d in read_adaptations(model_dir):
        rows.append({"site": d["site"], "adapter": d["adapter"], "changed": d["changed"],
                     "masked": [c["concept"] for c in d["changes"] if c["action"] == "masked"],
                     "amplified": [c["concept"] for c in d["changes"] if c["action"] == "amplified"],
                     "estimated_gain": d.get("estimated_gain"), "n_support": d["support"].get("n")})
    return rows


def remove_adaptation(model_dir: str | os.PathLike, site: str) -> Path:
    """Delete one site's adaptation (the base model is untouched)."""
    d = adaptation_dir(model_dir, site)
    if not (d / FILE).is_file():
        have = [r["site"] for r in list_adaptations(model_dir)]
        raise DataError(f"model {model_dir} has no adaptation for site '{site}' (it has: {', '.join(have) or 'none'})")
    shutil.rmtree(d)
    return d


def predict_saved(model_dir: str | os.PathLike, manifest, *, cache_dir=None, progress: bool = True):
    """``(model, meta, class probabilities, concept activations)`` of a saved model or adaptation on a manifest."""
    from medcbm.backbones.features import extract_features
    from medcbm.bottleneck.artifacts import backbone_from_meta
    from medcbm.bottleneck.metadata import model_groups

    model, meta = load_model(model_dir)
    X = extract_features(manifest, backbone_from_meta(meta), cache_dir=cache_dir, progress=progress).X
    P = model.predict_concepts(X, model_groups(model, manifest.frame, meta))
    return model, meta, model.predict_proba_from_concepts(P), P
