"""Benchmark protocols as YAML data (``configs/protocols/*.yaml``): a new protocol needs no code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medcbm._config import load_yaml_model
from medcbm._resources import resource_path
from medcbm.errors import RegistryError


def _protocol_dir() -> Path:
    return resource_path("configs", "protocols")


class SplitSizes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: int = Field(gt=0)
    val: int = Field(gt=0)
    test_id: int = Field(gt=0)
    test_ood: int = Field(gt=0)


class ConfoundedSplit(BaseModel):
    """KnoBo-style confounding: nuisance group tied to the class in train/val/test_id, reversed in test_ood."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["confounded"]
    nuisance: str = Field(description="manifest column holding the nuisance attribute (e.g. site)")
    groups: dict[str, list[str]] = Field(description="exactly two nuisance groups: name -> attribute values")
    bias: dict[str, str] = Field(description="class -> the group it is drawn from in-domain")
    ratio: float = Field(0.9, gt=0.5, le=1.0)
    sizes: SplitSizes
    group_by: str = "patient_id"

    def group_of(self, values: pd.Series, *, other: str | None = None) -> pd.Series:
        """The nuisance group of each attribute value (``other`` for values no group lists)."""
        lookup = {v: g for g, vals in self.groups.items() for v in vals}
        return values.astype(str).str.strip().map(lambda v: lookup.get(v, other))

    @model_validator(mode="after")
    def _check(self) -> "ConfoundedSplit":
        if len(self.groups) != 2:
            raise ValueError(f"groups must name exactly two nuisance groups, got {list(self.groups)}")
        for cls, g in self.bias.items():
            if g not in self.groups:
                raise ValueError(f"bias.{cls} = '{g}' is not one of the groups {list(self.groups)}")
        return self


class SiteHoldoutSplit(BaseModel):
    """Train/val/in-domain test from some sites, out-of-domain test from held-out sites."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["site_holdout"]
    nuisance: str = "site"
    ood_values: list[str] = Field(min_length=1, description="attribute values held out for test_ood")
    val_frac: float = Field(0.15, gt=0, lt=1)
    test_id_frac: float = Field(0.2, gt=0, lt=1)
    group_by: str = "patient_id"
    balance_train: bool = False
    max_per_class: dict[Literal["train", "val", "test_id", "test_ood"], int] = Field(
        default_factory=dict, description="split -> cap on the images of each class (a random subset above it)")


class Protocol(BaseModel):
    """A benchmark protocol: dataset, label mapping, split design and seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    dataset: str = Field(description="importer name (ham10000, ph2, covid-cxr) or a manifest path")
    label_map: dict[str, list[str]] = Field(description="class name -> raw labels it includes")
    filters: dict[str, list[str]] = Field(default_factory=dict, description="column -> allowed values")
    split: ConfoundedSplit | SiteHoldoutSplit = Field(discriminator="kind")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    backbone: str = "efficientnet_lite0"

    @property
    def classes(self) -> list[str]:
        return list(self.label_map)

    @model_validator(mode="after")
    def _check(self) -> "Protocol":
        if len(self.label_map) < 2:
            raise ValueError("label_map needs at least two classes")
        seen: dict[str, str] = {}
        for cls, raws in self.label_map.items():
            for r in raws:
                if r in seen:
                    raise ValueError(f"raw label '{r}' is mapped to both '{seen[r]}' and '{cls}'")
                seen[r] = cls
        if isinstance(self.split, ConfoundedSplit):
            missing = set(self.classes) - set(self.split.bias)
            if missing:
                raise ValueError(f"split.bias lacks classes {sorted(missing)}")
        return self


def list_protocols() -> list[str]:
    """Names of the protocols shipped in ``configs/protocols``."""
    return sorted(p.stem for p in _protocol_dir().glob("*.yaml"))


def load_protocol(name_or_path: str | os.PathLike) -> Protocol:
    """Load a protocol by shipped name or YAML path; errors name the bad key."""
    p = Path(name_or_path)
    if not p.suffix:
        p = _protocol_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise RegistryError(f"unknown protocol '{name_or_path}'. Available: {', '.join(list_protocols())}")
    return load_yaml_model(p, Protocol, what="protocol")


def load_protocol_manifest(protocol: Protocol, data_root=None, skips=None):
    """The protocol's dataset as a manifest: a bundled importer name or a manifest file."""
    from medcbm.data.importers import import_dataset, list_datasets
    from medcbm.data.manifest import load_manifest

    if protocol.dataset in list_datasets():
        return import_dataset(protocol.dataset, data_root, skips=skips)
    return load_manifest(protocol.dataset)
