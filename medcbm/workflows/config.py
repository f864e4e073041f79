"""``medcbm train`` run configs (YAML, validated; errors name the key): where the data comes from, which recipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medcbm._config import load_yaml_model
from medcbm.bottleneck.config import CBMConfig


class DataConfig(BaseModel):
    """The labelled data a model is trained on. Give exactly one of ``protocol``, ``manifest``/``dataset``,
    or ``train_manifest`` (+ ``val_manifest``).

    Attributes:
        protocol: a shipped benchmark protocol (or its YAML path): its train/val/test split for ``seed``.
        manifest: your manifest (CSV/Parquet: ``id``, ``image``, ``label``, optional ``patient_id``, ``site``, ...).
        dataset: a bundled dataset importer (``ham10000``, ``ph2``, ``derm7pt``, ``covid-cxr``) instead of a file.
        split: for ``manifest``/``dataset``: ``column`` (values train/val/test in ``split_column``) or ``auto``
            (a seeded split that keeps each ``group_by`` value — patient — in one split).
        train_manifest, val_manifest: separate manifests (a ``val_manifest`` is required with them).
        test_manifests: extra labelled sets to report, ``{name: path}``.
        label_map: class -> raw labels it includes; default: each distinct training label is a class.
        drop_unmapped: leave out rows whose label the map does not cover (counted in a warning and in the
            model's provenance); off by default, when such rows are an error listing the count per label.
        balance_column: the nuisance column (e.g. ``site``) whose groups balancing equalises within each class;
            a protocol's own nuisance attribute is used when training on a protocol.
        seed: split seed (and the protocol's seed).
    """

    model_config = ConfigDict(extra="forbid")
    protocol: str | None = None
    manifest: str | None = None
    dataset: str | None = None
    split: Literal["column", "auto"] | None = None
    split_column: str = "split"
    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifests: dict[str, str] = Field(default_factory=dict)
    label_map: dict[str, list[str]] | None = None
    drop_unmapped: bool = False
    val_frac: float = Field(0.15, gt=0, lt=1)
    test_frac: float = Field(0.15, ge=0, lt=1)
    group_by: str = "patient_id"
    balance_column: str = "site"
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        given = [k for k in ("protocol", "manifest", "dataset", "train_manifest") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one data source: protocol, manifest, dataset, or train_manifest "
                             f"(+ val_manifest); got {given or 'none'}")
        if (self.manifest or self.dataset) and self.split is None:
            raise ValueError("a manifest needs `split: column` (its split column holds train/val/test) or "
                             "`split: auto` (an automatic patient-disjoint split)")
        if self.train_manifest and not self.val_manifest:
            raise ValueError("train_manifest needs a val_manifest (or use `manifest` with `split: auto`)")
        if self.label_map is not None and len(self.label_map) < 2:
            raise ValueError("label_map needs at least two classes")
        return self


class TrainConfig(BaseModel):
    """A ``medcbm train`` run: a name, the data, and the CBM recipe.

    Attributes:
        model: a registered CBM method (``configs/methods``; e.g. ``cbm``, ``cxr_cbm_reports``) whose recipe
            to use, or a full inline recipe.
        overrides: deep-merged into the recipe (e.g. ``{prior: null}``).
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    out_dir: str = "runs/models/{name}"
    data: DataConfig
    model: str | CBMConfig = "cbm"
    overrides: dict[str, Any] = Field(default_factory=dict)

    def recipe(self) -> CBMConfig:
        """The validated recipe: the named method's (or the inline one) with ``overrides`` applied."""
        if isinstance(self.model, str):
            from medcbm.methods.cbm import load_method_recipe

            base = load_method_recipe(self.model)
        else:
            base = self.model
        return base.with_overrides(self.overrides) if self.overrides else base

    def resolved_out_dir(self) -> Path:
        return Path(self.out_dir.format(name=self.name))


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a ``medcbm train`` config; relative data paths resolve against the config's folder."""
    cfg = load_yaml_model(path, TrainConfig, what="config")
    base = Path(path).resolve().parent
    d = cfg.data

    def rel(p: str | None) -> str | None:
        return p if p is None or Path(p).is_absolute() or not (base / p).exists() else str(base / p)

    upd = {k: rel(getattr(d, k)) for k in ("manifest", "train_manifest", "val_manifest")}
    if d.protocol and Path(d.protocol).suffix:
        upd["protocol"] = rel(d.protocol)
    upd["test_manifests"] = {k: rel(v) for k, v in d.test_manifests.items()}
    cfg = cfg.model_copy(update={"data": d.model_copy(update=upd)})
    if isinstance(cfg.model, CBMConfig):  # files named inside an inline recipe resolve the same way
        m = cfg.model
        sources = [s.model_copy(update={k: rel(getattr(s, k)) for k in ("dataset", "prior", "vocabulary")
                                        if getattr(s, k, None)}) for s in m.grounding.sources]
        prior = [rel(p) for p in m.prior] if isinstance(m.prior, list) else rel(m.prior)
        bank = rel(m.bank) if m.bank and m.bank.endswith(".json") else m.bank
        model = m.model_copy(update={"grounding": m.grounding.model_copy(update={"sources": sources}),
                                     "prior": prior, "bank": bank})
        cfg = cfg.model_copy(update={"model": model})
    return cfg
