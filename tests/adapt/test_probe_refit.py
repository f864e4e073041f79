"""``ProbeRefit`` on a synthetic site whose concept reads another feature than at the source (fast, real fits)."""

import numpy as np
import pytest

from medcbm.adapt.probe_refit import ProbeRefit, kernel_logistic_deviation
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.errors import ConfigError, DataError
from medcbm.metrics import concept_aurocs

D = 12


def source(n: int, seed: int):
    """Concept ``a`` is feature 0, concept ``b`` feature 2; malignant when either is present."""
    X = np.random.default_rng(seed).normal(size=(n, D))
    C = np.c_[X[:, 0] > 0, X[:, 2] > 0].astype(float)
    return X, C, (C.sum(1) > 0).astype(int)


def site(n: int, seed: int):
    """At the new site, concept ``a`` shows in feature 1 instead (the source probe reads it near chance)."""
    X = np.random.default_rng(seed).normal(size=(n, D))
    return X, np.c_[X[:, 1] > 0, X[:, 2] > 0].astype(float)


@pytest.fixture(scope="module")
def model():
    X, C, y = source(400, 0)
    probes = ConceptProbes(min_auc=0.6).fit(X, C, ["a", "b"])
    Xv, _, yv = source(100, 1)
    return KnowledgeCBM(probes, classes=["benign", "malignant"]).fit(X, y, Xv, yv)


def test_answers_that_disagree_with_the_probe_move_held_out_images_their_way(model):
    Xr, Tr = site(30, 2)
    Xh, Th = site(300, 3)
    R = Tr.copy()
    R[:, 1] = np.nan  # only concept a answered
    refit = ProbeRefit(model).fit(Xr, R)
    assert refit.concepts_ == ["a"] and refit.n_answered_.tolist() == [30, 0]
    P0, P1 = model.predict_concepts(Xh), refit.predict_concepts(Xh)
    before, after = concept_aurocs(Th, P0), concept_aurocs(Th, P1)
    assert before[0] < 0.65 and after[0] > before[0] + 0.15, (before, after)  # per image, not a shift
    assert np.array_equal(P1[:, 1], P0[:, 1])  # an unanswered concept keeps the source probe
    # the reviewed cases the source probe got wrong move towards their answers
    Pr0, Pr1 = model.predict_concepts(Xr)[:, 0], refit.predict_concepts(Xr)[:, 0]
    wrong = np.abs(Pr0 - Tr[:, 0]) > 0.5
    assert wrong.sum() >= 5 and np.mean(np.abs(Pr1 - Tr[:, 0])[wrong] < np.abs(Pr0 - Tr[:, 0])[wrong]) > 0.8
    assert np.abs(Pr1 - Tr[:, 0]).mean() < np.abs(Pr0 - Tr[:, 0]).mean()
    # a stronger weight on the reviewed cases moves them further
    strong = ProbeRefit(model, strength=10.0).fit(Xr, R).predict_concepts(Xr)[:, 0]
    assert np.abs(strong - Tr[:, 0]).mean() < np.abs(Pr1 - Tr[:, 0]).mean()


def test_zero_strength_or_no_answers_is_the_identity(model):
    Xr, Tr = site(20, 4)
    Xh, _ = site(50, 5)
    P0 = model.predict_concepts(Xh)
    for refit in (ProbeRefit(model, strength=0.0).fit(Xr, Tr), ProbeRefit(model).fit(Xr, np.full_like(Tr, np.nan))):
        assert refit.concepts_ == [] and not refit.delta_.any()
        assert np.array_equal(refit.predict_concepts(Xh), P0)
    u0, _ = ProbeRefit(model).source_logits(Xh)
    assert np.allclose(1 / (1 + np.exp(-u0)), P0, atol=1e-6)  # the logits are the model's own activations'


def test_bad_answers_and_strengths_are_refused(model):
    Xr, Tr = site(10, 6)
    with pytest.raises(DataError):
        ProbeRefit(model).fit(Xr, Tr * 0.5 + 0.25)
    with pytest.raises(DataError):
        ProbeRefit(model).fit(Xr, Tr[:, :1])
    with pytest.raises(ConfigError):
        ProbeRefit(model, strength=-1.0).fit(Xr, Tr)


def test_kernel_newton_reaches_the_penalised_optimum():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(15, 5))
    G, u0, t, lam = Z @ Z.T, rng.normal(size=15), (rng.random(15) < 0.5).astype(float), 0.7
    alpha = kernel_logistic_deviation(G, u0, t, lam)
    # the primal gradient in delta = Z' alpha vanishes: Z' (p - t) + lam delta = 0
    p = 1 / (1 + np.exp(-(u0 + G @ alpha)))
    assert np.abs(Z.T @ (p - t) + lam * Z.T @ alpha).max() < 1e-6
