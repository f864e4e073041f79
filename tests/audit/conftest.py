"""A small real model for the audit tests: PH2 concept probes (global EfficientNet-Lite0 features) on 160 HAM10000
images, the same images as tests/workflows/test_train.py (their features are then already cached)."""

from __future__ import annotations

import pytest

FAST = {"grounding": {"backbone": "efficientnet_lite0"}}


@pytest.fixture(scope="session")
def ham_own(own_manifest):
    return own_manifest


@pytest.fixture(scope="session")
def audit_model(ham_own, data_root, feature_cache, tmp_path_factory):
    """A saved ``cbm_ph2_only`` model (some concepts linked to the dermoscopy bank, some not)."""
    from medcbm.workflows.config import TrainConfig
    from medcbm.workflows.train import train_cbm

    path, _ = ham_own
    out = tmp_path_factory.mktemp("audit-model") / "model"
    cfg = TrainConfig(name="audit-test", out_dir=str(out), data={"manifest": str(path), "split": "column"},
                      model="cbm_ph2_only", overrides=FAST)
    train_cbm(cfg, data_root=data_root, cache_dir=feature_cache, progress=False)
    return out
