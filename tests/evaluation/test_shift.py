"""The KnoBo finding on real data: a linear probe on confounded data is good in-domain, poor out of domain."""

import json

import pytest
import yaml

from medcbm.evaluation.protocols import load_protocol
from medcbm.evaluation.shift import run_shift_benchmark


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
