import numpy as np
import pandas as pd
import pytest

from medcbm.metrics import (auroc, bootstrap_ci, expected_calibration_error, mean_std, shift_summary,
                                       split_metrics, subgroup_metrics)


def _proba(p1):
    p1 = np.asarray(p1, float)
    return np.stack([1 - p1, p1], 1)


def test_auroc_and_accuracy_on_known_cases():
    y = np.array([0, 0, 1, 1])
    assert auroc(y, _proba([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    m = split_metrics(y, _proba([0.1, 0.4, 0.35, 0.8]), n_boot=200)
    assert m["acc"] == pytest.approx(0.75) and m["balanced_acc"] == pytest.approx(0.75)
    assert m["acc_ci95"][0] <= 0.75 <= m["acc_ci95"][1]
    assert np.isnan(auroc(np.array([1, 1]), _proba([0.2, 0.9])))
    y3 = np.array([0, 1, 2, 2])
    p3 = np.eye(3)[[0, 1, 2, 2]] * 0.9 + 0.1 / 3
    assert auroc(y3, p3) == pytest.approx(1.0)


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)  # outcomes drawn with the stated confidence
    assert expected_calibration_error(y, _proba(p)) < 0.02
    assert expected_calibration_error(np.zeros(100, int), _proba(np.full(100, 0.99))) > 0.9


def test_bootstrap_interval_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small_y = rng.integers(0, 2, 50)
    big_y = rng.integers(0, 2, 2000)
    w_small = np.diff(bootstrap_ci(small_y, _proba(rng.uniform(size=50)), n=300))[0]
    w_big = np.diff(bootstrap_ci(big_y, _proba(rng.uniform(size=2000)), n=300))[0]
    assert w_big < w_small / 3


def test_shift_summary_subgroups_and_aggregation():
    s = shift_summary(np.array([1, 1]), _proba([0.9, 0.8]), np.array([1, 0]), _proba([0.2, 0.7]))
    assert s == {"id_acc": 1.0, "ood_acc": 0.0, "gap": 1.0, "avg": 0.5}
    frame = pd.DataFrame({"site": ["a", "a", "b"], "sex": ["M", "F", "F"], "age": [30.0, 70.0, float("nan")]})
    g = subgroup_metrics(np.array([1, 0, 1]), _proba([0.9, 0.8, 0.7]), frame)
    assert g["site"]["a"] == {"n": 2, "acc": 0.5, "balanced_acc": 0.5}
    assert set(g["age_band"]) == {"<40", "60+", "unknown"}
    assert mean_std([0.5, 0.7])["mean"] == pytest.approx(0.6)


def test_balanced_accuracy_matches_sklearn_without_warnings():
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from medcbm.metrics import balanced_accuracy

    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 3, 60), rng.dirichlet(np.ones(3), 60)
    assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a one-class subgroup predicted as two classes: no warning
        assert balanced_accuracy(np.array([1, 1, 1]), _proba([0.9, 0.2, 0.8])) == pytest.approx(2 / 3)
    assert np.isnan(balanced_accuracy(np.array([], int), np.zeros((0, 2))))
