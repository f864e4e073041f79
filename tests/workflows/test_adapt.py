"""``medcbm adapt`` as a user runs it: a model trained at the Vienna sites adapted to Rosendahl images."""

import json

import numpy as np
import pandas as pd
import pytest

from medcbm.adapt.store import list_adaptations, load_model, remove_adaptation
from medcbm.bottleneck.artifacts import load_cbm
from medcbm.data.manifest import load_manifest
from medcbm.errors import ConfigError, DataError
from medcbm.workflows.adapt import adapt_cbm
from medcbm.workflows.config import TrainConfig
from medcbm.workflows.train import evaluate_cbm, train_cbm
from tests.test_cli import medcbm

FAST = {"grounding": {"backbone": "efficientnet_lite0"}}


def _rows(f, site_mask, malignant, n, rng, exclude=()):
    pool = np.flatnonzero(site_mask & (f["malignant"].to_numpy() == malignant) & ~np.isin(np.arange(len(f)), exclude))
    return rng.choice(pool, n, replace=False)


@pytest.fixture(scope="module")
def site_model(ham_manifest, data_root, feature_cache, tmp_path_factory):
    """A CBM trained on 120 Vienna images; a 4-per-class Rosendahl support manifest and a 60-image query."""
    f = ham_manifest.frame
    rng = np.random.default_rng(0)
    vienna, rosen = f["site"].isin(["vidir_modern", "vidir_molemax"]).to_numpy(), (f["site"] == "rosendahl").to_numpy()
    train = np.r_[_rows(f, vienna, 1, 60, rng), _rows(f, vienna, 0, 60, rng)]
    support = np.r_[_rows(f, rosen, 1, 4, rng), _rows(f, rosen, 0, 4, rng)]
    query = np.r_[_rows(f, rosen, 1, 30, rng, support), _rows(f, rosen, 0, 30, rng, support)]

    def frame(rows, split=None):
        df = f.iloc[rows][["id", "patient_id", "site", "sex", "age"]].copy()
        df["image"] = [str(ham_manifest.image_path(int(i))) for i in rows]
        df["label"] = np.where(f["malignant"].to_numpy()[rows] == 1, "malignant", "benign")
        if split is not None:
            df["split"] = split
        return df

    d = tmp_path_factory.mktemp("adapt")
    tr = frame(train, np.tile(["train"] * 3 + ["val"], 30))
    tr.to_csv(d / "train.csv", index=False)
    frame(support).to_csv(d / "support.csv", index=False)
    frame(query).to_csv(d / "query.csv", index=False)
    cfg = TrainConfig(name="vienna", out_dir=str(d / "model"), data={"manifest": str(d / "train.csv"), "split": "column"},
                      model="cbm_ph2_only", overrides=FAST)
    train_cbm(cfg, data_root=data_root, cache_dir=feature_cache, progress=False)
    return d, tr


def _checksums(model_dir):
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


def test_adapt_saves_beside_the_base_model_and_evaluate_uses_it(site_model, feature_cache):
    d, _ = site_model
    before = _checksums(d / "model")
    r = medcbm("adapt", "--model", d / "model", "--support", d / "support.csv", "--site", "rosendahl",
               "--adapter", "tfti", "--cache-dir", feature_cache)
    assert r.returncode == 0, r.stderr
    assert "leave-one-shot-out balanced accuracy" in r.stdout and "saved to" in r.stdout
    assert _checksums(d / "model") == before  # the base model is never modified
    doc = json.loads((d / "model/adaptations/rosendahl/adaptation.json").read_text())
    assert doc["site"] == "rosendahl" and doc["support"]["n"] == 8 and len(doc["support"]["image_sha256"]) == 8
    text = json.dumps(doc)
    support = pd.read_csv(d / "support.csv")
    assert not any(str(v) in text for v in support["image"]) and not any(v in text for v in support["patient_id"])
    assert doc["adapter"] == "tfti" and doc["changed"] == bool(doc["changes"])  # TF-TTI changes name concepts
    # the saved adaptation predicts what the fitted adapter predicted, through the same `evaluate`
    adapted, meta = load_model(d / "model/adaptations/rosendahl")
    assert meta["adaptation"]["site"] == "rosendahl"
    res = evaluate_cbm(d / "model/adaptations/rosendahl", load_manifest(d / "query.csv"), cache_dir=feature_cache,
                       progress=False)
    base = evaluate_cbm(d / "model", load_manifest(d / "query.csv"), cache_dir=feature_cache, progress=False)
    assert res["n"] == base["n"] == 60
    if not doc["changed"]:
        assert res["acc"] == base["acc"]
    r = medcbm("adaptations", "--model", d / "model")
    assert r.returncode == 0 and "rosendahl" in r.stdout and "tfti" in r.stdout
    r = medcbm("predict", "--model", d / "model/adaptations/rosendahl", "--manifest", d / "query.csv",
               "--out", d / "pred.csv", "--cache-dir", feature_cache)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(d / "pred.csv")) == 60


def test_the_guard_and_a_forced_mask_on_real_data(site_model, feature_cache):
    d, _ = site_model
    sup = load_manifest(d / "support.csv")
    fitted, path = adapt_cbm(d / "model", sup, site="rosendahl-mask", adapter="mask", n_mask=2, guard=False,
                             cache_dir=feature_cache, progress=False)
    masked = [c.concept for c in fitted.changes_ if c.action == "masked"]
    assert len(masked) == 2 and all(c.statistic > 0 for c in fitted.changes_)
    model, _ = load_cbm(d / "model")
    adapted, _ = load_model(path)
    j = [model.concept_names_.index(c) for c in masked]
    assert np.allclose(adapted.edit.scale[j], 0) and np.allclose(np.delete(adapted.edit.scale, j), 1)
    assert {r["site"] for r in list_adaptations(d / "model")} >= {"rosendahl-mask"}


def test_bad_support_sets(site_model, feature_cache, tmp_path, caplog):
    d, train = site_model
    sup = pd.read_csv(d / "support.csv")

    def adapt(path, site="other", **kw):
        return adapt_cbm(d / "model", load_manifest(path), site=site, adapter="mask", cache_dir=feature_cache,
                         progress=False, **kw)

    cases = {
        "one_class.csv": (sup[sup["label"] == "benign"], "at least two"),
        "dupes.csv": (pd.concat([sup, sup.iloc[[0]].assign(id="copy")]), "rows 1 and 9 are the same image"),
        "unknown.csv": (sup.assign(label=["benign"] * 7 + ["melanoma"]), "label 'melanoma' is not one the model knows"),
    }
    for name, (df, msg) in cases.items():
        df.to_csv(tmp_path / name, index=False)
        with pytest.raises(DataError, match=msg):
            adapt(tmp_path / name)
    with pytest.raises(DataError, match="fewer than 5 images"):
        adapt(d / "support.csv", k=5)
    with pytest.raises(ConfigError, match=r"site name '\.\./up'"):
        adapt(d / "support.csv", site="../up")
    adapt(d / "support.csv")
    r = medcbm("adapt", "--model", d / "model", "--site", "other", "--support", d / "support.csv")
    assert r.returncode == 2 and "already has an adaptation" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    adapt(d / "support.csv", force=True)
    remove_adaptation(d / "model", "other")
    assert not (d / "model/adaptations/other").exists()
    with pytest.raises(DataError, match="has no adaptation for site 'other'"):
        remove_adaptation(d / "model", "other")
    # a support image the model was trained on: adapted anyway, with a warning
    mixed = pd.concat([sup.iloc[:7], train[train["label"] == "malignant"].iloc[[0]].drop(columns="split")])
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with caplog.at_level("WARNING"):
        adapt(tmp_path / "mixed.csv", site="mixed")
    assert "images the model was trained on" in caplog.text


def test_the_users_loop_split_adapt_on_unlabelled_too_and_compare(site_model, feature_cache, tmp_path):
    """split-site -> adapt (default site adapter, with the unlabelled rest) -> evaluate --baseline on the query."""
    d, _ = site_model
    site = pd.concat([pd.read_csv(d / "support.csv"), pd.read_csv(d / "query.csv")])
    site.to_csv(tmp_path / "site.csv", index=False)
    split = tmp_path / "split"
    r = medcbm("split-site", "--model", d / "model", "--manifest", tmp_path / "site.csv", "--k", "4", "--seed", "1",
               "--out-dir", split)
    assert r.returncode == 0, r.stderr
    parts = {n: pd.read_csv(split / f"{n}.csv") for n in ("support", "unlabelled", "query")}
    assert parts["support"]["label"].value_counts().to_dict() == {"benign": 4, "malignant": 4}
    assert sum(len(p) for p in parts.values()) == len(site) and set(parts["unlabelled"]["label"]) == {"unlabelled"}
    held = set(parts["query"]["patient_id"])
    assert not held & (set(parts["support"]["patient_id"]) | set(parts["unlabelled"]["patient_id"]))
    r = medcbm("adapt", "--model", d / "model", "--support", split / "support.csv", "--unlabelled",
               split / "unlabelled.csv", "--site", "site-b", "--cache-dir", feature_cache)
    assert r.returncode == 0, r.stderr
    assert "estimated gain in balanced accuracy" in r.stdout and "95 % interval" in r.stdout
    doc = json.loads((d / "model/adaptations/site-b/adaptation.json").read_text())
    assert doc["adapter"] == "site" and doc["estimate"]["n"] == 8
    assert doc["support"]["n_unlabelled"] == len(parts["unlabelled"])
    assert doc["unlabelled"]["n_site_images"] == 8 + len(parts["unlabelled"])
    lo, hi = doc["estimate"]["ci95"]
    assert lo <= doc["estimate"]["gain"] <= hi and hi - lo > 0.2  # eight images cannot pin a gain down
    r = medcbm("evaluate", "--model", d / "model/adaptations/site-b", "--baseline", d / "model", "--manifest",
               split / "query.csv", "--json", tmp_path / "cmp.json", "--cache-dir", feature_cache)
    assert r.returncode == 0, r.stderr
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    g = cmp["balanced_acc_gain"]
    assert cmp["n"] == len(parts["query"]) and g["ci95"][0] <= g["gain"] <= g["ci95"][1]
    assert abs(cmp["model"]["balanced_acc"] - cmp["baseline"]["balanced_acc"] - g["gain"]) < 1e-9
    if cmp["changed_predictions"]:
        assert "gain in balanced accuracy" in r.stdout and "predictions differ" in r.stdout
    else:
        assert "predict the same class on all" in r.stdout
    # k = 0: the unlabelled images alone (re-centring is opt-in); nothing to estimate the gain on
    r = medcbm("adapt", "--model", d / "model", "--unlabelled", split / "unlabelled.csv", "--site", "site-b0",
               "--adapter", "recentre", "--cache-dir", feature_cache)
    assert r.returncode == 0, r.stderr
    assert "not estimated" in r.stdout and "re-centred on" in r.stdout
    # one-line errors
    r = medcbm("adapt", "--model", d / "model", "--support", split / "support.csv", "--unlabelled",
               split / "unlabelled.csv", "--site", "x", "--adapter", "tfti")
    assert r.returncode == 2 and "does not use unlabelled images" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = medcbm("split-site", "--model", d / "model", "--manifest", tmp_path / "site.csv", "--k", "60", "--out-dir",
               tmp_path / "s2")
    assert r.returncode == 2 and "k = 60" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("tamper, message", [
    ("nan", "field 'edit.scale.0'"),
    ("huge", "beyond ±1000"),
    ("short_resigned", "edit.scale has"),
    ("nudged", "checksum mismatch"),
    ("old_format", "expected medcbm.adaptation/2"),
])
def test_a_tampered_adaptation_is_refused_before_any_prediction(site_model, feature_cache, tmp_path, capsys,
                                                               monkeypatch, tamper, message):
    import shutil

    from medcbm.adapt.integrity import with_checksum
    from tests.test_cli import run_main

    d, _ = site_model
    _, path = adapt_cbm(d / "model", load_manifest(d / "support.csv"), site=f"t-{tamper}", adapter="mask", n_mask=2,
                        guard=False, cache_dir=feature_cache, progress=False)
    doc = json.loads((path / "adaptation.json").read_text())
    if tamper == "nan":
        doc["edit"]["scale"][0] = float("nan")  # json.dumps writes NaN, which json.loads reads back
    elif tamper == "huge":
        doc["edit"]["scale"][1] = 1e30
    elif tamper == "short_resigned":  # a shorter vector with a recomputed checksum: the shape check catches it
        doc["edit"]["scale"] = doc["edit"]["scale"][:-1]
        doc = with_checksum(doc)
    elif tamper == "nudged":  # finite, in range, but not what medcbm wrote
        doc["edit"]["shift"][0] += 0.5
    else:
        doc["format"] = "medcbm.adaptation/1"
    (path / "adaptation.json").write_text(json.dumps(doc))
    out = tmp_path / "pred.csv"
    code, err = run_main(capsys, monkeypatch, "predict", "--model", path, "--manifest", d / "query.csv",
                         "-o", out, "--cache-dir", feature_cache)
    assert code != 0 and message in err and "adaptation.json" in err, err
    assert len(err.strip().splitlines()) <= 2 and not out.exists()
    shutil.rmtree(path)


def test_non_finite_probabilities_are_never_returned(site_model):
    d, _ = site_model
    model, _ = load_cbm(d / "model")
    P = np.full((3, len(model.concept_names_)), 0.5)
    P[1, 0] = np.nan
    with pytest.raises(DataError, match=r"non-finite probabilities for 1 of 3 images \(rows 1\)"):
        model.predict_proba_from_concepts(P)
