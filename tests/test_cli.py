"""The CLI as a user runs it: real subprocesses, real data, clean errors."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest


def medcbm(*args, cwd=None, env=None):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medcbm.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=900)


def run_main(capsys, monkeypatch, *args) -> tuple[int, str]:
    """``medcbm ARGS`` through the console-script entry point in this process (no 15 s start-up per call):
    ``(exit code, stderr)``. An exception that ``main`` lets escape (a traceback for the user) fails the test."""
    from medcbm.cli import main

    monkeypatch.setattr(sys, "argv", ["medcbm", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_help_lists_the_commands():
    r = medcbm("--help")
    assert r.returncode == 0
    for cmd in ("quickstart", "bench", "data", "backbones", "protocols"):
        assert cmd in r.stdout


def test_data_import_writes_a_manifest(tmp_path, data_root):
    r = medcbm("data", "import", "ph2", "--out", tmp_path / "ph2.csv", "--data-root", data_root)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "ph2.csv")
    assert len(df) == 200 and "concept_blue_whitish_veil" in df.columns
    r = medcbm("data", "import", "covid-cxr", "--out", tmp_path / "cxr.csv", "--data-root", data_root, "--skip-bad")
    assert r.returncode == 0 and "5 rows skipped" in r.stdout
    assert len(json.loads((tmp_path / "cxr.skipped.json").read_text())) == 5


def test_errors_are_one_clear_line(tmp_path, data_root):
    r = medcbm("bench", "shift", "--protocol", "no-such-protocol", "--json", tmp_path / "x.json")
    assert r.returncode == 2 and "unknown protocol 'no-such-protocol'" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "m.csv").write_text("id,image,label\na,missing.jpg,nv\n")
    r = medcbm("data", "validate", tmp_path / "m.csv")
    assert r.returncode == 2 and "missing.jpg" in r.stderr and "manifest row 1" in r.stderr
    assert "Traceback" not in r.stderr
    r = medcbm("quickstart", "--data-root", tmp_path / "nowhere")
    assert r.returncode == 2 and "--data-root" in r.stderr


def test_train_evaluate_predict(tmp_path, data_root, feature_cache, ham_manifest, capsys, monkeypatch):
    """Training runs as a real subprocess; the later commands run through the same entry point in-process
    (each subprocess pays ~15 s of imports)."""
    cfg = tmp_path / "cbm.yaml"
    cfg.write_text(f"name: t\nout_dir: {tmp_path / 'model'}\ndata: {{protocol: ham10000-site-confounded}}\n"
                   "model: cbm\noverrides: {grounding: {sources: [{kind: annotations, dataset: ph2}]}}\n")
    env = {"MEDCBM_DATA": str(data_root)}
    r = medcbm("train", "-c", cfg, "--cache-dir", feature_cache, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    model = tmp_path / "model"
    meta = json.loads((model / "model.json").read_text())
    assert meta["recipe"]["prior_source"][0].endswith("ph2_benign_malignant.yaml")
    assert meta["provenance"]["data"]["source"] == {"kind": "protocol", "protocol": "ham10000-site-confounded"}
    assert any(link["question"].endswith("?") for link in meta["recipe"]["concept_links"]["blue_whitish_veil"])
    assert "melanoma_pattern" in meta["concepts"] and meta["backbone"]["name"] == "efficientnet_lite0_lesion_cc"
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["test_ood"]["acc"] > 0.55 and metrics["test_id"]["auroc"] > 0.65
    # a labelled manifest from another slice of HAM10000: raw dx labels map through the saved label map
    frame = ham_manifest.frame.iloc[::150].copy()
    frame["image"] = [str(ham_manifest.image_path(i)) for i in range(0, len(ham_manifest), 150)]
    frame.to_csv(tmp_path / "m.csv", index=False)
    code, err = run_main(capsys, monkeypatch, "evaluate", "--model", model, "--manifest", tmp_path / "m.csv", "--json",
                         tmp_path / "e.json", "--cache-dir", feature_cache)
    assert code == 0, err[-2000:]
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["n"] == len(frame) and 0.5 < ev["acc"] <= 1.0 and "site" in ev["subgroups"]
    code, err = run_main(capsys, monkeypatch, "predict", "--model", model, "--manifest", tmp_path / "m.csv", "--out",
                         tmp_path / "p.csv", "--cache-dir", feature_cache)
    assert code == 0, err[-2000:]
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == len(frame) and set(pred["prediction"]) <= {"benign", "malignant"}
    assert pred["top_concepts"].notna().all()
    # the same recipe on a user's own manifest, split automatically by patient, from command-line flags
    own = ham_manifest.frame.iloc[::40].copy()
    own["image"] = [str(ham_manifest.image_path(i)) for i in range(0, len(ham_manifest), 40)]
    own["label"] = own["malignant"].map({0: "benign", 1: "malignant"})
    own.to_csv(tmp_path / "own.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDCBM_DATA", str(data_root))
    code, err = run_main(capsys, monkeypatch, "train", "--manifest", tmp_path / "own.csv", "--split", "auto", "--name",
                         "own", "--model", "cbm_ph2_only", "--cache-dir", feature_cache)
    assert code == 0, err[-2000:]
    meta = json.loads((tmp_path / "runs" / "models" / "own" / "model.json").read_text())
    assert meta["classes"] == ["benign", "malignant"] and set(meta["provenance"]["metrics"]) == {"val", "test"}
    code, err = run_main(capsys, monkeypatch, "train", "--manifest", tmp_path / "own.csv", "--name", "own")
    assert code == 2 and "split: column" in err
    code, err = run_main(capsys, monkeypatch, "train", "-c", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml" in err
