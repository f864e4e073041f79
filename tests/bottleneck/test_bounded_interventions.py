"""The shipped recipe's head on real data: trained to convergence, bounded and faithful interventions.

The model is the shipped ``cbm`` recipe (its bottleneck, site offsets and balancing) with PH2 probes on global
EfficientNet-Lite0 features, fitted on seed 0 of ``ham10000-site-confounded`` (features cached by the other
bottleneck tests), so the checks run over every concept of a real model in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

FAST = {"grounding": {"backbone": "efficientnet_lite0", "sources": [{"kind": "annotations", "dataset": "ph2"}]}}


@pytest.fixture(scope="module")
def fitted(ham_manifest, ph2_manifest, data_root, feature_cache):
    from medcbm.benchmarks.bench_shift import load_protocol_data
    from medcbm.methods.cbm import load_method_recipe, run_recipe

    pdata = load_protocol_data("ham10000-site-confounded", seeds=[0], data_root=data_root, cache_dir=feature_cache,
                               progress=False)
    X, y, frames, data = pdata.seed_data(0)
    cfg = load_method_recipe("cbm").with_overrides(FAST)
    out = run_recipe(cfg, data)
    P_train = out.model.predict_concepts(X["train"], data.train.groups)
    return cfg, out, y, P_train, data


def test_the_head_is_trained_to_convergence_on_a_path(fitted):
    cfg, out, *_ = fitted
    info = out.model.fit_info_
    assert info["solver"] == "path" and info["converged"] and info["iterations"] > 0
    assert info["chosen"]["l2"] in cfg.bottleneck.path_grid and len(info["path"]) == len(cfg.bottleneck.path_grid)
    # the chosen strength is the path's best by the group-balanced criterion (ties to the stronger one)
    assert info["val_criterion"] == min(p["criterion"] for p in info["path"])
    spread = info["weight_spread"]
    assert spread["max_abs"] > spread["mean_abs"] > 0 and 0 <= spread["fraction_zero"] < 1
    json.dumps(info)  # it goes into model.json as is


def test_every_prior_concept_moves_the_prediction_the_prior_way(fitted):
    from medcbm.benchmarks.bench_interventions import single_concept_effects

    _, out, y, *_ = fitted
    model = out.model
    assert (model.W_ * model.prior_ >= 0).all(), "the sign constraint holds exactly"
    for split in ("test_id", "test_ood"):
        eff = single_concept_effects(model, out.concepts[split], y[split])
        with_prior = {k: r for k, r in eff["concepts"].items() if r["prior"] != 0}
        assert len(with_prior) >= 5
        assert all(r["prior_way"] == 1.0 for r in with_prior.values()), {k: r for k, r in with_prior.items()
                                                                         if r["prior_way"] < 1}
        # a concept the head uses moves (almost) every image strictly, not just "not against the prior"
        used = [k for j, k in enumerate(model.concept_names_) if k in with_prior and np.abs(model.W_[:, j]).max() > 1e-4]
        assert used and all(with_prior[k]["moved"] >= 0.8 for k in used)


def test_interventions_stay_inside_the_training_range(fitted):
    cfg, out, _, P_train, _ = fitted
    model = out.model
    q = cfg.bottleneck.clip_quantile
    np.testing.assert_allclose(model.p_lo_, np.clip(np.quantile(P_train, q, axis=0), 0, 1), atol=1e-5)
    np.testing.assert_allclose(model.p_hi_, np.clip(np.quantile(P_train, 1 - q, axis=0), 0, 1), atol=1e-5)
    assert (model.p_lo_ >= 0).all() and (model.p_hi_ <= 1).all() and (model.p_lo_ < model.p_hi_).all()
    Z_train = model.concept_inputs(P_train)
    z_lo, z_hi = Z_train.min(0), Z_train.max(0)
    P = out.concepts["test_ood"]
    for k in model.concept_names_:
        for v in (0.0, 1.0):
            Z = model.concept_inputs(model_set(P, model, k, v))
            assert (Z >= z_lo - 1e-6).all() and (Z <= z_hi + 1e-6).all(), (k, v)
    # "present" is read as the most present training saw, "absent" as the least
    for j, k in enumerate(model.concept_names_):
        np.testing.assert_allclose(model.intervene_concepts(P, {k: 1.0}),
                                   model.intervene_concepts(P, {k: float(model.p_hi_[j])}), rtol=1e-6)
        np.testing.assert_allclose(model.intervene_concepts(P, {k: 0.0}),
                                   model.predict_proba_from_concepts(model_set(P, model, k, float(model.p_lo_[j]))),
                                   rtol=1e-6)


def model_set(P: np.ndarray, model, concept: str, value: float) -> np.ndarray:
    Q = np.array(P, float, copy=True)
    Q[:, model.concept_names_.index(concept)] = value
    return Q


def test_prior_vote_is_registered_and_untrained(fitted):
    from medcbm.bottleneck.estimator import KnowledgeCBM
    from medcbm.methods.registry import list_methods

    cfg, out, y, _, data = fitted
    assert "prior_vote" in list_methods("ham10000")
    vote_cfg = cfg.bottleneck.model_copy(update={"solver": "prior_vote"})
    m = out.model
    vote = KnowledgeCBM(m.grounder, classes=m.classes, prior=m.prior_, config=vote_cfg,
                        concepts=m.concept_names_).fit(data.train.X, data.train.y, data.val.X, data.val.y)
    assert vote.fit_info_["epochs"] == 0 and np.all(vote.b_ == 0)
    np.testing.assert_allclose(np.sign(vote.W_), m.prior_)


def test_artifact_keeps_the_range_and_old_ones_load_unbounded(fitted, tmp_path, caplog):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from medcbm._io import sha256_file
    from medcbm.backbones import get_backbone_spec
    from medcbm.bottleneck.artifacts import load_cbm, save_cbm

    _, out, _, _, _ = fitted
    spec = get_backbone_spec("efficientnet_lite0")
    d = save_cbm(out.model, tmp_path / "model", backbone=spec)
    again, meta = load_cbm(d)
    np.testing.assert_array_equal(again.p_hi_, out.model.p_hi_)
    assert meta["fit_info"]["solver"] == "path" and again.config_.solver == "path"
    P = out.concepts["test_id"]
    np.testing.assert_allclose(again.intervene_concepts(P, {again.concept_names_[0]: 1.0}),
                               out.model.intervene_concepts(P, {again.concept_names_[0]: 1.0}), rtol=1e-6)
    # a model saved before the range (and the solver key) existed: loads, unbounded, and says so
    t = {k: v for k, v in load_file(str(d / "model.safetensors")).items() if k not in ("bottleneck.p_lo", "bottleneck.p_hi")}
    with safe_open(str(d / "model.safetensors"), framework="numpy") as fh:
        md = fh.metadata()
    save_file(t, str(d / "model.safetensors"), metadata=md)
    raw = json.loads((d / "model.json").read_text())
    raw["config"].pop("solver")
    raw["weights_sha256"] = sha256_file(d / "model.safetensors")
    (d / "model.json").write_text(json.dumps(raw))
    old, _ = load_cbm(d)
    assert not old.input_map_.bounded and old.config_.solver == "adam"
    assert "without a concept input range" in caplog.text


def test_model_card_reports_how_the_head_was_trained(fitted):
    from medcbm.audit.modelcard import head_training

    _, out, *_ = fitted
    line = head_training(out.model.fit_info_)
    assert "regularisation path" in line and f"L2 = {out.model.fit_info_['chosen']['l2']}" in line and "max |w|" in line
    assert head_training({"epochs": 4, "val_loss": 0.57}) == "Adam, early-stopped after 4 epoch(s)"
