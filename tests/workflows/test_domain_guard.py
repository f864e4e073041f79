"""The feature-distance domain guard on real images: a dermoscopy model trained on HAM10000 warns when given real
chest radiographs and DICOMs (predict, audit), and not when given HAM10000 images it never saw (predict,
evaluate). The warning names counts only."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from medcbm.adapt.store import load_model
from medcbm.audit.report import build_audit
from medcbm.backbones.features import extract_features
from medcbm.bottleneck.artifacts import backbone_from_meta
from medcbm.data.importers import import_dataset
from medcbm.data.manifest import SkipLog, load_manifest
from medcbm.workflows.train import evaluate_cbm, predict_cbm

WARNING = "look unlike the model's training data"
DICOMS = ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "693_UNCR.dcm")  # CR chest, CT, MR


def _csv(path, images, labels, ids):
    pd.DataFrame({"id": ids, "image": images, "label": labels}).to_csv(path, index=False)
    return load_manifest(path).check_files()


@pytest.fixture(scope="module")
def held_out(ham_manifest, ham_own, tmp_path_factory):
    """60 HAM10000 images from all three sites that the model never saw, labelled benign/malignant."""
    f = ham_manifest.frame
    rows = np.flatnonzero(~f["id"].isin(ham_own[1]["id"]).to_numpy())[::80][:60]
    labels = np.where(f["malignant"].to_numpy()[rows] == 1, "malignant", "benign")
    return _csv(tmp_path_factory.mktemp("held-out") / "m.csv", [str(ham_manifest.image_path(int(i))) for i in rows],
                labels, f["id"].iloc[rows].tolist())


@pytest.fixture(scope="module")
def radiographs(data_root, dicom_file, tmp_path_factory):
    """30 real chest radiographs (COVID-CXR) and 5 real DICOMs (CR chest, CT, MR) from pydicom-data."""
    cxr = import_dataset("covid-cxr", data_root, skips=SkipLog())
    images = [str(cxr.image_path(i)) for i in range(0, len(cxr), 19)][:30] + [dicom_file(n) for n in DICOMS]
    return _csv(tmp_path_factory.mktemp("cxr") / "m.csv", images, "no_finding",
                [f"case{i}" for i in range(len(images))])


def _guard_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


def test_the_artifact_summarises_its_training_features(audit_model, ham_own, feature_cache):
    meta = json.loads((audit_model / "model.json").read_text())
    summary = meta["feature_domain"]
    assert summary["n"] == 128 and summary["dim"] == 1280  # train + val rows, EfficientNet-Lite0 features
    assert 0 < summary["distances"]["p50"] < summary["threshold"] <= summary["distances"]["max"]
    model, meta = load_model(audit_model)
    train = load_manifest(ham_own[0])
    train = train.subset(np.flatnonzero(train.frame["split"].isin(["train", "val"]).to_numpy()))
    X = extract_features(train, backbone_from_meta(meta), cache_dir=feature_cache, progress=False).X
    assert (model.feature_domain_.scores(X) > 1).sum() <= 2  # the 99th percentile of the rows it summarises


def test_radiographs_through_a_dermoscopy_model_warn(audit_model, radiographs, feature_cache, caplog):
    with caplog.at_level(logging.WARNING):
        pred = predict_cbm(audit_model, radiographs, cache_dir=feature_cache, progress=False)
    warned = _guard_warnings(caplog)
    assert len(warned) == 1 and warned[0].startswith(f"{(pred['ood_score'] > 1).sum()} of 35 images")
    assert (pred["ood_score"] > 1).mean() > 0.8
    assert (pred["ood_score"].iloc[30:] > 1).all()  # every CR, CT and MR DICOM
    # shared logs: no case id, no file or folder name
    paths = radiographs.image_paths()
    secrets = set(radiographs.frame["id"]) | {p.name for p in paths} | {str(p.parent) for p in paths}
    assert not any(s in warned[0] for s in secrets) and "/" not in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_audit(audit_model, radiographs, cache_dir=feature_cache, thumbnails=False, occlusion_cases=0,
                    progress=False)
    assert len(_guard_warnings(caplog)) == 1


def test_held_out_dermoscopy_does_not_warn(audit_model, held_out, feature_cache, caplog):
    with caplog.at_level(logging.WARNING):
        pred = predict_cbm(audit_model, held_out, cache_dir=feature_cache, progress=False)
        res = evaluate_cbm(audit_model, held_out, cache_dir=feature_cache, progress=False)
    assert not _guard_warnings(caplog)
    assert (pred["ood_score"] > 1).mean() < 0.2 and pred["ood_score"].median() < 0.8
    assert res["n_unlike_training"] == int((pred["ood_score"] > 1).sum())
