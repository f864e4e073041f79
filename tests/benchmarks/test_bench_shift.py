"""The KnoBo finding on real data: a linear probe on confounded data is good in-domain, poor out of domain."""

import json

import pytest
import yaml

from medcbm.protocols import load_protocol
from medcbm.benchmarks.bench_shift import run_shift_benchmark


@pytest.fixture(scope="module")
def small_protocol(tmp_path_factory):
    # a smaller copy of the reference protocol: a new protocol is data, not code
    raw = load_protocol("ham10000-site-confounded").model_dump()
    raw["name"] = "ham-small"
    raw["split"]["sizes"] = {"train": 300, "val": 100, "test_id": 100, "test_ood": 100}
    raw["split"]["ratio"] = 0.95
    p = tmp_path_factory.mktemp("proto") / "ham-small.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_linear_probe_collapses_out_of_domain(small_protocol, data_root, feature_cache, tmp_path):
    res = run_shift_benchmark(small_protocol, methods=["linear_probe"], seeds=[0, 1], data_root=data_root,
                              cache_dir=feature_cache, out_dir=tmp_path, progress=False, n_boot=100)
    lp = res["methods"]["linear_probe"]
    assert lp["id_acc"]["mean"] > 0.75
    assert lp["gap"]["mean"] > 0.2, f"expected a large ID-OOD gap, got {lp}"
    assert len(lp["id_acc"]["per_seed"]) == 2
    rec = res["per_seed"]["linear_probe"][0]
    assert set(rec["test_ood"]["subgroups"]["site"]) == {"rosendahl", "vidir_modern", "vidir_molemax"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["methods"]["linear_probe"]["gap"]["mean"] == pytest.approx(lp["gap"]["mean"])
    assert "| linear_probe |" in (tmp_path / "metrics.md").read_text()
    assert (tmp_path / "manifest.csv").is_file() and (tmp_path / "splits.json").is_file()


def test_predictions_parquet_and_label_safety(small_protocol, data_root, feature_cache, tmp_path):
    """Every run writes per-sample predictions; no method can reach a test label (they are never handed over)."""
    import numpy as np
    import pandas as pd

    from medcbm.data.samples import UNLABELLED_COLUMNS, LabelledSplit, UnlabelledSplit
    from medcbm.methods import METHODS
    from medcbm.methods.linear_probe import linear_probe

    seen = []

    def spy(data):
        seen.append(data)
        return linear_probe(data)

    METHODS.add("spy_for_test", spy)
    try:
        res = run_shift_benchmark(small_protocol, methods=["spy_for_test"], seeds=[0], data_root=data_root,
                                  cache_dir=feature_cache, out_dir=tmp_path, progress=False, n_boot=10,
                                  predictions_path=tmp_path / "preds.parquet")
    finally:
        METHODS.remove("spy_for_test")
    data = seen[0]
    assert isinstance(data.train, LabelledSplit) and isinstance(data.val, LabelledSplit)
    assert set(data.test) == {"test_id", "test_ood"}
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    for name, split in data.test.items():
        assert isinstance(split, UnlabelledSplit) and not hasattr(split, "y")
        assert set(split.frame.columns) <= set(UNLABELLED_COLUMNS)
        # nothing in the whole input equals the test labels, raw or as class indices
        truth = manifest.set_index("id").loc[split.frame["id"], ["label", "malignant", "dx_type"]]
        for value in _walk(data):
            if isinstance(value, np.ndarray) and value.shape == (len(truth),):
                assert not np.array_equal(value.astype(str), truth["malignant"].astype(str).to_numpy())
            if isinstance(value, pd.DataFrame):
                for col in value.columns:
                    if len(value) == len(truth):
                        for t in truth.columns:
                            assert not np.array_equal(value[col].astype(str).to_numpy(), truth[t].astype(str).to_numpy())
    assert "spy_for_test" in res["methods"]
    preds = pd.read_parquet(tmp_path / "preds.parquet")
    assert pd.read_parquet(tmp_path / "predictions.parquet").equals(preds)
    assert list(preds.columns[:4]) == ["id", "seed", "split", "method"]
    assert {"p_benign", "p_malignant"} <= set(preds.columns)
    assert preds.groupby("split").size().to_dict() == {"val": 100, "test_id": 100, "test_ood": 100}
    np.testing.assert_allclose(preds[["p_benign", "p_malignant"]].sum(axis=1), 1, rtol=1e-6)
    # the harness scored exactly these probabilities
    ood = preds[preds.split == "test_ood"]
    y = manifest.set_index("id").loc[ood["id"], "malignant"].to_numpy()
    acc = ((ood["p_malignant"] > ood["p_benign"]).to_numpy().astype(int) == y).mean()
    assert acc == pytest.approx(res["methods"]["spy_for_test"]["ood_acc"]["mean"])


def _walk(obj, depth=0):
    """Every DataFrame, array and scalar reachable from a dataclass/dict tree."""
    import dataclasses

    if depth > 6:
        return
    yield obj
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v, depth + 1)
