"""`bench concepts` where the concepts are read: per-site pattern AUROC and within-class site entanglement."""

import json

import numpy as np
import pandas as pd
import pytest

from medcbm.benchmarks.bench_concepts_sites import (MIN_POSITIVES, bench_ham_sites, pattern_site_auroc,
                                                    site_entanglement, stratified_sample)

SITES = np.array(["a", "b", "c"])


def _activations(shift: float, n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    site = SITES[rng.integers(0, 3, n)]
    group = np.where(rng.random(n) < 0.5, "benign", "malignant")
    A = rng.normal(size=(n, 8)) + 1.5 * (group == "malignant")[:, None]  # the class signal the concepts should carry
    A[:, 0] += shift * (site == "a")  # a site cue in one concept
    return A, site, group


def test_entanglement_detects_a_planted_site_shift():
    clean = site_entanglement(*_activations(0.0), n_boot=20)
    planted = site_entanglement(*_activations(2.0), n_boot=20)
    assert set(clean["groups"]) == {"benign", "malignant"}
    assert clean["mean_auroc"] < 0.6, clean  # the class signal alone does not reveal the site
    assert planted["mean_auroc"] > 0.7, planted
    for g in planted["groups"].values():
        lo, hi = g["ci95"]
        assert lo <= g["auroc"] <= hi and g["excluded_sites"] == [] and g["n"] == sum(g["sites"].values())


def test_entanglement_leaves_out_sites_too_small_to_cross_validate():
    A, site, group = _activations(2.0)
    site = site.copy()
    keep_c = np.flatnonzero((site == "c") & (group == "benign"))[:3]
    drop = np.setdiff1d(np.flatnonzero((site == "c") & (group == "benign")), keep_c)
    A, site, group = np.delete(A, drop, 0), np.delete(site, drop), np.delete(group, drop)
    res = site_entanglement(A, site, group, n_boot=10)
    assert res["groups"]["benign"]["excluded_sites"] == ["c"] and res["groups"]["benign"]["sites"]["c"] == 3
    assert res["groups"]["malignant"]["excluded_sites"] == []


def test_pattern_auroc_per_site_flags_small_cells_and_ignores_akiec():
    rng = np.random.default_rng(0)
    dx = np.array(["mel"] * 40 + ["nv"] * 100 + ["bkl"] * 30 + ["akiec"] * 30)
    site = np.array((["a", "b"] * 100))
    site[:40] = ["a"] * 35 + ["b"] * 5  # 5 melanomas at site b: too few to tell
    names = ["melanoma_pattern", "keratosis_pattern"]
    P = np.c_[(dx == "mel") + 0.1 * rng.random(len(dx)),  # a perfect melanoma detector
              np.isin(dx, ["bkl", "akiec"]) + 0.1 * rng.random(len(dx))]  # keratosis fires on akiec too
    res = pattern_site_auroc(P, names, dx, site, n_boot=50)
    mel = res["per_pattern"]["melanoma_pattern"]
    assert mel["a"]["auroc"] == 1.0 and not mel["a"]["cannot_tell"] and mel["a"]["n_pos"] == 35
    assert mel["b"]["cannot_tell"] and mel["b"]["n_pos"] == 5 < MIN_POSITIVES
    ker = res["per_pattern"]["keratosis_pattern"]["pooled"]
    assert ker["auroc"] == 1.0 and ker["n_neg"] == 140  # akiec is neither positive nor negative ...
    assert ker["auroc_akiec_as_negative"] < 0.95  # ... and costs the score when counted as a negative
    assert res["per_pattern"]["bcc_pattern"] == {"missing": "not a kept concept of this grounding"}
    s = res["summary"]
    assert "melanoma_pattern@b" in s["cannot_tell"] and s["n_cells"] == 3 and s["min_auroc"] == 1.0


def test_stratified_sample_keeps_rare_strata():
    f = pd.DataFrame({"site": ["a"] * 900 + ["b"] * 100,
                      "label": ["nv"] * 880 + ["df"] * 20 + ["nv"] * 95 + ["df"] * 5})
    idx = stratified_sample(f, 100, seed=0)
    got = f.iloc[idx].value_counts()
    assert got[("a", "nv")] == 88 and got[("a", "df")] == 10 and got[("b", "df")] == 5 and got[("b", "nv")] == 10
    assert np.array_equal(idx, stratified_sample(f, 100, seed=0)) and np.all(np.diff(idx) > 0)


@pytest.fixture(scope="module")
def small_run(data_root, feature_cache):
    # PH2-only probes on whole-image features keep it cheap; melanoma_pattern is the HAM pattern PH2 grounds
    return bench_ham_sites(["efficientnet_lite0"], recipe="cbm_ph2_only", seeds=1, limit=120, n_boot=50,
                           data_root=data_root, cache_dir=feature_cache)


def test_ham_sites_on_real_images(small_run):
    info = small_run["scored_on"]
    assert info["protocol"] == "ham10000-site-confounded" and info["seeds"] == [0]
    assert set(info["counts"]) == {"rosendahl", "vidir_modern", "vidir_molemax"} and 120 <= info["n_images"] < 300
    r = small_run["backbones"]["efficientnet_lite0"]
    assert r["probes"]["fitted_on"] == ["ph2"] and "HAM10000 never" in r["probes"]["fitted_on_note"]
    mel = r["patterns"]["per_pattern"]["melanoma_pattern"]
    assert set(mel) == {"rosendahl", "vidir_modern", "vidir_molemax", "pooled"}
    for cell in mel.values():
        if "auroc" in cell:
            assert 0.0 <= cell["ci95"][0] <= cell["auroc"] <= cell["ci95"][1] <= 1.0
    assert mel["pooled"]["auroc"] > 0.55  # PH2's melanoma probe carries over to HAM melanomas
    assert "missing" in r["patterns"]["per_pattern"]["bcc_pattern"]  # PH2 has no BCC concept
    ent = r["entanglement"]["by_class"]
    assert set(ent["groups"]) == {"benign", "malignant"} and 0.0 <= ent["mean_auroc"] <= 1.0
    assert isinstance(ent["meets_target"], bool) and isinstance(r["patterns"]["summary"]["meets_targets"], bool)
    row = small_run["comparison"]["pattern AUROC, mean over sites"]
    assert row["efficientnet_lite0"] == r["patterns"]["summary"]["mean_auroc"]


def test_cli_writes_the_ham_site_report(small_run, data_root, feature_cache, tmp_path):
    from typer.testing import CliRunner

    from medcbm.cli import app

    out = tmp_path / "c.json"
    # the name twice: one column, not two that overwrite each other
    args = ["bench", "concepts", "--dataset", "ham10000", "--backbone", "efficientnet_lite0", "--backbone",
            "efficientnet_lite0", "--recipe", "cbm_ph2_only", "--ham-seeds", "1", "--ham-limit", "120",
            "--n-boot", "20", "--data-root", str(data_root), "--cache-dir", str(feature_cache), "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["backbones"] == ["efficientnet_lite0"] and "probe_quality" not in saved
    assert saved["ham_sites"]["scored_on"]["ids_sha256"] == small_run["scored_on"]["ids_sha256"]
    assert "| pattern AUROC, mean over sites |" in res.output
