"""Fitted concept probes are cached by content: the same inputs load the same probes, any change refits."""

import numpy as np

from medcbm.bottleneck.probe_cache import load_probes, probe_key, save_probes
from medcbm.concepts.grounding.probes import ConceptProbes


def test_probes_roundtrip_through_the_cache_and_keys_follow_the_inputs(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 8))
    C = (X[:, :3] > 0).astype(float)
    C[::7, 1] = np.nan  # a dataset that does not annotate every concept
    names = ["a", "b", "c"]
    key = probe_key("settings", X, C, names)
    assert load_probes(tmp_path, key) is None and load_probes(None, key) is None
    fitted = ConceptProbes(C_grid=(0.1, 1.0), n_folds=3).fit(X, C, names)
    save_probes(tmp_path, key, fitted)
    again = load_probes(tmp_path, key)
    np.testing.assert_array_equal(again.predict_concepts(X), fitted.predict_concepts(X))
    assert again.cv_auc_ == fitted.cv_auc_ and again.concept_names_ == fitted.concept_names_
    C2 = C.copy()
    C2[0, 0] = 1 - C2[0, 0]
    assert len({key, probe_key("settings", X, C2, names), probe_key("other", X, C, names),
                probe_key("settings", X + 1e-9, C, names), probe_key("settings", X, C, ["a", "b", "d"])}) == 5
    (tmp_path / "probes" / f"{key}.json").write_text("{torn")
    assert load_probes(tmp_path, key) is None  # a torn entry is refitted, not trusted
