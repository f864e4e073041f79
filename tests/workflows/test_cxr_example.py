"""The chest X-ray example on the shared COVID-19 collection, as a new user runs it (#26): errors name the flag
to pass, unmapped labels stop training unless dropped on purpose, the audit scores the rows the model's label
map covers, and a model whose AUROC interval includes 0.5 is called no better than chance."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from medcbm.errors import DataError
from tests.test_cli import run_main

OLD_MAP = {"covid": ["COVID-19"], "other": ["Pneumonia", "No Finding"]}  # the example's map before #26


@pytest.fixture(scope="module")
def cxr_manifest(data_root, tmp_path_factory):
    """The imported collection (570 images, unmapped labels included), as a manifest file."""
    from medcbm.data.importers import import_dataset
    from medcbm.data.manifest import SkipLog

    frame = import_dataset("covid-cxr", data_root, skips=SkipLog()).absolute_frame()
    path = tmp_path_factory.mktemp("cxr") / "manifest.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _config(tmp_path, manifest, label_map, **data) -> object:
    from medcbm.workflows.config import load_train_config

    src = yaml.safe_load(open("configs/examples/chest-xray-reports.yaml"))
    src["data"].update({"manifest": str(manifest), "label_map": label_map, **data})
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(src))
    return p, load_train_config(p)


def test_import_error_names_the_cli_flag(data_root, tmp_path, capsys, monkeypatch):
    code, err = run_main(capsys, monkeypatch, "data", "import", "covid-cxr", "-o", tmp_path / "m.csv",
                         "--data-root", data_root)
    assert code != 0 and "listed more than once" in err and "--skip-bad" in err and "skip log" not in err
    code, err = run_main(capsys, monkeypatch, "data", "import", "covid-cxr", "-o", tmp_path / "m.csv",
                         "--data-root", data_root, "--skip-bad")
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "m.csv")) == 570
    assert len(json.loads((tmp_path / "m.skipped.json").read_text())) == 5


def test_missing_image_error_names_the_cli_flag(data_root, tmp_path):
    from medcbm.data.importers import import_covid_cxr

    folder = tmp_path / "covid-cxr"
    (folder / "images").mkdir(parents=True)
    meta = pd.read_csv(data_root / "covid-cxr" / "metadata.csv", dtype=str).drop_duplicates("filename").head(3)
    meta.to_csv(folder / "metadata.csv", index=False)  # no image files next to it
    with pytest.raises(DataError, match=r"pass --skip-bad .*manifest row 1, field 'image'"):
        import_covid_cxr(folder)


def test_the_example_label_map_covers_the_shared_data(data_root):
    """The documented example maps every finding of the collection; 'COVID-19, ARDS' is COVID-19."""
    from medcbm.data.importers import import_dataset
    from medcbm.data.manifest import SkipLog

    label_map = yaml.safe_load(open("configs/examples/chest-xray-reports.yaml"))["data"]["label_map"]
    assert "COVID-19, ARDS" in label_map["covid"]
    labels = import_dataset("covid-cxr", data_root, skips=SkipLog()).frame["label"]
    assert set(labels) <= {r for raws in label_map.values() for r in raws}


def test_unmapped_labels_stop_training_unless_dropped(cxr_manifest, tmp_path, caplog):
    from medcbm.workflows.data import training_data

    path, frame = cxr_manifest
    outside = frame["label"][~frame["label"].isin(OLD_MAP["covid"] + OLD_MAP["other"])]
    assert (outside == "COVID-19, ARDS").any()
    _, cfg = _config(tmp_path, path, OLD_MAP)
    with pytest.raises(DataError, match=r"rows have labels outside the label map \(.*'COVID-19, ARDS': \d+.*"
                                        r"drop_unmapped: true \(train: --drop-unmapped\)"):
        training_data(cfg.data)
    _, cfg = _config(tmp_path, path, OLD_MAP, drop_unmapped=True)
    with caplog.at_level(logging.WARNING, logger="medcbm.workflows.data"):
        data = training_data(cfg.data)
    dropped = data.provenance["dropped_unmapped"]
    assert sum(sum(c.values()) for c in dropped.values()) == len(outside)
    assert sum(len(m) for m in data.manifests.values()) == len(frame) - len(outside)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "dropped" in r.getMessage()]
    assert sum(int(re.search(r"dropped (\d+)", r.getMessage()).group(1)) for r in warned) == len(outside)


@pytest.fixture(scope="module")
def at_chance_model(cxr_manifest, feature_cache, tmp_path_factory):
    """``medcbm train`` on the subset with the old map and --drop-unmapped, as a user would; its output."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("model")
    path, _ = cxr_manifest
    cfg, _ = _config(tmp, path, OLD_MAP)
    out = tmp / "models" / "old"
    src = yaml.safe_load(cfg.read_text())
    src["out_dir"] = str(out)
    cfg.write_text(yaml.safe_dump(src))
    r = subprocess.run([sys.executable, "-m", "medcbm.cli", "train", "-c", str(cfg), "--drop-unmapped",
                        "--cache-dir", str(feature_cache)], capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout + r.stderr


def test_train_output_calls_a_chance_model_so(at_chance_model):
    from medcbm.metrics import no_better_than_chance

    out, text = at_chance_model
    metrics = json.loads((out / "metrics.json").read_text())
    flagged = [s for s, m in metrics.items() if no_better_than_chance(m)]
    assert "test" in flagged  # the example's seeded split is at chance (AUROC interval includes 0.5)
    assert metrics["test"]["auroc_ci95"][0] <= 0.5
    assert re.search(r"test split: AUROC [\d.]+ \[95 % interval [\d.]+, [\d.]+\] includes 0.5: no better than "
                     r"chance", " ".join(text.split()))
    assert "WARNING" in text and "dropped" in text  # the drop the user opted into is counted at WARNING


def test_chance_judgement_is_not_made_for_a_model_that_separates(cxr_manifest):
    from medcbm.metrics import chance_sentence, split_metrics

    _, frame = cxr_manifest
    y = (frame["label"] == "COVID-19").to_numpy(int)
    good = np.eye(2)[y] * 0.8 + 0.1  # the real labels, ranked perfectly
    m = split_metrics(y, good, n_boot=200)
    assert m["auroc_ci95"][0] > 0.5 and m["no_better_than_chance"] is False and chance_sentence(m, "x") is None
    shuffled = good[np.random.default_rng(0).permutation(len(y))]
    assert split_metrics(y, shuffled, n_boot=200)["no_better_than_chance"] is True
    worse = split_metrics(y, good[:, ::-1], n_boot=200)  # ranked backwards: below chance is no better
    assert worse["no_better_than_chance"] is True and "lies below 0.5" in chance_sentence(worse, "x")


def test_audit_scores_the_mapped_rows_and_counts_the_rest(at_chance_model, cxr_manifest, feature_cache, tmp_path):
    from medcbm.audit.report import write_audit_report
    from medcbm.data.manifest import load_manifest

    out, _ = at_chance_model
    path, frame = cxr_manifest
    n_out = int((~frame["label"].isin(OLD_MAP["covid"] + OLD_MAP["other"])).sum())
    files = write_audit_report(out, load_manifest(path), tmp_path / "audit", max_cases=2, occlusion_cases=0,
                               cache_dir=feature_cache, progress=False)
    audit = json.loads(files["json"].read_text())
    assert audit["data"]["labelled"] is True
    assert audit["data"]["n_unmapped"] == n_out and audit["data"]["n_labelled"] == len(frame) - n_out
    assert audit["metrics"]["n"] == len(frame) - n_out
    assert any("test split at training" in n and "no better than chance" in n for n in audit["performance_notes"])
    card = files["model_card"].read_text()
    assert "no better than chance" in card
