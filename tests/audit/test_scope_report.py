"""The audit page of a dermoscopy model given images it was not built for, in real headless Chromium: HAM10000
dermoscopy images beside pydicom-data DICOMs (CT, MR, ultrasound) and a greyscale copy of a HAM10000 photograph.
Each out-of-scope case shows a visible banner naming its failing check, the summary counts them, the in-scope
cases have none, and the page stays offline, accessible and no wider than a phone."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medcbm.audit.schema import AuditReport
from medcbm.bottleneck.scope import check_counts
from tests.browser import offline_page

DICOMS = {"ct": "CT_small.dcm", "mr": "MR_small.dcm", "us": "US1_UNCR.dcm"}
# what a case's banner says for each check it fails (the reason text of medcbm.bottleneck.scope)
SAYS = {"modality": "DICOM modality", "colour": "greyscale image", "features": "unlike the training images"}


def _in_scope_first(model_dir, ham_own, feature_cache, folder) -> pd.DataFrame:
    """The HAM10000 test images, those farthest inside the feature limit first (about 1 in 20 in-domain images
    lies beyond it, which tests/workflows/test_scope.py measures; this page needs in-scope ones)."""
    from medcbm.adapt.store import load_model
    from medcbm.backbones.features import extract_features
    from medcbm.bottleneck.artifacts import backbone_from_meta
    from medcbm.data.manifest import load_manifest

    _, df = ham_own
    test = df[df.split == "test"].reset_index(drop=True)
    test.to_csv(folder / "test.csv", index=False)
    model, meta = load_model(model_dir)
    X = extract_features(load_manifest(folder / "test.csv"), backbone_from_meta(meta), cache_dir=feature_cache,
                         progress=False).X
    return test.iloc[model.feature_domain_.scores(X).argsort()]


@pytest.fixture(scope="module")
def mixed(audit_model, ham_own, dicom_file, feature_cache, tmp_path_factory):
    """The audit of four HAM10000 test images, three DICOMs (unlabelled) and a greyscale photograph."""
    from PIL import Image

    from medcbm.audit.report import write_audit_report

    d = tmp_path_factory.mktemp("scope-audit")
    test = _in_scope_first(audit_model, ham_own, feature_cache, d)
    ham = pd.concat([test[test.label == c].iloc[:2] for c in ("malignant", "benign")])[["id", "image", "label"]]
    grey = test.iloc[-1]
    # an RGB JPEG whose three channels are equal: only the pixels, not the file's mode, say it is greyscale
    Image.open(grey["image"]).convert("L").convert("RGB").save(d / "grey.jpg", quality=90)
    foreign = pd.DataFrame({"id": [*DICOMS, "grey"], "image": [dicom_file(f) for f in DICOMS.values()] +
                            [str(d / "grey.jpg")], "label": ["none"] * len(DICOMS) + [grey["label"]]})
    pd.concat([ham, foreign], ignore_index=True).to_csv(d / "m.csv", index=False)
    files = write_audit_report(audit_model, d / "m.csv", d / "report", cache_dir=feature_cache, progress=False,
                               raw_ids=True, occlusion_cases=0)
    return files, AuditReport.model_validate(json.loads(files["json"].read_text())), list(ham["id"])


def test_each_foreign_image_is_judged_out_of_scope_for_its_own_reason(mixed):
    files, report, ham = mixed
    verdicts = {c.explanation.case: c.scope for c in report.cases}
    assert len(verdicts) == 8 and all(verdicts[i].in_scope for i in ham)
    assert {"modality", "colour"} <= set(verdicts["ct"].checks_failed) and "modality CT" in verdicts["ct"].reason
    assert {"modality", "colour"} <= set(verdicts["mr"].checks_failed)
    assert "modality" in verdicts["us"].checks_failed and "colour" not in verdicts["us"].checks_failed  # RGB
    assert "colour" in verdicts["grey"].checks_failed and "modality" not in verdicts["grey"].checks_failed
    assert (report.data.scope.n, report.data.scope.out_of_scope) == (8, 4)
    card = files["model_card"].read_text()
    assert f"4 of 8 scored images were out of scope ({check_counts(report.data.scope.by_check)})" in card


@pytest.mark.parametrize("width", [390, 1440])
def test_scope_banners_in_headless_chromium(mixed, width):
    """Banners visible where they belong and nowhere else; offline, no console error, no serious axe
    violation, and no sideways scrolling at phone or desktop width."""
    files, report, _ = mixed
    with offline_page(files["html"].as_uri(), width=width, height=900) as view:
        page = view.page
        summary = page.locator("#summary .scope")
        assert summary.count() == 1 and summary.is_visible()
        said = " ".join(summary.inner_text().split())
        assert "4 of 8 image(s) are outside this model's scope" in said
        assert check_counts(report.data.scope.by_check) in said
        articles = page.locator("article.case")
        assert articles.count() == len(report.cases)
        for i, case in enumerate(report.cases):  # the page lists the cases in the report's order
            banner = articles.nth(i).locator(".scope")
            if case.scope.in_scope:
                assert banner.count() == 0, case.explanation.case
                continue
            assert banner.count() == 1 and banner.is_visible(), case.explanation.case
            text = " ".join(banner.inner_text().split())
            assert text.startswith("Outside the model's scope:")
            assert all(SAYS[c] in text for c in case.scope.checks_failed), (case.explanation.case, text)
            box = banner.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (case.explanation.case, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
        bad = view.serious_axe_violations()
    assert view.outside == [] and view.errors == []
    assert not bad, bad
