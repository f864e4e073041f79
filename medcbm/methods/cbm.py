"""Concept-bottleneck benchmark methods, registered from the YAML files in ``configs/methods/``.

Each file holds one :class:`~medcbm.bottleneck.config.CBMConfig` recipe (a method) and named variants
(ablations) as overrides of it — configuration as data: a new ablation needs no code. Every method
goes through the one builder, :func:`medcbm.bottleneck.recipe.fit_cbm`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medcbm._config import format_validation_error, load_yaml_model
from medcbm._resources import resource_path
from medcbm.bottleneck.config import CBMConfig, deep_merge
from medcbm.bottleneck.grounders import GroundingContext, split_features
from medcbm.bottleneck.recipe import fit_cbm
from medcbm.errors import ConfigError
from medcbm.methods.registry import MethodInput, MethodOutput, register_method

logger = logging.getLogger(__name__)


class Variant(BaseModel):
    """A named override of the file's recipe (an ablation)."""

    model_config = ConfigDict(extra="forbid")
    description: str
    override: dict[str, Any] = Field(default_factory=dict)


class MethodFile(BaseModel):
    """``configs/methods/<name>.yaml``: a recipe registered as a benchmark method, plus its variants."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    datasets: list[str] | None = None
    recipe: CBMConfig
    variants: dict[str, Variant] = Field(default_factory=dict)

    def recipes(self) -> dict[str, tuple[str, CBMConfig]]:
        """Method name -> (description, validated recipe) for the base recipe and every variant."""
        out = {self.name: (self.description, self.recipe)}
        base = self.recipe.model_dump()
        for name, v in self.variants.items():
            try:
                out[name] = (v.description, CBMConfig.model_validate(deep_merge(base, v.override)))
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, f"method config {self.name}, variant {name}")) from None
        return out


def method_files(folder: str | Path | None = None) -> list[Path]:
    """The method YAML files (shipped ``configs/methods`` unless ``folder`` is given)."""
    d = Path(folder) if folder else resource_path("configs", "methods")
    return sorted(d.glob("*.yaml"))


def load_method_recipe(name: str) -> CBMConfig:
    """The recipe of a registered CBM method or variant (e.g. ``cbm``, ``cbm_no_prior``)."""
    for f in method_files():
        found = load_yaml_model(f, MethodFile, what="method config").recipes().get(name)
        if found:
            return found[1]
    raise ConfigError(f"no method config defines '{name}' (looked in {resource_path('configs', 'methods')})")


def run_recipe(cfg: CBMConfig, data: MethodInput) -> MethodOutput:
    """Fit the recipe on the seed's train/val splits and predict classes and concepts on val and test splits."""
    c = data.context
    ctx = GroundingContext(data_root=c.data_root, cache_dir=c.cache_dir, progress=c.progress, memo=c.memo)
    model = fit_cbm(cfg, data.train, data.val, classes=data.classes, ctx=ctx, seed=data.seed)
    splits = {"val": data.val, **data.test}
    concepts = {s: model.predict_concepts(split_features(v, model.backbone_, ctx), v.groups) for s, v in splits.items()}
    proba = {s: model.predict_proba_from_concepts(P) for s, P in concepts.items()}
    info = {"concepts": model.concept_names_, "weights": np.round(model.W_, 3).tolist(), **model.fit_info_,
            **probe_summary(model.grounder)}
    return MethodOutput(proba, model=model, concepts=concepts, concept_names=list(model.concept_names_), info=info)


def probe_summary(grounder) -> dict:
    """CV AUROC and flagged concepts of every probe layer inside a (possibly composed) grounder."""
    out: dict = {"cv_auc": {}, "flagged": {}}
    for p in grounder.leaves():
        out["cv_auc"].update(getattr(p, "cv_auc_", {}))
        out["flagged"].update(getattr(p, "flagged_", {}))
    return out


def _register(name: str, description: str, cfg: CBMConfig, datasets: list[str] | None) -> None:
    def method(data: MethodInput) -> MethodOutput:
        return run_recipe(cfg, data)

    method.__name__, method.__doc__ = name, description
    register_method(name, datasets=tuple(datasets) if datasets else None, description=description)(method)


def register_method_files(folder: str | Path | None = None) -> list[str]:
    """Register every recipe and variant of the method YAML files; returns the names."""
    names = []
    for f in method_files(folder):
        mf = load_yaml_model(f, MethodFile, what="method config")
        for name, (desc, cfg) in mf.recipes().items():
            _register(name, desc, cfg, mf.datasets)
            names.append(name)
    return names


register_method_files()
