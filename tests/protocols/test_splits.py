import numpy as np
import pytest
import yaml

from medcbm.data.importers import import_dataset
from medcbm.data.manifest import SkipLog
from medcbm.errors import ConfigError, RegistryError
from medcbm.protocols import load_protocol
from medcbm.protocols import build_splits


@pytest.fixture(scope="module")
def proto():
    return load_protocol("ham10000-site-confounded")


def _rosendahl_share(split, name, cls):
    f = split.manifest.frame.iloc[split.index[name]]
    y = split.y[split.index[name]]
    return float((f["site"][y == cls] == "rosendahl").mean())


def test_confounded_split_matches_the_protocol(ham_manifest, proto):
    s = build_splits(ham_manifest, proto, seed=0)
    assert s.counts() == {"train": {"benign": 300, "malignant": 300}, "val": {"benign": 100, "malignant": 100},
                          "test_id": {"benign": 100, "malignant": 100}, "test_ood": {"benign": 100, "malignant": 100}}
    mal, ben = proto.classes.index("malignant"), proto.classes.index("benign")
    for name in ("train", "val", "test_id"):
        assert _rosendahl_share(s, name, mal) == pytest.approx(0.9)
        assert _rosendahl_share(s, name, ben) == pytest.approx(0.1)
    assert _rosendahl_share(s, "test_ood", mal) == pytest.approx(0.1)
    assert _rosendahl_share(s, "test_ood", ben) == pytest.approx(0.9)
    pats = [set(s.manifest.frame["patient_id"].iloc[v]) for v in s.index.values()]
    assert all(not (a & b) for i, a in enumerate(pats) for b in pats[i + 1 :]), "lesions must be disjoint"
    # raw labels follow the mapping
    raw = s.manifest.frame["label"].iloc[s.index["train"]]
    assert set(raw[s.y[s.index["train"]] == mal]) <= {"mel", "bcc", "akiec"}


def test_seeds_are_deterministic_and_distinct(ham_manifest, proto):
    a, b, c = (build_splits(ham_manifest, proto, seed=k) for k in (0, 0, 1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_impossible_sizes_name_the_key(ham_manifest, proto, tmp_path):
    raw = proto.model_dump()
    raw["split"]["sizes"]["train"] = 5000
    p = tmp_path / "big.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"split.sizes.train: needs \d+ 'malignant' images from group 'rosendahl' but only 526"):
        build_splits(ham_manifest, load_protocol(p), 0)


def test_protocol_validation_names_the_bad_key(tmp_path, proto):
    raw = proto.model_dump()
    raw["split"]["bias"]["malignant"] = "vienna"
    raw["split"]["ratio"] = 1.7
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    assert "split.confounded.ratio" in str(e.value)
    raw = proto.model_dump()
    raw["lable_map"] = raw.pop("label_map")
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match="lable_map"):
        load_protocol(p)
    with pytest.raises(RegistryError, match="Available: .*ham10000-site-confounded"):
        load_protocol("no-such-protocol")


def test_view_holdout_on_chest_xrays(data_root):
    proto = load_protocol("covid-cxr-view-holdout")
    m = import_dataset("covid-cxr", data_root, skips=SkipLog())
    s = build_splits(m, proto, 0)
    f = s.manifest.frame
    assert set(f["view"].iloc[s.index["test_ood"]]) == {"AP", "AP Supine"}
    assert set(f["view"].iloc[np.concatenate([s.index[k] for k in ("train", "val", "test_id")])]) == {"PA"}
    ood_pats = set(f["patient_id"].iloc[s.index["test_ood"]])
    assert not ood_pats & set(f["patient_id"].iloc[s.index["train"]])
