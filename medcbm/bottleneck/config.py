"""Run configuration for ``medcbm train`` (YAML, validated; errors name the key)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medcbm._config import load_yaml_model

from medcbm.bottleneck.trainer import BottleneckConfig


class GroundingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("ph2_probes", pattern="^(ph2_probes)$", description="concept grounding strategy")
    backbone: str = "efficientnet_lite0_lesion_cc"
    drop_weak: bool = True
    min_auc: float = Field(0.6, ge=0.5, le=1.0)
    concepts: list[str] | None = None


class TrainConfig(BaseModel):
    """What ``medcbm train`` builds: protocol + seed for data, grounding, bank prior, bottleneck."""

    model_config = ConfigDict(extra="forbid")
    name: str
    protocol: str = "ham10000-site-confounded"
    seed: int = 0
    out_dir: str = "runs/models/{name}"
    bank: str | None = Field("dermoscopy/benign_malignant", description="modality/task of a shipped bank, a bank path, or null")
    prior: str | None = Field("expert", description="'expert' (the reviewed knowledge/priors file), 'bank' (mined "
                              "from `bank`), a prior YAML path, or null for no prior")
    balance_nuisance: bool = Field(True, description="weight samples so the protocol's nuisance groups (e.g. site) "
                                   "are balanced within each class")
    grounding: GroundingConfig = GroundingConfig()
    bottleneck: BottleneckConfig = BottleneckConfig()

    def resolved_out_dir(self) -> Path:
        return Path(self.out_dir.format(name=self.name))


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a ``medcbm train`` config."""
    return load_yaml_model(path, TrainConfig, what="config")
