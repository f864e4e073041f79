"""The default ``site`` adapter, its gain estimate and the label-shift pieces, on the toy CBM (fast, synthetic)."""

import numpy as np
import pytest
from sklearn.base import clone

from medcbm.adapt import ConceptEdit, create_adapter
from medcbm.adapt.estimate import paired_gain
from medcbm.adapt.label_shift import em_prevalence, source_prior
from medcbm.errors import ConfigError, DataError
from tests.adapt.test_adapters import ToyCBM, bal_acc, new_site


def drifted_site(n_per_class: int, seed: int, drift: float = 0.12):
    """Every concept reads ``drift`` higher at this site (a brighter camera): the model calls too much malignant."""
    P, y = new_site(n_per_class, seed)
    P[:, 0] = np.where(y == 1, 0.6, 0.4) + np.random.default_rng(seed).normal(0, 0.05, len(y))  # no artefact here
    return np.clip(P + drift, 0, 1), y


def test_em_recovers_a_known_prevalence_from_calibrated_posteriors():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(int)  # 20 % malignant at the new site
    # calibrated under a 50/50 prior: likelihood ratio of a unit-variance shift of 1.5
    x = rng.normal(1.5 * y, 1.0)
    lr = np.exp(1.5 * x - 1.125)
    proba = np.c_[1 / (1 + lr), lr / (1 + lr)]
    pi = em_prevalence(proba, np.array([0.5, 0.5]))
    assert abs(pi[1] - 0.2) < 0.03
    assert np.allclose(source_prior(ToyCBM()), [0.5, 0.5])


def test_recentring_on_unlabelled_images_alone_fixes_a_site_drift():
    model = ToyCBM()
    P_unl, _ = drifted_site(150, 1)
    Pq, yq = drifted_site(300, 2)
    default = create_adapter("site", model).fit_concepts(np.zeros((0, 6)), [], P_unlabelled=P_unl)
    assert not default.edit_.changed(ConceptEdit.identity(model)) and "re-centred" not in default.reason_
    base = bal_acc(default.predict_proba(Pq), yq)
    a = create_adapter("recentre", model).fit_concepts(np.zeros((0, 6)), [], P_unlabelled=P_unl)
    assert a.estimate_ is None and "cannot be estimated" in a.reason_ and "re-centred on 300" in a.reason_
    assert bal_acc(a.predict_proba(Pq), yq) > base + 0.1
    assert a.site_.n == 300 and a.site_.prevalence.shape == (2,)


def test_site_adapter_contract_and_honest_estimate():
    model = ToyCBM()
    W = model.W_.copy()
    P, y = drifted_site(4, 3)
    P_unl, _ = drifted_site(100, 4)
    a = create_adapter("site", model)
    params = a.get_params()
    assert a.fit(P, y, X_unlabelled=P_unl) is a
    assert a.get_params() == params and clone(a).get_params().keys() == params.keys()
    assert np.array_equal(model.W_, W)
    est = a.estimate_
    assert est.n == 8 and est.ci95[0] <= est.gain <= est.ci95[1] and est.ci95[1] - est.ci95[0] > 0.2
    assert "estimated gain" in a.reason_ and est.verdict in ("gain", "cannot tell", "loss")
    if not a.adopted_:  # the labelled proposal was not kept: the edit is the re-centring alone
        assert np.allclose(a.edit_.scale, 1) and np.allclose(a.edit_.W, model.W_)
    doc = a.evidence()
    assert doc["estimate"]["n"] == 8 and doc["unlabelled"]["n_site_images"] == 208  # 8 labelled + 200 unlabelled


def test_labelled_change_is_kept_only_when_the_nested_estimate_shows_it():
    model = ToyCBM()
    P, y = new_site(16, 1)  # the artefact concept is reversed here: masking it helps a lot
    Pq, yq = new_site(300, 2)
    a = create_adapter("site", model).fit_concepts(P, y)
    assert a.proposal_ is not None and a.nested_ is not None
    assert a.adopted_ and a.nested_.verdict == "gain" and a.estimate_.measured_on.startswith("support, nested")
    unadapted = create_adapter("site", model, adapters=()).fit_concepts(P, y)
    assert bal_acc(a.predict_proba(Pq), yq) > bal_acc(unadapted.predict_proba(Pq), yq) + 0.05
    # with two images per class nothing can be told: the model keeps the safe default and says so
    small = create_adapter("site", model).fit_concepts(P[[0, 1, 16, 17]], y[[0, 1, 16, 17]])
    assert not small.adopted_ and not small.edit_.changed(ConceptEdit.identity(model))


def test_paired_gain_interval_is_wide_on_few_images_and_tight_on_many():
    y = np.repeat([0, 1], 4)
    same = np.ones(8, bool)
    few = paired_gain(y, same, same, measured_on="support")
    assert few.gain == 0 and few.ci95[0] < -0.1 < 0.1 < few.ci95[1] and few.verdict == "cannot tell"
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 500)
    base = rng.random(1000) < 0.6
    new = base | (rng.random(1000) < 0.25)  # the new model fixes a quarter of the errors, breaks nothing
    many = paired_gain(y, base, new, measured_on="query")
    assert many.verdict == "gain" and many.ci95[1] - many.ci95[0] < 0.06
    assert abs(many.gain - (new.mean() - base.mean())) < 0.01


def test_site_adapter_errors():
    model = ToyCBM()
    with pytest.raises(DataError, match="needs images of the new site"):
        create_adapter("site", model).fit_concepts(np.zeros((0, 6)), [])
    with pytest.raises(ConfigError, match="prevalence 'guess' is not one of"):
        create_adapter("site", model, prevalence="guess").fit_concepts(*new_site(4, 0))
    with pytest.raises(DataError, match="single class"):
        create_adapter("site", model).fit_concepts(*[a[:4] for a in new_site(4, 0)])


def test_recalibrated_tfti_corrects_the_drift_before_masking():
    model = ToyCBM()
    P, y = drifted_site(8, 5)
    Pq, yq = drifted_site(300, 6)
    a = create_adapter("recalibrate_tfti", model, n_mask=(0,), n_amplify=(0,), guard=False).fit_concepts(P, y)
    assert a.selection_.params == {"n_mask": 0, "n_amplify": 0, "factor": 1.0}  # recalibration alone
    assert np.all(a.edit_.shift < 0) and np.allclose(a.edit_.scale, 1)  # every concept read lower again
    unadapted = create_adapter("site", model, adapters=()).fit_concepts(P, y)
    assert bal_acc(a.predict_proba(Pq), yq) > bal_acc(unadapted.predict_proba(Pq), yq) + 0.1
