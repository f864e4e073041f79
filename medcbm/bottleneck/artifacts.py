"""Save/load a :class:`KnowledgeCBM` as ``model.safetensors`` + ``model.json`` (never pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medcbm import __version__
from medcbm._io import atomic_write_bytes, atomic_write_json, sha256_file
from medcbm.backbones._registry import BackboneSpec
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.nuisance import ConceptOffsets
from medcbm.bottleneck.trainer import BottleneckConfig
from medcbm.concepts.grounding.base import grounder_from_state
from medcbm.errors import ConfigError, DataError

FORMAT = "medcbm.cbm/1"


def save_cbm(model: KnowledgeCBM, out_dir: str | os.PathLike, *, backbone: BackboneSpec,
             provenance: dict | None = None) -> Path:
    """Write the artifact; ``provenance`` records data/split hashes, concept bank id, etc."""
    from safetensors.numpy import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g_tensors, g_meta = model.grounder.get_state()
    tensors = {"bottleneck.W": model.W_, "bottleneck.b": model.b_, "bottleneck.p_mean": model.p_mean_,
               "bottleneck.p_scale": model.p_scale_}
    if model.prior_ is not None:
        tensors["bottleneck.prior"] = model.prior_
    if getattr(model, "class_means_", None) is not None:
        tensors["bottleneck.class_means"] = model.class_means_
    offsets = getattr(model, "offsets_", None)
    if offsets is not None:
        tensors["bottleneck.offsets"] = offsets.offsets
    tensors.update({f"grounder.{k}": np.ascontiguousarray(v) for k, v in g_tensors.items()})
    atomic_write_bytes(out / "model.safetensors", save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    meta = {
        "format": FORMAT,
        "medcbm_version": __version__,
        "classes": model.classes,
        "concepts": model.concept_names_,
        "config": model.config_.model_dump(),
        "recipe": getattr(model, "recipe_", {}),
        "grounder": g_meta,
        "backbone": backbone.model_dump(mode="json"),
        "backbone_fingerprint": backbone.fingerprint(),
        "fit_info": model.fit_info_,
        "offset_groups": offsets.groups if offsets is not None else None,
        "provenance": provenance or {},
        "weights_sha256": sha256_file(out / "model.safetensors"),
    }
    atomic_write_json(out / "model.json", meta)
    return out


def load_cbm(model_dir: str | os.PathLike, *, expect_backbone: BackboneSpec | None = None,
             expect_concepts: list[str] | None = None) -> tuple[KnowledgeCBM, dict]:
    """Load an artifact, refusing one built for another backbone or concept bank.

    Returns:
        ``(model, meta)``.
    """
    from safetensors.numpy import load_file

    d = Path(model_dir)
    if not (d / "model.json").is_file() or not (d / "model.safetensors").is_file():
        raise DataError(f"{d} is not a medcbm model folder (needs model.json and model.safetensors)")
    meta = json.loads((d / "model.json").read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{d}: unsupported artifact format {meta.get('format')!r} (expected {FORMAT})")
    if sha256_file(d / "model.safetensors") != meta["weights_sha256"]:
        raise DataError(f"{d}/model.safetensors does not match the checksum in model.json (corrupt or replaced)")
    if expect_backbone is not None and expect_backbone.fingerprint() != meta["backbone_fingerprint"]:
        raise ConfigError(f"model in {d} was trained on backbone '{meta['backbone']['name']}' "
                          f"(fingerprint {meta['backbone_fingerprint']}) but features come from '{expect_backbone.name}' "
                          f"({expect_backbone.fingerprint()}); extract features with the model's backbone")
    if expect_concepts is not None and list(expect_concepts) != list(meta["concepts"]):
        raise ConfigError(f"model in {d} uses concepts {meta['concepts']} but the given concept bank has "
                          f"{list(expect_concepts)}; retrain with this bank or use the matching one")
    t = load_file(str(d / "model.safetensors"))
    grounder = grounder_from_state({k[len("grounder."):]: v for k, v in t.items() if k.startswith("grounder.")},
                                   meta["grounder"])
    adjusted = meta.get("offset_groups") is not None
    model = KnowledgeCBM(grounder, classes=meta["classes"], config=BottleneckConfig(**meta["config"]),
                         concepts=meta["concepts"], nuisance_adjust=adjusted)
    model.concept_names_, model.config_ = meta["concepts"], model.config
    model.recipe_ = meta.get("recipe", {})
    model.backbone_ = meta["backbone"]["name"]
    model.backbone_fingerprint_ = meta["backbone_fingerprint"]
    model.class_means_ = t.get("bottleneck.class_means")
    model.prior_ = t.get("bottleneck.prior")
    model.W_, model.b_ = t["bottleneck.W"], t["bottleneck.b"]
    model.p_mean_, model.p_scale_ = t["bottleneck.p_mean"], t["bottleneck.p_scale"]
    model.fit_info_ = meta["fit_info"]
    model.offsets_ = ConceptOffsets(meta["offset_groups"], t["bottleneck.offsets"]) if adjusted else None
    return model, meta


def backbone_from_meta(meta: dict) -> BackboneSpec:
    return BackboneSpec.model_validate(meta["backbone"])
