"""The README's Python example, run as written on real HAM10000 images (only the file names, and the recipe for
speed, are substituted): at most four imports, and every call it makes returns what it promises."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"
FAST_RECIPE = 'recipe="cbm_ph2_only", overrides={"grounding": {"backbone": "efficientnet_lite0"}}'


def _example() -> str:
    m = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert m, "README lost its Python example"
    return m.group(1)


def test_the_readme_example_has_at_most_four_imports():
    code = _example()
    imports = [ln for ln in code.splitlines() if re.match(r"\s*(import|from)\s", ln)]
    assert 1 <= len(imports) <= 4, imports


def test_the_readme_example_runs(own_manifest, data_root, feature_cache, tmp_path, monkeypatch, capsys):
    path, df = own_manifest
    work = tmp_path / "work"
    (work / "runs" / "cache").mkdir(parents=True)
    (work / "runs" / "cache" / "features").symlink_to(feature_cache)  # the default cache_dir, shared with tests
    df.to_csv(work / "ours.csv", index=False)
    df[df["split"] == "test"].drop(columns=["label", "split"]).assign(label="unknown").to_csv(work / "new.csv",
                                                                                              index=False)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MEDCBM_DATA", str(data_root))
    code = _example().replace('recipe="cbm"', FAST_RECIPE)
    assert FAST_RECIPE in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code, on purpose
    out = capsys.readouterr().out
    model, pred, case = scope["model"], scope["pred"], scope["case"]
    n_new = int((df["split"] == "test").sum())
    assert len(pred) == n_new and {"in_scope", "scope_reason", "p_benign", "p_malignant"} <= set(pred.columns)
    assert pred["in_scope"].mean() >= 0.9  # HAM10000 images from the sites it trained on
    assert case.case == pred["id"].iloc[0] and case.predicted == pred["prediction"].iloc[0]
    assert len(case.top(3)) == 3 and case.case in out
    audit = json.loads((work / "runs" / "audit" / "ours" / "audit.json").read_text())
    assert len(audit["cases"]) == 5 and audit["data"]["scope"]["n"] == n_new
    assert scope["same"].classes == model.classes == ["benign", "malignant"]
    # an intervention moves the probabilities the way the concept's weight says, for every image
    flip = model.intervene("new.csv", {case.top(1)[0].concept: 1.0})
    off = model.intervene("new.csv", {case.top(1)[0].concept: 0.0})
    assert (flip["p_malignant"] != off["p_malignant"]).all()
    assert not any(str(work) in p.read_text() for p in (work / "runs" / "models" / "ours").glob("*.json"))
    assert os.path.isfile(work / "runs" / "models" / "ours" / "model.safetensors")
    assert isinstance(pred, pd.DataFrame)
