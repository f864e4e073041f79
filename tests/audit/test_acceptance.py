"""The site acceptance report: the verdict rules, and the real report of a real model in headless Chromium."""

import json
from pathlib import Path

import numpy as np
import pytest

from medcbm.audit.acceptance import AcceptanceCriteria, Metric, assess, decide
from medcbm.errors import ConfigError
from tests.browser import offline_page

CRIT = AcceptanceCriteria()


def test_a_near_chance_model_is_not_deployed_and_says_why():
    # today's ham10000-rosendahl-holdout source model at Rosendahl: balanced accuracy 0.559, AUROC 0.60
    verdict, reasons = decide(Metric(value=0.559, ci95=(0.515, 0.603)), Metric(value=0.60, ci95=(0.55, 0.65)),
                              ece=0.12, n=250, home=0.76, n_classes=2, crit=CRIT)
    assert verdict == "do not deploy"
    assert any("near chance" in r for r in reasons)
    # above the near-chance line but the interval still reaches chance: also not deployed
    verdict, reasons = decide(Metric(value=0.62, ci95=(0.49, 0.75)), Metric(value=0.66, ci95=(0.52, 0.8)),
                              ece=0.05, n=40, home=0.76, n_classes=2, crit=CRIT)
    assert verdict == "do not deploy" and any("includes chance" in r for r in reasons)


def test_a_good_model_is_ready_and_a_weaker_one_is_sent_back():
    good = decide(Metric(value=0.84, ci95=(0.80, 0.88)), Metric(value=0.91, ci95=(0.88, 0.94)), ece=0.05, n=300,
                  home=0.85, n_classes=2, crit=CRIT)
    assert good[0] == "ready" and "above chance" in good[1][0]
    worse = decide(Metric(value=0.70, ci95=(0.66, 0.74)), Metric(value=0.78, ci95=(0.74, 0.82)), ece=0.05, n=300,
                   home=0.85, n_classes=2, crit=CRIT)
    assert worse[0] == "adapt and re-check" and "0.150 below the 0.850" in worse[1][0]
    # the quickstart's case: 0.062 below home with an interval that reaches home - 0.05: not ready
    near = decide(Metric(value=0.696, ci95=(0.643, 0.751)), Metric(value=0.76, ci95=(0.70, 0.82)), ece=0.06, n=250,
                  home=0.758, n_classes=2, crit=CRIT)
    assert near[0] == "adapt and re-check"
    uncal = decide(Metric(value=0.84, ci95=(0.80, 0.88)), Metric(value=0.91, ci95=(0.88, 0.94)), ece=0.2, n=300,
                   home=0.85, n_classes=2, crit=CRIT)
    assert uncal[0] == "adapt and re-check" and "calibration" in uncal[1][0]


def test_assess_on_predictions_of_a_guessing_and_a_sharp_model():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    guess = rng.dirichlet([1, 1], len(y))
    assert assess(y, guess, home=0.76).verdict == "do not deploy"
    p1 = np.clip(np.where(y == 1, 0.97, 0.03) + rng.normal(0, 0.01, len(y)), 0.001, 0.999)
    sharp = assess(y, np.c_[1 - p1, p1], home=0.9)
    assert sharp.verdict == "ready" and sharp.balanced_accuracy.value > 0.95 and sharp.ece < 0.1


@pytest.fixture(scope="module")
def site_reports(audit_model, ham_manifest, feature_cache, tmp_path_factory):
    """The audit test model scored on 60 HAM10000 images it never saw: true labels, and labels shuffled (a model
    that is at chance on them by construction)."""
    from medcbm.audit.acceptance_html import write_acceptance_report
    from medcbm.data.manifest import load_manifest

    d = tmp_path_factory.mktemp("acceptance")
    f = ham_manifest.frame
    rng = np.random.default_rng(5)
    rows = np.r_[rng.choice(np.flatnonzero(f["malignant"].to_numpy() == 1), 30, replace=False),
                 rng.choice(np.flatnonzero(f["malignant"].to_numpy() == 0), 30, replace=False)]
    df = f.iloc[rows][["id", "patient_id", "site", "sex", "age"]].copy()
    df["image"] = [str(ham_manifest.image_path(int(i))) for i in rows]
    df["label"] = np.where(f["malignant"].to_numpy()[rows] == 1, "malignant", "benign")
    df.to_csv(d / "site.csv", index=False)
    df.assign(label=rng.permutation(df["label"].to_numpy())).to_csv(d / "shuffled.csv", index=False)
    out = {}
    for name in ("site", "shuffled"):
        out[name] = write_acceptance_report(audit_model, load_manifest(d / f"{name}.csv"), d / f"out-{name}",
                                            cache_dir=feature_cache, progress=False)
    return out, df


def test_the_report_files_decide_and_name_no_one(site_reports):
    files, df = site_reports
    chance = json.loads(files["shuffled"]["json"].read_text())
    assert chance["verdict"] == "do not deploy" and chance["reasons"]
    real = json.loads(files["site"]["json"].read_text())
    assert real["n"] == 60 and real["per_class"] == {"benign": 30, "malignant": 30}
    assert real["verdict"] in ("ready", "adapt and re-check", "do not deploy")
    lo, hi = real["balanced_accuracy"]["ci95"]
    assert lo <= real["balanced_accuracy"]["value"] <= hi and real["drift"] and real["adaptation"] is None
    for name in ("site", "shuffled"):
        text = files[name]["html"].read_text() + files[name]["json"].read_text()
        assert not any(v in text for v in df["id"]) and not any(v in text for v in df["patient_id"])
        assert str(Path(df["image"].iloc[0]).parent) not in text and "/work/" not in text  # no machine paths
        assert not any(s in text for s in ("rosendahl", "vidir"))


def test_an_existing_report_folder_is_a_one_line_error(site_reports, audit_model, feature_cache):
    from medcbm.audit.acceptance_html import write_acceptance_report
    from medcbm.data.manifest import load_manifest

    files, _ = site_reports
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        write_acceptance_report(audit_model, load_manifest(files["site"]["json"].parent.parent / "site.csv"),
                                files["site"]["json"].parent, cache_dir=feature_cache, progress=False)


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
def test_the_report_reads_in_headless_chromium_with_axe(site_reports, tmp_path, width, height):
    files, _ = site_reports
    with offline_page(files["shuffled"]["html"].as_uri(), width=width, height=height) as view:
        page = view.page
        verdict = page.get_by_role("status")
        assert verdict.is_visible() and "Do not deploy at this site" in verdict.inner_text()
        box = verdict.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1  # the verdict fits the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1  # no sideways scrolling
        assert page.locator("svg[role=img]").count() == 1
        bad = view.serious_axe_violations()
        page.screenshot(path=str(tmp_path / f"acceptance-{width}.png"), full_page=True)
    assert view.outside == [] and view.errors == []
    assert not bad, bad
