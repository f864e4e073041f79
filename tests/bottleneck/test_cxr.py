"""Chest X-ray CBM: bank prior mapped onto notes findings, and the benchmark method on real images and notes."""

import numpy as np
import pytest

from medcbm.concepts.schema import default_bank_path, load_bank
from medcbm.errors import ConfigError


def test_notes_prior_from_shipped_bank():
    from medcbm.bottleneck.cxr import notes_prior

    bank = load_bank(default_bank_path("chest_xray", "covid"))
    prior = notes_prior(bank, ["covid", "other"])
    assert prior["covid"]["peripheral_distribution"] == 1  # bilateral peripheral opacities -> COVID
    assert "peripheral_distribution" not in prior["other"]
    assert prior["other"]["air_bronchogram"] == 1 and "air_bronchogram" not in prior["covid"]
    assert prior["covid"]["consolidation"] == prior["other"]["consolidation"] == 1
    assert all(v in (-1, 1) for c in prior.values() for v in c.values())
    with pytest.raises(ConfigError, match="class map"):
        notes_prior(bank, ["covid", "bacterial"])


@pytest.fixture(scope="module")
def cxr_method_input(data_root, feature_cache):
    """One seed of covid-cxr-view-holdout, subsampled to keep feature extraction short."""
    from medcbm.backbones import get_backbone_spec
    from medcbm.backbones.features import extract_features
    from medcbm.data.manifest import SkipLog
    from medcbm.evaluation.methods import MethodInput
    from medcbm.evaluation.protocols import load_protocol
    from medcbm.evaluation.shift import load_protocol_manifest
    from medcbm.evaluation.splits import build_splits

    proto = load_protocol("covid-cxr-view-holdout")
    sp = build_splits(load_protocol_manifest(proto, data_root, SkipLog()), proto, 0)
    rng = np.random.default_rng(0)
    sizes = {"train": 100, "val": 30, "test_id": 15, "test_ood": 15}
    idx = {k: np.sort(rng.choice(sp.index[k], min(n, len(sp.index[k])), replace=False)) for k, n in sizes.items()}
    allidx = np.concatenate(list(idx.values()))
    feats = extract_features(sp.manifest.subset(allidx), get_backbone_spec(proto.backbone), cache_dir=feature_cache,
                             progress=False)
    row = {i: r for r, i in enumerate(allidx)}
    X = {k: feats.X[[row[i] for i in v]] for k, v in idx.items()}
    y = {k: sp.y[v] for k, v in idx.items()}
    frames = {k: sp.manifest.frame.iloc[v].reset_index(drop=True) for k, v in idx.items()}
    return MethodInput(X, y, frames, proto.classes, 0, {})


def test_cxr_cbm_reports_method(cxr_method_input):
    import copy

    from medcbm.bottleneck.cxr import cxr_cbm_reports, fit_cxr_cbm
    from medcbm.evaluation.methods import get_method, list_methods

    assert get_method("cxr_cbm_reports") is cxr_cbm_reports
    assert {"cxr_cbm_reports_noprior", "cxr_cbm_reports_nofilter"} <= set(list_methods())
    data = cxr_method_input
    small = {"n_components": 16, "max_iter": 60}  # the benchmark uses 64 / 150; smaller keeps the test short
    pca, cbm, out = fit_cxr_cbm(data, **small)
    for s in ("val", "test_id", "test_ood"):
        P = out.proba[s]
        assert P.shape == (len(data.y[s]), 2)
        np.testing.assert_allclose(P.sum(1), 1, rtol=1e-5)
    assert out.info["concepts"] == cbm.concept_names_ and set(out.info["concepts"]) <= set(out.info["cv_auc"])
    assert all(out.info["cv_auc"][c] >= 0.6 for c in out.info["concepts"])
    assert cbm.prior_ is not None and np.abs(cbm.prior_).sum() > 0
    # findings too rare in 100 notes are flagged, not silently dropped
    assert "pneumothorax" in out.info["flagged"]
    # test images are grounded from pixels only: their notes are never read
    blind = copy.copy(data)
    blind.frames = {**data.frames, **{s: data.frames[s].assign(clinical_notes="") for s in ("val", "test_id", "test_ood")}}
    np.testing.assert_allclose(fit_cxr_cbm(blind, **small)[2].proba["test_ood"], out.proba["test_ood"])
