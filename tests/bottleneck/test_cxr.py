"""Chest X-ray CBM: bank prior mapped onto notes findings, and the report-grounded recipe on real images and notes."""

import dataclasses

import numpy as np
import pytest

from medcbm.bottleneck.priors import bank_prior
from medcbm.concepts.schema import default_bank_path, load_bank
from medcbm.errors import ConfigError

CLASS_MAP = {"covid": ["covid"], "other": ["pneumonia", "no_finding"]}


def test_bank_prior_over_notes_findings():
    bank = load_bank(default_bank_path("chest_xray", "covid"))
    prior, prov = bank_prior(bank, ["covid", "other"], prefixes=("cxr_notes:",), class_map=CLASS_MAP, rule="vote")
    # signs from the cited passages' stances (knowledge/corpus): bilateral peripheral opacities argue for COVID
    # and against other pneumonia; air bronchograms (lobar bacterial consolidation) argue against COVID
    assert prior["covid"]["peripheral_distribution"] == 1 and prior["other"]["peripheral_distribution"] == -1
    assert prior["covid"]["air_bronchogram"] == -1
    # "other" pools pneumonia (+1) with no_finding (-1 for any finding): they cancel, so no sign rather than a
    # wrong one; consolidation is argued both ways for COVID and gets none either
    assert "air_bronchogram" not in prior["other"] and "consolidation" not in prior["covid"]
    assert all(v in (-1, 1) for c in prior.values() for v in c.values())
    assert prov["rule"] == "vote" and prov["bank_concepts_per_target"]
    with pytest.raises(ConfigError, match="class map"):
        bank_prior(bank, ["covid", "bacterial"], prefixes=("cxr_notes:",), class_map=CLASS_MAP)
    with pytest.raises(ConfigError, match="no concept of bank"):
        bank_prior(bank, ["covid", "other"], prefixes=("derm7pt:",), class_map=CLASS_MAP)


@pytest.fixture(scope="module")
def cxr_method_input(data_root, feature_cache):
    """One seed of covid-cxr-view-holdout, subsampled to keep feature extraction short."""
    from medcbm.backbones import get_backbone_spec
    from medcbm.backbones.features import extract_features
    from medcbm.benchmarks.bench_shift import method_input
    from medcbm.data.manifest import SkipLog
    from medcbm.methods import MethodContext
    from medcbm.protocols import Splits, build_splits, load_protocol, load_protocol_manifest

    proto = load_protocol("covid-cxr-view-holdout")
    sp = build_splits(load_protocol_manifest(proto, data_root, SkipLog()), proto, 0)
    rng = np.random.default_rng(0)
    sizes = {"train": 100, "val": 30, "test_id": 15, "test_ood": 15}
    idx = {k: np.sort(rng.choice(sp.index[k], min(n, len(sp.index[k])), replace=False)) for k, n in sizes.items()}
    small = Splits(sp.manifest, sp.y, sp.classes, idx, 0)
    spec = get_backbone_spec(proto.backbone)
    X = {k: extract_features(sp.manifest.subset(v), spec, cache_dir=feature_cache, progress=False).X for k, v in idx.items()}
    frames = {k: sp.manifest.frame.iloc[v].reset_index(drop=True) for k, v in idx.items()}
    return method_input(proto, small, X, frames, MethodContext(backbone=spec, cache_dir=feature_cache)), small


def test_cxr_cbm_reports_recipe(cxr_method_input):
    from medcbm.methods import get_method, list_methods
    from medcbm.methods.cbm import load_method_recipe, run_recipe

    data, sp = cxr_method_input
    assert {"cxr_cbm_reports", "cxr_cbm_reports_noprior", "cxr_cbm_reports_nofilter"} <= set(list_methods("covid-cxr"))
    assert get_method("cxr_cbm_reports").__doc__
    # the benchmark uses 32 components / 150 iterations; smaller keeps the test short
    cfg = load_method_recipe("cxr_cbm_reports").with_overrides(
        {"grounding": {"sources": [{"kind": "reports", "pca_components": 16, "max_iter": 60}]}})
    out = run_recipe(cfg, data)
    cbm = out.model
    for s in ("val", "test_id", "test_ood"):
        P = out.proba[s]
        assert P.shape == (len(sp.index[s]), 2)
        np.testing.assert_allclose(P.sum(1), 1, rtol=1e-5)
    assert out.info["concepts"] == cbm.concept_names_ and set(out.info["concepts"]) <= set(out.info["cv_auc"])
    assert all(out.info["cv_auc"][c] >= 0.6 for c in out.info["concepts"])
    assert cbm.prior_ is not None and np.abs(cbm.prior_).sum() > 0
    # findings too rare in 100 notes are flagged, not silently dropped
    assert "pneumothorax" in out.info["flagged"]
    # test images are grounded from pixels only: their notes never reach the method, and the validation
    # split's notes are not read either
    assert all("clinical_notes" not in t.frame.columns for t in data.test.values())
    blind = dataclasses.replace(data, val=dataclasses.replace(data.val, frame=data.val.frame.assign(clinical_notes="")))
    np.testing.assert_allclose(run_recipe(cfg, blind).proba["test_ood"], out.proba["test_ood"])
    acc = (out.proba["test_id"].argmax(1) == sp.y[sp.index["test_id"]]).mean()
    assert acc > 0.5
