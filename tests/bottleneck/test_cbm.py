import numpy as np
import pytest

from medcbm.backbones import get_backbone_spec
from medcbm.bottleneck import BottleneckConfig, KnowledgeCBM
from medcbm.bottleneck.artifacts import load_cbm, save_cbm
from medcbm.bottleneck.priors import bank_prior
from medcbm.bottleneck.weights import group_balance_weights
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.concepts.schema import default_bank_path, load_bank
from medcbm.errors import ConfigError, DataError
from medcbm.protocols import build_splits, load_protocol, nuisance_groups


@pytest.fixture(scope="module")
def setup(ph2_features, ham_manifest, feature_cache):
    from medcbm.backbones.features import extract_features

    X, C, names = ph2_features
    probes = ConceptProbes(C_grid=(1e-3, 1e-2, 0.1), n_folds=3).fit(X, C, names)
    sp = build_splits(ham_manifest, load_protocol("ham10000-site-confounded"), seed=0)
    feats = {k: extract_features(sp.manifest.subset(v), "efficientnet_lite0", cache_dir=feature_cache, progress=False).X
             for k, v in sp.index.items()}
    y = {k: sp.y[v] for k, v in sp.index.items()}
    proto = load_protocol("ham10000-site-confounded")
    sites = {k: nuisance_groups(proto, sp.manifest.frame.iloc[v]) for k, v in sp.index.items()}
    prior = bank_prior(load_bank(default_bank_path("dermoscopy", "benign_malignant")), sp.classes)[0]
    return probes, feats, y, sites, sp.classes, prior


def test_bank_prior_maps_onto_ph2_concepts(setup):
    prior = setup[5]
    assert prior["malignant"]["asymmetry"] == 1 and prior["benign"]["asymmetry"] == -1
    assert all(v in (-1, 0, 1) for c in prior.values() for v in c.values())


def test_expert_prior_file_is_complete_and_referenced(tmp_path):
    from medcbm.bottleneck.priors import load_prior_file, shipped_prior_file
    from medcbm.data.ph2_vocab import PH2_CONCEPTS, PH2_PATTERN_CONCEPTS

    prior, refs = load_prior_file(shipped_prior_file("ph2"))
    vocab = set(PH2_CONCEPTS) | set(PH2_PATTERN_CONCEPTS)
    assert set(prior["malignant"]) == vocab and set(refs) == vocab
    assert prior["malignant"]["blue_whitish_veil"] == 1 and prior["benign"]["blue_whitish_veil"] == -1
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [benign, malignant]\nmalignant:\n  streaks: {prior: 2, reference: x}\n")
    with pytest.raises(ConfigError, match="malignant.streaks.prior must be -1, 0 or 1"):
        load_prior_file(bad)
    bad.write_text("classes: [benign, malignant\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_prior_file(bad)


def test_cbm_narrows_the_confounding_gap(setup):
    from medcbm.methods.linear_probe import LinearProbe

    probes, X, y, sites, classes, prior = setup
    lp = LinearProbe().fit(X["train"], y["train"], X["val"], y["val"])
    lp_gap = (lp.predict(X["test_id"]) == y["test_id"]).mean() - (lp.predict(X["test_ood"]) == y["test_ood"]).mean()
    m = KnowledgeCBM(probes, classes=classes, prior=prior).fit(
        X["train"], y["train"], X["val"], y["val"],
        sample_weight=group_balance_weights(y["train"], sites["train"]), val_weight=group_balance_weights(y["val"], sites["val"]))
    gap = m.score(X["test_id"], y["test_id"]) - m.score(X["test_ood"], y["test_ood"])
    assert m.score(X["test_id"], y["test_id"]) > 0.6
    assert gap < lp_gap - 0.1, (gap, lp_gap)
    P = m.predict_concepts(X["test_ood"])
    assert P.shape == (200, len(m.concept_names_))
    contrib = m.contributions(X["test_ood"][:5])
    logits = m.decision_function_from_concepts(P[:5])
    np.testing.assert_allclose(contrib.sum(2) + m.b_, logits, rtol=1e-4, atol=1e-4)


def test_strong_prior_pins_weight_signs(setup):
    probes, X, y, _, classes, prior = setup
    m = KnowledgeCBM(probes, classes=classes, prior=prior, config=BottleneckConfig(prior_weight=50.0)).fit(
        X["train"], y["train"], X["val"], y["val"])
    P = m.prior_
    nz = P != 0
    assert nz.sum() >= 6
    assert (np.sign(m.W_[nz]) == P[nz]).mean() > 0.9


def test_sign_constraint_never_contradicts_the_prior(setup):
    probes, X, y, _, classes, prior = setup
    free = KnowledgeCBM(probes, classes=classes, prior=prior, config=BottleneckConfig(prior_weight=0.0)).fit(
        X["train"], y["train"], X["val"], y["val"])
    nz = free.prior_ != 0
    assert (free.W_[nz] * free.prior_[nz] < -1e-3).any(), "without a prior some weights contradict it"
    cfg = BottleneckConfig(prior_weight=0.0, sign_constraint=True)
    m = KnowledgeCBM(probes, classes=classes, prior=prior, config=cfg).fit(X["train"], y["train"], X["val"], y["val"])
    assert (m.W_ * m.prior_ >= 0).all()
    assert np.abs(m.W_).sum() > 0.1 and m.score(X["test_id"], y["test_id"]) > 0.55


def test_fit_never_changes_parameters(setup):
    """scikit-learn's contract: effective settings go to attributes ending in ``_``; get/set_params round-trip."""
    from sklearn.base import clone

    probes, X, y, _, classes, prior = setup
    cfg = BottleneckConfig(class_balanced=False)
    m = KnowledgeCBM(probes, classes=classes, prior=prior, config=cfg)
    before = m.get_params()
    skewed = np.r_[np.zeros(len(y["train"]) - 3, int), np.ones(3, int)]  # < 2 % positives: balanced loss kicks in
    m.fit(X["train"], skewed, X["val"], y["val"])
    assert m.get_params() == before and m.config is cfg and cfg.class_balanced is False
    assert m.config_.class_balanced is True
    assert clone(m).get_params()["config"] == cfg
    assert m.set_params(concepts=["asymmetry"]) is m and m.concepts == ["asymmetry"]


def test_bad_inputs(setup):
    probes, X, y, _, classes, prior = setup
    with pytest.raises(ConfigError, match=r"prior references unknown classes \['melanoma'\]"):
        KnowledgeCBM(probes, classes=classes, prior={"melanoma": {"asymmetry": 1}}).fit(X["train"], y["train"], X["val"], y["val"])
    with pytest.raises(DataError, match="single class"):
        KnowledgeCBM(probes, classes=classes).fit(X["train"], np.zeros_like(y["train"]), X["val"], y["val"])
    with pytest.raises(ConfigError, match="not produced by the grounder"):
        KnowledgeCBM(probes, classes=classes, concepts=["hairpin_vessels"]).fit(X["train"], y["train"], X["val"], y["val"])


def test_artifact_roundtrip_and_refusals(setup, tmp_path):
    probes, X, y, _, classes, prior = setup
    m = KnowledgeCBM(probes, classes=classes, prior=prior).fit(X["train"], y["train"], X["val"], y["val"])
    spec = get_backbone_spec("efficientnet_lite0")
    save_cbm(m, tmp_path / "model", backbone=spec, provenance={"split_hash": "abc"})
    again, meta = load_cbm(tmp_path / "model", expect_backbone=spec)
    np.testing.assert_allclose(again.predict_proba(X["test_ood"]), m.predict_proba(X["test_ood"]), rtol=1e-5)
    assert meta["provenance"]["split_hash"] == "abc" and meta["concepts"] == m.concept_names_
    with pytest.raises(ConfigError, match="trained on backbone 'efficientnet_lite0'"):
        load_cbm(tmp_path / "model", expect_backbone=get_backbone_spec("timm:test_vit"))
    with pytest.raises(ConfigError, match="given concept bank has"):
        load_cbm(tmp_path / "model", expect_concepts=["asymmetry"])
    raw = bytearray((tmp_path / "model" / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "model" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum"):
        load_cbm(tmp_path / "model")


def test_concept_offsets_remove_a_site_shift():
    """A concept that reads +0.3 at one site for both classes loses that offset; unknown sites stay as they are."""
    from medcbm.bottleneck.nuisance import ConceptOffsets

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    g = np.where(rng.random(200) < np.where(y == 1, 0.9, 0.1), "a", "b")  # site tied to the class
    P = np.c_[0.2 + 0.4 * y + 0.3 * (g == "a") + rng.normal(0, 0.02, 200), 0.5 + rng.normal(0, 0.02, 200)]
    off = ConceptOffsets.fit(P, y, g)
    assert off.groups == ["a", "b"]
    np.testing.assert_allclose(off.offsets[0, 0] - off.offsets[1, 0], 0.3, atol=0.02)
    Q = off.apply(P, g)
    within = [Q[(y == c) & (g == "a"), 0].mean() - Q[(y == c) & (g == "b"), 0].mean() for c in (0, 1)]
    assert np.abs(within).max() < 0.02  # the site no longer moves the concept within a class
    assert abs((Q[y == 1, 0].mean() - Q[y == 0, 0].mean()) - 0.4) < 0.05  # the class signal stays
    np.testing.assert_array_equal(off.apply(P, np.full(200, "c")), P)
    np.testing.assert_array_equal(off.apply(P, None), P)


def test_nuisance_adjusted_cbm_roundtrip(setup, tmp_path):
    probes, X, y, sites, classes, prior = setup
    m = KnowledgeCBM(probes, classes=classes, prior=prior, nuisance_adjust=True)
    with pytest.raises(ConfigError, match="nuisance groups"):
        m.fit(X["train"], y["train"], X["val"], y["val"])
    m.fit(X["train"], y["train"], X["val"], y["val"], groups=sites["train"], val_groups=sites["val"])
    assert m.offsets_ is not None and set(m.offsets_.groups) == {"rosendahl", "vidir"}
    adj, raw = m.predict_proba(X["test_ood"], sites["test_ood"]), m.predict_proba(X["test_ood"], "unknown")
    assert not np.allclose(adj, raw)
    with pytest.raises(ConfigError, match="adjusts concepts per site"):  # no groups: refused, not guessed
        m.predict_proba(X["test_ood"])
    save_cbm(m, tmp_path / "model", backbone=get_backbone_spec("efficientnet_lite0"))
    again, meta = load_cbm(tmp_path / "model")
    assert meta["offset_groups"] == m.offsets_.groups
    np.testing.assert_allclose(again.predict_proba(X["test_ood"], sites["test_ood"]), adj, rtol=1e-5)
