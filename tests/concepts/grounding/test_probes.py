import numpy as np
import pytest

from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.errors import DataError
from medcbm.benchmarks.bench_concepts import sklearn_loop_cv

SMALL = dict(C_grid=(1e-3, 1e-2, 0.1), n_folds=3)


@pytest.fixture(scope="module")
def probes(ph2_features):
    X, C, names = ph2_features
    return ConceptProbes(**SMALL).fit(X, C, names)


def test_ph2_probes_learn_the_dermoscopic_criteria(probes, ph2_features):
    auc = probes.cv_auc_
    assert np.mean(list(auc.values())) > 0.7
    for strong in ("blue_whitish_veil", "regression_areas", "pigment_network_atypical"):
        assert auc[strong] > 0.75, (strong, auc[strong])
    X, C, names = ph2_features
    P = probes.predict_concepts(X)
    assert P.shape == (200, len(probes.concept_names_)) and ((P > 0) & (P < 1)).all()
    # Platt calibration: predicted prevalence tracks the annotated prevalence
    for j, k in enumerate(probes.concept_names_):
        assert abs(P[:, j].mean() - C[:, names.index(k)].mean()) < 0.1, k


def test_batched_matches_the_sklearn_loop(ph2_features):
    X, C, names = ph2_features
    sub = [names.index(k) for k in ("blue_whitish_veil", "streaks", "color_black")]
    batched = ConceptProbes(**SMALL).fit(X, C[:, sub], [names[i] for i in sub])
    loop, _ = sklearn_loop_cv(X, C[:, sub], [names[i] for i in sub], **SMALL)
    for k, a in loop.items():
        assert abs(batched.cv_auc_[k] - a) < 0.01, (k, batched.cv_auc_[k], a)


def test_weak_and_single_class_concepts_are_flagged(ph2_features):
    X, C, names = ph2_features
    rng = np.random.default_rng(0)
    noise = (rng.random(len(X)) < 0.5).astype(float)[:, None]
    single = np.zeros((len(X), 1))
    with pytest.warns(UserWarning, match="'always_absent' has 0 positives"):
        p = ConceptProbes(**SMALL, min_auc=0.65).fit(X, np.hstack([C[:, :1], noise, single]),
                                                      [names[0], "coin_flip", "always_absent"])
    assert "always_absent" in p.flagged_ and "coin_flip" in p.flagged_
    assert p.concept_names_ == [names[0]]


def test_bad_inputs_have_clear_errors(probes, ph2_features):
    X, C, names = ph2_features
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinite values \(rows \[3\]"):
        probes.predict_concepts(bad)
    with pytest.raises(DataError, match="were they extracted with another backbone"):
        probes.predict_concepts(X[:, :100])
    with pytest.raises(DataError, match="must be 0/1"):
        ConceptProbes(**SMALL).fit(X, C * 2, names)


def test_state_roundtrip(probes, ph2_features):
    X = ph2_features[0]
    t, meta = probes.get_state()
    again = ConceptProbes.from_state(t, meta)
    np.testing.assert_allclose(again.predict_concepts(X), probes.predict_concepts(X), rtol=1e-6)


def test_auc_columns_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from medcbm.concepts.grounding.probes import auc_columns

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    S = np.round(rng.normal(size=(80, 4)) + y[:, None], 1)  # rounding creates ties
    np.testing.assert_allclose(auc_columns(y, S), [roc_auc_score(y, S[:, j]) for j in range(4)], atol=1e-12)
    assert np.isnan(auc_columns(np.zeros(5), np.arange(5.0))).all()
