"""--engine ray fine-tuning: the same weights as the local loop on real PH2 + Derm7pt images, on 2 CPU workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcbm.backbones.concept_finetune import FinetuneConfig, finetune_concepts
from medcbm.backbones.finetune_data import load_concept_images
from medcbm.data.concept_splits import HELDOUT, SELECT, TRAIN
from medcbm.engines import EngineConfig, ray_session, use_engine
from medcbm.errors import ConfigError

from tests.backbones.test_concept_finetune import _small

pytestmark = pytest.mark.slow

# 2 batches of 8 and 7 rows (the workers' slices differ in size), one epoch
CFG = FinetuneConfig(epochs=1, views=2, head_l2_grid=(1.0,), batch_size=8, min_positives=2)
RAY = EngineConfig(engine="ray", workers=2)


@pytest.fixture(scope="module")
def images(data_root):
    from medcbm.data.importers import import_dataset

    sizes = {TRAIN: 8, SELECT: 4, HELDOUT: 3}
    m = {d: _small(import_dataset(d, data_root), sizes) for d in ("ph2", "derm7pt")}
    m["derm7pt"] = m["derm7pt"].subset([i for i in range(len(m["derm7pt"])) if i != 0])  # 15 training images
    return load_concept_images(m, min_positives=2)


@pytest.fixture(scope="module")
def runs(images):
    import medcbm.backbones.concept_finetune as cf

    real, memo = cf._cache_trunk, []

    def once(*args, **kwargs):  # the driver's decode + frozen trunk does not depend on the engine: run it once
        memo or memo.append(real(*args, **kwargs))
        return memo[0]

    mp = pytest.MonkeyPatch()
    mp.setattr(cf, "_cache_trunk", once)
    try:
        local = finetune_concepts(images, CFG, progress=False)
        with ray_session(RAY), use_engine(RAY):  # one cluster (2 CPUs) for this module's Ray runs
            ray = finetune_concepts(images, CFG, progress=False)
            with use_engine(RAY.model_copy(update={"workers": 3})), pytest.raises(ConfigError) as bad:
                finetune_concepts(images, CFG, progress=False)
    finally:
        mp.undo()
    return local, ray, bad.value


def test_ray_workers_give_the_local_weights(runs):
    local, ray, _ = runs
    assert set(ray.state_dict) == set(local.state_dict)
    assert local.record["best_epoch"] == 1  # the trained weights, not the starting ones, are compared
    # 2 AdamW steps of lr 3e-4 from the same start move a parameter by up to ~6e-4 and a wrong slice changes
    # the direction; what is left is float rounding (half batches, 1 vs 2 torch threads: 3e-6 seen here), which
    # Adam can magnify for near-zero gradients: 2e-5 (a fifteenth of one step) tells the two apart
    for k in local.state_dict:
        torch.testing.assert_close(ray.state_dict[k], local.state_dict[k], rtol=0, atol=2e-5, msg=k)
    for k in local.head:
        torch.testing.assert_close(ray.head[k], local.head[k], rtol=0, atol=2e-5, msg=k)
    # the select AUROC (early stopping's input) and the losses, summed over the workers, are the local ones
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in local.record["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in ray.record["history"]] == strip
    assert ray.record["best_epoch"] == local.record["best_epoch"]
    assert local.record["engine"] == {"name": "local", "workers": 1}
    assert ray.record["engine"]["name"] == "ray" and ray.record["engine"]["workers"] == 2


def test_more_workers_than_cpus_is_one_line_before_starting(runs):
    _, _, bad = runs
    msg = str(bad)
    assert "\n" not in msg and "--workers 3" in msg and "has 2" in msg
