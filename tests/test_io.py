import json

import numpy as np

from medcbm._io import atomic_write_json


def test_json_files_stay_valid_with_nan_and_numpy(tmp_path):
    # e.g. the AUROC of a one-class subgroup is NaN; the file must still be strict JSON
    obj = {"auroc": float("nan"), "acc": np.float32(0.5), "ci": np.array([0.1, np.inf]), "n": np.int64(3),
           "per_site": [{"ece": float("-inf")}]}
    p = atomic_write_json(tmp_path / "m.json", obj)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auroc": None, "acc": 0.5, "ci": [0.1, None], "n": 3, "per_site": [{"ece": None}]}
