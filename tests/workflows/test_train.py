"""``medcbm train`` on a user's own data: split column, automatic split, separate manifests; bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from medcbm.bottleneck.config import AnnotationSource, CBMConfig, ReportSource
from medcbm.bottleneck.grounders import GroundingContext, load_annotation_dataset, report_probes
from medcbm.data.manifest import Manifest
from medcbm.data.samples import LabelledSplit
from medcbm.errors import ConfigError, DataError
from medcbm.workflows.config import TrainConfig, load_train_config
from medcbm.workflows.data import training_data
from medcbm.workflows.train import train_cbm

FAST = {"grounding": {"backbone": "efficientnet_lite0"}}  # global features: cached by other tests, quick to fit


def test_train_on_a_manifest_with_a_split_column(own_manifest, data_root, feature_cache, tmp_path):
    path, df = own_manifest
    cfg = TrainConfig(name="own", out_dir=str(tmp_path / "model"),
                      data={"manifest": str(path), "split": "column"}, model="cbm_ph2_only", overrides=FAST)
    model, prov = train_cbm(cfg, data_root=data_root, cache_dir=feature_cache, progress=False)
    assert model.classes == ["benign", "malignant"]
    assert set(prov["metrics"]) == {"val", "test"} and prov["metrics"]["test"]["n"] == 32
    assert prov["metrics"]["test"]["auroc"] > 0.6
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["provenance"]["data"]["source"]["kind"] == "manifest, split: column"
    assert meta["provenance"]["data"]["counts"]["train"] == [48, 48]
    text = (tmp_path / "model" / "model.json").read_text()
    assert str(path) not in text and df["patient_id"].iloc[0] not in text  # hashes, not paths or patient ids
    assert meta["recipe"]["config"]["grounding"]["backbone"] == "efficientnet_lite0"
    assert meta["provenance"]["grounding"]["sources"] == {"ph2": model.grounder.all_concepts_}


def test_automatic_split_and_separate_manifests(own_manifest, tmp_path):
    path, df = own_manifest
    auto = training_data(TrainConfig(name="a", data={"manifest": str(path), "split": "auto", "seed": 3}).data)
    pats = {s: set(m.frame["patient_id"]) for s, m in auto.manifests.items()}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"])
    assert sum(len(m) for m in auto.manifests.values()) == len(df)
    again = training_data(TrainConfig(name="a", data={"manifest": str(path), "split": "auto", "seed": 3}).data)
    assert again.provenance["split_hash"] == auto.provenance["split_hash"]
    df[df.split == "train"].to_csv(tmp_path / "tr.csv", index=False)
    df[df.split == "val"].to_csv(tmp_path / "va.csv", index=False)
    sep = training_data(TrainConfig(name="s", data={"train_manifest": str(tmp_path / "tr.csv"),
                                                     "val_manifest": str(tmp_path / "va.csv")}).data)
    assert len(sep.manifests["train"]) == 96 and set(sep.manifests) == {"train", "val"}
    # relative paths in a config file resolve against the config's folder
    (tmp_path / "run.yaml").write_text("name: r\ndata: {train_manifest: tr.csv, val_manifest: va.csv}\n")
    assert load_train_config(tmp_path / "run.yaml").data.train_manifest == str(tmp_path / "tr.csv")


def test_bad_data_gets_one_clear_line(own_manifest, tmp_path):
    path, df = own_manifest
    with pytest.raises(ValidationError, match="split: column"):
        TrainConfig(name="x", data={"manifest": str(path)})
    df.drop(columns="split").to_csv(tmp_path / "nosplit.csv", index=False)
    with pytest.raises(DataError, match=r"no 'split' column.*split: auto"):
        training_data(TrainConfig(name="x", data={"manifest": str(tmp_path / "nosplit.csv"), "split": "column"}).data)
    df.assign(split=["training"] + list(df.split[1:])).to_csv(tmp_path / "badsplit.csv", index=False)
    with pytest.raises(DataError, match=r"'training' is not one of.*row 1.*split"):
        training_data(TrainConfig(name="x", data={"manifest": str(tmp_path / "badsplit.csv"), "split": "column"}).data)
    df[df.split == "train"].to_csv(tmp_path / "tr.csv", index=False)
    pd.concat([df[df.split == "val"], df[df.split == "train"].head(1)]).to_csv(tmp_path / "va.csv", index=False)
    with pytest.raises(DataError, match="in both the train and the val split"):
        training_data(TrainConfig(name="x", data={"train_manifest": str(tmp_path / "tr.csv"),
                                                   "val_manifest": str(tmp_path / "va.csv")}).data)


def test_bad_grounding_data(own_manifest, tmp_path, data_root):
    path, df = own_manifest
    ctx = GroundingContext(data_root=data_root)
    ann = df.assign(concept_veil=1, concept_dots=[0, 1] * 80, concept_streaks=["0", "2"] * 80)
    ann.to_csv(tmp_path / "ann.csv", index=False)
    with pytest.raises(DataError, match=r"all one value.*concept_veil"):
        load_annotation_dataset(AnnotationSource(dataset=str(tmp_path / "ann.csv")), ctx)
    with pytest.raises(DataError, match=r"0/1.*'2'.*row 2.*concept_streaks"):
        load_annotation_dataset(AnnotationSource(dataset=str(tmp_path / "ann.csv"), concepts=["streaks"]), ctx)
    with pytest.raises(ConfigError, match=r"concepts \['vessels'\] have no 'concept_<name>' column"):
        load_annotation_dataset(AnnotationSource(dataset=str(tmp_path / "ann.csv"), concepts=["vessels"]), ctx)
    m, names = load_annotation_dataset(AnnotationSource(dataset=str(tmp_path / "ann.csv"), concepts=["dots"]), ctx)
    assert names == ["dots"] and len(m) == 160
    frame = df.assign(notes="")
    split = LabelledSplit(np.zeros((160, 4), np.float32), np.r_[np.zeros(80, int), np.ones(80, int)], frame, "x")
    with pytest.raises(DataError, match="column 'notes' is empty for every training image"):
        report_probes(ReportSource(column="notes"), split, split.X, CBMConfig(), 0)
    with pytest.raises(DataError, match="no 'clinical_notes' column"):
        report_probes(ReportSource(), split, split.X, CBMConfig(), 0)


def test_bad_priors(tmp_path):
    from medcbm.bottleneck.priors import shipped_prior_file
    from medcbm.bottleneck.recipe import resolve_prior

    p = tmp_path / "prior.yaml"
    p.write_text("classes: [benign, cancer]\ncancer:\n  asymmetry: {prior: 1, reference: ABCD rule}\n")
    with pytest.raises(ConfigError, match=r"names classes \['cancer'\]"):
        resolve_prior(CBMConfig(prior=str(p)), ["benign", "malignant"])
    q = tmp_path / "other.yaml"
    q.write_text("classes: [benign, malignant]\nmalignant:\n  asymmetry: {prior: -1, reference: made up}\n")
    with pytest.raises(ConfigError, match="prior files disagree on (benign|malignant).asymmetry"):
        resolve_prior(CBMConfig(prior=[str(shipped_prior_file("ph2")), str(q)]), ["benign", "malignant"])
    reports = CBMConfig(grounding={"sources": [{"kind": "reports"}]}, prior="expert")
    with pytest.raises(ConfigError, match="for report or VLM sources use prior: bank"):
        resolve_prior(reports, ["covid", "other"])
    derm = CBMConfig(grounding={"sources": [{"kind": "annotations", "dataset": "ph2"}]}, prior="bank",
                     bank="chest_xray/covid", prior_class_map={"benign": ["no_finding"], "malignant": ["covid"]})
    with pytest.raises(ConfigError, match=r"no concept of bank .* is grounded to \['ph2:'\]"):
        resolve_prior(derm, ["benign", "malignant"])


@pytest.mark.parametrize("name", ["dermoscopy-own-folder", "chest-xray-reports", "dicom-folder"])
def test_example_configs_validate(name, tmp_path):
    """The README's example configs are valid, and files they name resolve against the config's folder."""
    import shutil

    from medcbm._resources import resource_path

    src = resource_path("configs", "examples", f"{name}.yaml")
    shutil.copy(src, tmp_path / src.name)
    for sub in ("our-derm", "our-cxr", "our-dicom"):
        (tmp_path / sub).mkdir()
        for f in ("manifest.csv", "annotations.csv", "prior.yaml"):
            (tmp_path / sub / f).write_text("")
    cfg = load_train_config(tmp_path / src.name)
    assert cfg.data.manifest.startswith(str(tmp_path))
    recipe = cfg.recipe()
    assert recipe.grounding.sources
    if name == "dicom-folder":
        assert recipe.prior == str(tmp_path / "our-dicom" / "prior.yaml")
        assert recipe.grounding.sources[0].dataset == str(tmp_path / "our-dicom" / "annotations.csv")


def test_pooled_sources_and_site_offsets_on_real_data(own_manifest, data_root, feature_cache, tmp_path):
    """PH2 + a Derm7pt subset as one probe layer (shared concepts pooled), site offsets removed, saved and reloaded."""
    from medcbm.bottleneck.priors import shipped_prior_file
    from medcbm.data.importers import import_dataset
    from medcbm.workflows.train import predict_cbm

    d7 = import_dataset("derm7pt", data_root)
    sub = d7.absolute_frame().iloc[::7]  # 145 images: a small annotated set of one's own
    sub.to_csv(tmp_path / "d7.csv", index=False)
    path, df = own_manifest
    overrides = {"grounding": {"backbone": "efficientnet_lite0", "sources": [
        {"kind": "annotations", "dataset": "ph2"},
        {"kind": "annotations", "dataset": str(tmp_path / "d7.csv"),
         "concepts": ["blue_whitish_veil", "streaks", "pigment_network_typical", "melanoma_pattern"],
         "prior": str(shipped_prior_file("derm7pt"))}]},
        "nuisance_adjust": True}
    cfg = TrainConfig(name="pooled", out_dir=str(tmp_path / "model"), data={"manifest": str(path), "split": "column"},
                      model="cbm", overrides=overrides)
    model, prov = train_cbm(cfg, data_root=data_root, cache_dir=feature_cache, progress=False)
    probes = model.grounder
    assert probes.sources_["ph2"][:2] == ["asymmetry", "asymmetry_full"] and "pigment_network_typical" in probes.all_concepts_
    # one probe for a concept both datasets annotate; Derm7pt-only concepts come from the Derm7pt images alone
    assert probes.all_concepts_.count("blue_whitish_veil") == 1
    assert set(model.offsets_.groups) == set(df["site"])  # this manifest's own sites
    assert prov["nuisance"] == {"column": "site", "groups": None}
    assert prov["metrics"]["test"]["auroc"] > 0.6
    m = pd.read_csv(path)
    pred = predict_cbm(tmp_path / "model", Manifest(m),
                       cache_dir=feature_cache, progress=False)
    with pytest.raises(ConfigError, match="adjusts concepts per site"):  # never a silent guess
        predict_cbm(tmp_path / "model", Manifest(m.drop(columns="site")), cache_dir=feature_cache, progress=False)
    no_site = predict_cbm(tmp_path / "model", Manifest(
        m.drop(columns="site")), cache_dir=feature_cache, progress=False, site="unknown")
    assert len(pred) == 160 and not np.allclose(pred["p_malignant"], no_site["p_malignant"])


def test_prior_naming_unknown_concepts(ph2_features, tmp_path):
    from medcbm.bottleneck.recipe import check_prior_concepts
    from medcbm.concepts.grounding.probes import ConceptProbes

    X, C, names = ph2_features
    probes = ConceptProbes(C_grid=(1e-2,), n_folds=3).fit(X, C, names)
    p = tmp_path / "prior.yaml"
    cfg = CBMConfig(prior=str(p))
    check_prior_concepts(cfg, {"malignant": {"streaks": 1}, "benign": {"streaks": -1}}, probes)
    with pytest.raises(ConfigError, match=r"names concepts \['streak'\] that no grounding source provides"):
        check_prior_concepts(cfg, {"malignant": {"streak": 1}}, probes)


def test_name_force_and_the_auto_splits_test_set_again(own_manifest, data_root, feature_cache, tmp_path, capsys,
                                                      monkeypatch):
    """`train -c` honours --name, never replaces a model without --force, and `evaluate --split test` scores the
    automatic split's test images again (found in the same manifest by content) with the training-time numbers."""
    from tests.test_cli import run_main

    path, df = own_manifest
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: first\nout_dir: '{tmp_path}/models/{{name}}'\nmodel: cbm_ph2_only\n"
                   f"overrides: {{grounding: {{backbone: efficientnet_lite0}}}}\n"
                   f"data: {{manifest: '{path}', split: auto, seed: 1}}\n")
    train = ["train", "-c", cfg, "--data-root", data_root, "--cache-dir", feature_cache]
    code, err = run_main(capsys, monkeypatch, *train, "--name", "second")
    assert code == 0, err
    assert (tmp_path / "models/second/model.json").is_file() and not (tmp_path / "models/first").exists()
    model_json = (tmp_path / "models/second/model.json").read_bytes()
    code, err = run_main(capsys, monkeypatch, *train, "--name", "second")
    assert code != 0 and "already holds a trained model" in err and "--force" in err
    assert (tmp_path / "models/second/model.json").read_bytes() == model_json  # refused before training

    meta = json.loads(model_json)
    out = tmp_path / "eval.json"
    code, err = run_main(capsys, monkeypatch, "evaluate", "-m", tmp_path / "models/second", "--manifest", path,
                         "--split", "test", "--json", out, "--cache-dir", feature_cache)
    assert code == 0, err
    res, trained = json.loads(out.read_text()), meta["provenance"]["metrics"]["test"]
    assert res["n"] == trained["n"] == len(meta["provenance"]["split_image_sha256"]["test"]) > 0
    assert res["n"] < len(df) and abs(res["acc"] - trained["acc"]) < 1e-9 and abs(res["auroc"] - trained["auroc"]) < 1e-9
    assert str(tmp_path) not in out.read_text()
    code, err = run_main(capsys, monkeypatch, "evaluate", "-m", tmp_path / "models/second", "--manifest", path,
                         "--split", "nope", "--cache-dir", feature_cache)
    assert code != 0 and "records the images of these splits: test, val" in err
    code, err = run_main(capsys, monkeypatch, *train, "--name", "second", "--force")
    assert code == 0, err


def test_labels_may_be_raw_or_class_names():
    from medcbm.bottleneck.metadata import label_indices

    meta = {"classes": ["benign", "malignant"],
            "provenance": {"label_map": {"benign": ["nv", "bkl"], "malignant": ["mel", "benign"]}}}
    y = label_indices(pd.DataFrame({"label": ["nv", "mel", "malignant", "benign", "vasc"]}), meta)
    assert y.tolist() == [0, 1, 1, 1, -1]  # 'benign' is a raw label the map sends to malignant: the map wins
