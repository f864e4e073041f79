"""Concept-supervised fine-tuning on a handful of real PH2 + Derm7pt images (one short run shared by the tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcbm.backbones.concept_finetune import FinetuneConfig, finetune_concepts
from medcbm.backbones.finetune_data import load_concept_images
from medcbm.data.concept_splits import HELDOUT, SELECT, TRAIN, concept_split


def _small(manifest, per_split: dict[str, int]):
    s = concept_split(manifest)
    return manifest.subset([i for k, n in per_split.items() for i in np.flatnonzero(s == k)[:n]])


@pytest.fixture(scope="module")
def tuned(data_root, tmp_path_factory, monkeypatch_module):
    from medcbm.backbones.finetuned import save_finetuned
    from medcbm.data.importers import import_dataset

    store = tmp_path_factory.mktemp("finetuned")
    monkeypatch_module.setenv("MEDCBM_FINETUNED_DIR", str(store))
    sizes = {TRAIN: 10, SELECT: 4, HELDOUT: 4}
    images = load_concept_images({"ph2": _small(import_dataset("ph2", data_root), sizes),
                                  "derm7pt": _small(import_dataset("derm7pt", data_root), sizes)}, min_positives=2)
    cfg = FinetuneConfig(epochs=2, patience=5, views=2, lr=1e-4, head_l2_grid=(1.0,), batch_size=10)
    result = finetune_concepts(images, cfg, progress=False)
    save_finetuned(store / "tiny", state_dict=result.state_dict, head=result.head, base=result.spec,
                   record={"data": images.data_summary(), "concepts": images.names,
                           "trained_image_sha256": sorted({images.image_sha256[i] for i in images.rows(TRAIN)}),
                           **result.record})
    return images, result


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_masked_labels_and_splits(tuned):
    images, _ = tuned
    ph2_only = [k for k, n in enumerate(images.names) if n.startswith("color_")]
    assert ph2_only, "PH2's colours should be among the concepts"
    assert np.isnan(images.labels[images.dataset == "derm7pt"][:, ph2_only]).all()  # not annotated, not "absent"
    assert set(images.split) == {TRAIN, SELECT, HELDOUT}


def test_loss_falls_and_record_states_splits(tuned):
    _, result = tuned
    h = result.record["history"]
    assert h[-1]["train_eval_loss"] < h[0]["train_eval_loss"]
    for d in ("ph2", "derm7pt"):
        r = result.record["heldout"][d]
        assert r["images"] == 4 and r["split"].startswith("heldout")


def test_artifact_reloads_bit_identically(tuned, data_root):
    from medcbm.backbones import create_backbone, get_backbone_spec

    images, result = tuned
    spec = get_backbone_spec("finetuned:tiny")
    assert spec.fingerprint() != get_backbone_spec(result.spec.name).fingerprint()  # its own feature cache
    model = create_backbone(spec)
    reloaded = model.model.state_dict()
    assert set(reloaded) == set(result.state_dict)
    assert all(torch.equal(reloaded[k], result.state_dict[k]) for k in reloaded)
    frozen = create_backbone(result.spec).model.state_dict()
    changed = [k for k in reloaded if not torch.equal(reloaded[k], frozen[k])]
    assert any(k.startswith("blocks.6") for k in changed) and not any(k.startswith("blocks.0") for k in changed)


def test_grounding_leaves_out_the_training_images(tuned, data_root):
    from medcbm.bottleneck.grounders import _unseen_by_backbone
    from medcbm.data.importers import import_dataset

    images, _ = tuned
    ph2 = _small(import_dataset("ph2", data_root), {TRAIN: 10, HELDOUT: 4})
    kept = _unseen_by_backbone(ph2, "finetuned:tiny")
    assert len(kept) == 4
    assert len(_unseen_by_backbone(ph2, "efficientnet_lite0_lesion_cc")) == len(ph2)


def test_changed_weights_are_refused(tuned, tmp_path):
    from medcbm.backbones import create_backbone, get_backbone_spec
    from medcbm.errors import MissingWeightsError

    spec = get_backbone_spec("finetuned:tiny").model_copy(update={"weights_sha256": "0" * 64})
    with pytest.raises(MissingWeightsError, match="does not match"):
        create_backbone(spec)
    with pytest.raises(MissingWeightsError, match="medcbm finetune"):
        get_backbone_spec("finetuned:missing")


def test_ensemble_concatenates_frozen_and_finetuned_features(tuned, data_root):
    from medcbm.backbones import create_backbone, get_backbone_spec
    from medcbm.bottleneck.grounders import _unseen_by_backbone
    from medcbm.data.importers import import_dataset
    from medcbm.errors import RegistryError

    _, result = tuned
    name = f"ensemble:{result.spec.name}+finetuned:tiny"
    spec = get_backbone_spec(name)
    members = [get_backbone_spec(result.spec.name), get_backbone_spec("finetuned:tiny")]
    assert spec.fingerprint() not in {m.fingerprint() for m in members}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        both = create_backbone(spec)(x)
        parts = [create_backbone(m)(x) for m in members]
    assert both.shape[1] == spec.num_features == sum(p.shape[1] for p in parts)
    assert torch.allclose(both, torch.cat(parts, 1))
    ph2 = _small(import_dataset("ph2", data_root), {TRAIN: 10, HELDOUT: 4})
    assert len(_unseen_by_backbone(ph2, name)) == 4  # a member's training images stay out of probe fitting
    with pytest.raises(RegistryError, match="preprocess images differently"):
        get_backbone_spec("ensemble:efficientnet_lite0+finetuned:tiny")
    with pytest.raises(RegistryError, match="two or more members"):
        get_backbone_spec("ensemble:efficientnet_lite0")


def test_recipe_finetune_step_trains_once_then_reuses(data_root, tmp_path, monkeypatch):
    import medcbm.backbones.concept_finetune as cf
    from medcbm.bottleneck.config import CBMConfig
    from medcbm.bottleneck.grounders import GroundingContext, concept_backbone
    from medcbm.data.importers import import_dataset
    from medcbm.data.manifest import save_manifest
    from medcbm.errors import ConfigError

    monkeypatch.setenv("MEDCBM_FINETUNED_DIR", str(tmp_path / "store"))
    sizes = {TRAIN: 8, SELECT: 3, HELDOUT: 3}
    paths = [save_manifest(_small(import_dataset(d, data_root), sizes), tmp_path / f"{d}_small.csv")
             for d in ("ph2", "derm7pt")]
    recipe = {"grounding": {"sources": [{"kind": "annotations", "dataset": str(p)} for p in paths],
                            "finetune": {"config": {"epochs": 1, "views": 1, "head_l2_grid": [1.0], "batch_size": 8,
                                                    "min_positives": 2}}}}
    cfg = CBMConfig.model_validate(recipe)
    name = concept_backbone(cfg, GroundingContext(data_root=data_root))
    assert name.startswith("ensemble:efficientnet_lite0_lesion_cc+finetuned:")

    def no_training(*a, **k):
        raise AssertionError("the cached fine-tuned backbone should have been reused")

    monkeypatch.setattr(cf, "finetune_concepts", no_training)
    assert concept_backbone(cfg, GroundingContext(data_root=data_root)) == name
    with pytest.raises(ValueError, match="config.base"):
        CBMConfig.model_validate({"grounding": {"finetune": {"config": {"base": "x"}}}})
    with pytest.raises(ValueError, match="epochs"):
        CBMConfig.model_validate({"grounding": {"finetune": {"config": {"epochs": "many"}}}})
    bad = CBMConfig.model_validate({"grounding": {"sources": [{"kind": "vlm"}], "finetune": {}}})
    with pytest.raises(ConfigError, match="annotation source"):
        concept_backbone(bad, GroundingContext(data_root=data_root))
