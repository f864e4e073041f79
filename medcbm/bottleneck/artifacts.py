"""Save/load a :class:`KnowledgeCBM` as ``model.safetensors`` + ``model.json`` (never pickle)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medcbm import __version__
from medcbm._io import atomic_write_bytes, atomic_write_json, sha256_file
from medcbm.backbones._registry import BackboneSpec
from medcbm.bottleneck.domain import TENSOR as DOMAIN_TENSOR
from medcbm.bottleneck.domain import DomainSummary, FeatureDomain
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.estimator_math import InputMap
from medcbm.bottleneck.nuisance import ConceptOffsets
from medcbm.bottleneck.trainer import BottleneckConfig
from medcbm.concepts.grounding.base import grounder_from_state
from medcbm.errors import ConfigError, DataError, MedcbmError

logger = logging.getLogger(__name__)

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
    inputs = model.input_map_
    if inputs.bounded:  # a model loaded from an artifact saved before the range existed stays unbounded
        tensors.update({"bottleneck.p_lo": inputs.lo, "bottleneck.p_hi": inputs.hi})
    if model.prior_ is not None:
        tensors["bottleneck.prior"] = model.prior_
    if getattr(model, "class_means_", None) is not None:
        tensors["bottleneck.class_means"] = model.class_means_
    offsets = getattr(model, "offsets_", None)
    if offsets is not None:
        tensors["bottleneck.offsets"] = offsets.offsets
    tensors.update({f"grounder.{k}": np.ascontiguousarray(v) for k, v in g_tensors.items()})
    domain = getattr(model, "feature_domain_", None)
    d_tensors, d_meta = domain.get_state() if domain is not None else ({}, None)
    tensors.update(d_tensors)
    identity = {"classes": json.dumps(list(model.classes)), "concepts": json.dumps(list(model.concept_names_)),
                "backbone_fingerprint": backbone.fingerprint()}
    # the weights file carries what they were trained for: an edited model.json cannot relabel them
    atomic_write_bytes(out / "model.safetensors", save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                                       metadata=identity))
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
        "feature_domain": d_meta,
        "provenance": provenance or {},
        "weights_sha256": sha256_file(out / "model.safetensors"),
    }
    atomic_write_json(out / "model.json", meta)
    return out


class ModelMeta(BaseModel):
    """``model.json``, validated: a missing, mistyped or unknown key is refused by name."""

    model_config = ConfigDict(extra="forbid")
    format: str
    medcbm_version: str
    classes: list[str] = Field(min_length=2)
    concepts: list[str] = Field(min_length=1)
    config: BottleneckConfig
    recipe: dict[str, Any] = Field(default_factory=dict)
    grounder: dict[str, Any]
    backbone: BackboneSpec
    backbone_fingerprint: str
    fit_info: dict[str, Any] = Field(default_factory=dict)
    offset_groups: list[str] | None = None
    feature_domain: DomainSummary | None = None  # absent in models saved before the domain guard
    provenance: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str

    @model_validator(mode="after")
    def _consistent(self) -> "ModelMeta":
        for key in ("classes", "concepts"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key}: duplicate names")
        if self.backbone.fingerprint() != self.backbone_fingerprint:
            raise ValueError("backbone: does not match backbone_fingerprint (was the backbone edited?)")
        return self


def read_model_meta(model_dir: Path) -> dict:
    """``model.json`` parsed and validated (one-line errors naming the key), as a plain dict."""
    path = model_dir / "model.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"model.json is not valid JSON (truncated or edited?): {exc}", path=str(path)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: unsupported artifact format {got!r} (expected {FORMAT})")
    try:
        ModelMeta.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(k) for k in err["loc"]) or "(top level)"
        raise ConfigError(f"{path}: key '{key}': {err['msg']} (retrain, or restore the file saved with the "
                          "model)") from None
    return raw


def _load_tensors(model_dir: Path, meta: dict) -> dict[str, np.ndarray]:
    """The weights, checked against the checksum, the identity they were saved with, their shapes and finiteness."""
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    if sha256_file(path) != meta["weights_sha256"]:
        raise DataError(f"{path} does not match the checksum in model.json (corrupt or replaced)")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            saved = fh.metadata() or {}
            t = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # a file that is not safetensors at all (e.g. a renamed pickle)
        raise DataError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    for key, value in (("classes", meta["classes"]), ("concepts", meta["concepts"])):
        if key in saved and json.loads(saved[key]) != list(value):
            raise ConfigError(f"{model_dir}/model.json '{key}' differ from those the weights were saved with "
                              f"({json.loads(saved[key])}); restore model.json")
    if "backbone_fingerprint" in saved and saved["backbone_fingerprint"] != meta["backbone_fingerprint"]:
        raise ConfigError(f"{model_dir}/model.json names another backbone than the weights were trained on; "
                          "restore model.json")
    n_cls, n_con = len(meta["classes"]), len(meta["concepts"])
    n_groups = len(meta.get("offset_groups") or [])
    shapes = {"bottleneck.W": (n_cls, n_con), "bottleneck.b": (n_cls,), "bottleneck.p_mean": (n_con,),
              "bottleneck.p_scale": (n_con,), "bottleneck.p_lo": (n_con,), "bottleneck.p_hi": (n_con,),
              "bottleneck.prior": (n_cls, n_con),
              "bottleneck.class_means": (n_cls, n_con), "bottleneck.offsets": (n_groups, n_con)}
    if meta.get("feature_domain"):
        shapes[DOMAIN_TENSOR] = (meta["feature_domain"]["dim"],)
    for key, shape in shapes.items():
        if key in t and t[key].shape != shape:
            raise DataError(f"{path}: tensor '{key}' has shape {t[key].shape}, model.json implies {shape}")
        if key not in t and key in ("bottleneck.W", "bottleneck.b", "bottleneck.p_mean", "bottleneck.p_scale"):
            raise DataError(f"{path}: tensor '{key}' is missing")
    if ("bottleneck.p_lo" in t) != ("bottleneck.p_hi" in t):
        raise DataError(f"{path}: the concept input range needs both 'bottleneck.p_lo' and 'bottleneck.p_hi'")
    bad = [k for k, v in t.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise DataError(f"{path}: non-finite values in {bad[:3]}; the model cannot be used (retrain it)")
    return t


def load_cbm(model_dir: str | os.PathLike, *, expect_backbone: BackboneSpec | None = None,
             expect_concepts: list[str] | None = None) -> tuple[KnowledgeCBM, dict]:
    """Load an artifact, refusing one built for another backbone or concept bank, or one that was damaged or edited.

    Returns:
        ``(model, meta)``.
    """
    d = Path(model_dir)
    if not (d / "model.json").is_file() or not (d / "model.safetensors").is_file():
        raise DataError(f"{d} is not a medcbm model folder (needs model.json and model.safetensors)")
    meta = read_model_meta(d)
    if expect_backbone is not None and expect_backbone.fingerprint() != meta["backbone_fingerprint"]:
        raise ConfigError(f"model in {d} was trained on backbone '{meta['backbone']['name']}' "
                          f"(fingerprint {meta['backbone_fingerprint']}) but features come from '{expect_backbone.name}' "
                          f"({expect_backbone.fingerprint()}); extract features with the model's backbone")
    if expect_concepts is not None and list(expect_concepts) != list(meta["concepts"]):
        raise ConfigError(f"model in {d} uses concepts {meta['concepts']} but the given concept bank has "
                          f"{list(expect_concepts)}; retrain with this bank or use the matching one")
    t = _load_tensors(d, meta)
    try:
        grounder = grounder_from_state({k[len("grounder."):]: v for k, v in t.items() if k.startswith("grounder.")},
                                       meta["grounder"])
    except MedcbmError:
        raise
    except Exception as exc:
        raise ConfigError(f"{d}/model.json 'grounder' does not match the saved weights ({type(exc).__name__}: "
                          f"{exc})") from None
    if len(grounder.concept_names_) != len(meta["concepts"]):
        raise ConfigError(f"{d}/model.json: the grounder gives {len(grounder.concept_names_)} concepts, 'concepts' "
                          f"lists {len(meta['concepts'])}")
    adjusted = meta.get("offset_groups") is not None
    # a config saved before the solver key was trained by early-stopped Adam: say so, not today's default
    config = BottleneckConfig(**{"solver": "adam", **meta["config"]})
    model = KnowledgeCBM(grounder, classes=meta["classes"], config=config, concepts=meta["concepts"],
                         nuisance_adjust=adjusted)
    model.concept_names_, model.config_ = meta["concepts"], model.config
    model.recipe_ = meta.get("recipe", {})
    model.backbone_ = meta["backbone"]["name"]
    model.backbone_fingerprint_ = meta["backbone_fingerprint"]
    model.class_means_ = t.get("bottleneck.class_means")
    model.prior_ = t.get("bottleneck.prior")
    model.W_, model.b_ = t["bottleneck.W"], t["bottleneck.b"]
    if "bottleneck.p_lo" in t:
        model.set_input_map(InputMap(t["bottleneck.p_lo"], t["bottleneck.p_hi"], t["bottleneck.p_mean"],
                                     t["bottleneck.p_scale"]))
    else:
        logger.warning("model in %s was saved without a concept input range (medcbm %s): its interventions are "
                       "unbounded; retrain it for bounded ones", d, meta.get("medcbm_version"))
        model.set_input_map(InputMap.unbounded(t["bottleneck.p_mean"], t["bottleneck.p_scale"]))
    model.fit_info_ = meta["fit_info"]
    model.offsets_ = ConceptOffsets(meta["offset_groups"], t["bottleneck.offsets"]) if adjusted else None
    model.feature_domain_ = FeatureDomain.from_state(t, meta.get("feature_domain"), str(d))
    return model, meta


def backbone_from_meta(meta: dict) -> BackboneSpec:
    return BackboneSpec.model_validate(meta["backbone"])
