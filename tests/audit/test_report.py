"""``write_audit_report`` and ``medcbm audit`` on real HAM10000 images with a real saved model."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from medcbm.errors import ConfigError, DataError
from tests.browser import offline_page


@pytest.fixture(scope="module")
def audit_manifest(ham_own, tmp_path_factory):
    """The 32 test-split images plus one missing and one corrupt image (and a copy whose path we know)."""
    _, df = ham_own
    d = tmp_path_factory.mktemp("audit-manifest")
    test = df[df.split == "test"].drop(columns="split").copy()
    bad = test.iloc[:2].copy()
    bad["id"] = ["MISSING_CASE_1", "CORRUPT_CASE_2"]
    bad["image"] = [str(d / "nowhere" / "gone.jpg"), str(d / "corrupt.jpg")]
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    frame = pd.concat([test, bad], ignore_index=True)
    frame.to_csv(d / "audit.csv", index=False)
    return d / "audit.csv", frame


@pytest.fixture(scope="module")
def written(audit_model, audit_manifest, feature_cache, tmp_path_factory):
    from medcbm.audit.report import write_audit_report

    path, frame = audit_manifest
    out = tmp_path_factory.mktemp("audit-out") / "report"
    files = write_audit_report(audit_model, path, out, cache_dir=feature_cache, progress=False, salt="test-salt-123",
                               occlusion_cases=2)
    return files, frame


def test_report_files_carry_the_same_data(written, audit_model):
    from medcbm.audit.schema import SCHEMA_VERSION, AuditReport

    files, frame = written
    data = json.loads(files["json"].read_text())
    report = AuditReport.model_validate(data)  # the JSON validates against its own schema model
    assert data["schema_version"] == SCHEMA_VERSION
    assert json.loads(files["schema"].read_text())["title"] == "AuditReport"
    meta = json.loads((audit_model / "model.json").read_text())
    assert report.model.concepts == meta["concepts"] and report.model.classes == ["benign", "malignant"]
    assert report.data.n_rows == 34 and report.data.n_scored == 32 and report.data.labelled
    reasons = sorted(i.reason for i in report.data.image_issues)
    assert reasons == ["image file missing", "image unreadable (corrupt or not an image)"]
    assert len(report.cases) == 32  # the two bad rows are recorded, the rest explained
    assert report.calibration.n == 32 and report.metrics["n"] == 32
    assert report.interventions is None and "no concept annotations" in report.interventions_note
    linked = [k for k, v in report.concept_links.items() if v]
    assert linked and set(report.model.concepts_without_bank_entry) == set(report.model.concepts) - set(linked)
    html = files["html"].read_text()
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in unescape(html)
    assert "<script" not in html and 'src="http' not in html and "href=\"http" not in html
    for c in report.cases[:5]:  # every case and its top concept's question are in the page
        assert c.explanation.case in html
        top = c.explanation.concepts[0]
        links = report.concept_links[top.concept]
        assert top.has_bank_entry == bool(links)
        expected = links[0].question if links else f"“{top.concept}” has no concept-bank entry"
        assert expected in unescape(html)
        # the passage chosen by stance for this case is the one shown, with its counter-passage labelled
        assert top.citation is not None and top.citation.sentence in unescape(html)
        if top.counter_citation is not None:
            assert "counter-passage" in html and top.counter_citation.sentence in unescape(html)
    assert report.model.concepts_without_bank_entry == []  # every PH2 concept has a bank entry (issue 25)
    assert html.count("data:image/jpeg;base64,") == 32
    # occlusion maps of the top 3 concepts for the first 2 cases: numbers in the JSON, overlays in the page
    occluded = [c for c in report.cases if c.occlusion]
    assert [c.explanation.case for c in occluded] == [c.explanation.case for c in report.cases[:2]]
    for c in occluded:
        assert list(c.occlusion) == [k.concept for k in c.explanation.top(3)]
        assert all(len(m) == 4 and len(m[0]) == 4 for m in c.occlusion.values())
        assert any(abs(v) > 1e-4 for m in c.occlusion.values() for row in m for v in row)  # hiding cells matters
    assert html.count("data:image/png;base64,") - html.count('xlink:href="data:image/png') == 6
    assert len(html) < 10e6


def test_no_raw_id_path_or_site_name_in_any_output(written, audit_manifest, audit_model, data_root):
    import medcbm
    from medcbm._resources import resources_root

    files, frame = written
    texts = {k: p.read_text() for k, p in files.items()}
    secrets = list(frame["id"]) + list(frame["patient_id"]) + list(frame["image"]) + sorted(set(frame["site"]))
    secrets += [str(audit_manifest[0]), str(audit_manifest[0].parent)]
    # this machine: where medcbm is installed, its shipped resources (prior files), the data, the model folder
    secrets += [str(Path(medcbm.__file__).resolve().parents[1]), str(resources_root()), str(Path(data_root).resolve()),
                str(audit_model)]
    for kind, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{kind} leaks {leaked[:3]}"


def test_bad_requests_get_one_line_errors(audit_model, audit_manifest, feature_cache, tmp_path):
    from medcbm.audit.report import write_audit_report

    path, frame = audit_manifest
    with pytest.raises(DataError, match=r"1 requested case\(s\) are not in the manifest: \['NOPE'\]"):
        write_audit_report(audit_model, path, tmp_path / "a", cases=["NOPE", frame["id"].iloc[0]],
                           cache_dir=feature_cache, progress=False, occlusion_cases=0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("keep?")
    with pytest.raises(ConfigError, match="already exists.*--force"):
        write_audit_report(audit_model, path, tmp_path / "b", cache_dir=feature_cache, progress=False, occlusion_cases=0)
    ids = list(frame["id"].iloc[[3, 1]])
    files = write_audit_report(audit_model, path, tmp_path / "b", cases=ids, force=True, raw_ids=True,
                               thumbnails=False, cache_dir=feature_cache, progress=False)
    data = json.loads(files["json"].read_text())
    assert [c["explanation"]["case"] for c in data["cases"]] == ids  # the order asked for, raw ids opted in
    assert not (tmp_path / "b" / "old.txt").exists() and data["data"]["thumbnails"] == "none"
    assert "data:image/jpeg" not in files["html"].read_text()  # no thumbnail (charts may embed a PNG raster)


def test_model_card_follows_hugging_face_conventions(written):
    from huggingface_hub import ModelCard

    files, _ = written
    card = ModelCard(files["model_card"].read_text())
    assert card.data.library_name == "medcbm" and "concept-bottleneck-model" in card.data.tags
    assert card.data.to_dict()["model-index"][0]["results"][0]["metrics"]
    assert "## Intended use" in card.text and "no citable passage" in card.text


def test_model_card_names_the_scope_with_the_models_numbers(written, audit_model):
    """Which images the model accepts: modalities, colour, the feature limit and how it was calibrated."""
    from medcbm.bottleneck.scope import DOMAIN_MODALITIES

    files, _ = written
    card = files["model_card"].read_text()
    scope = card.split("## Scope", 1)[1].split("\n## ", 1)[0]
    limit = json.loads((audit_model / "model.json").read_text())["feature_domain"]
    assert limit["calibration"] == "validation" and limit["n_calibration"] < 99  # the audit model's 32 val images
    assert f"modalities {', '.join(sorted(DOMAIN_MODALITIES['dermoscopy']))};" in scope  # DMS, VL, XC
    assert "colour photographs only; a greyscale image" in scope
    assert (f"cosine distance {limit['threshold']:.4g} from the mean of the {limit['n']} training images" in scope)
    assert (f"split-conformal 99 % limit on {limit['n_calibration']} validation images" in scope
            and "at most 1 %; with this few, it is the largest of their distances" in scope)
    counted = json.loads(files["json"].read_text())["data"]["scope"]
    assert counted["n"] == 32
    assert (f"{counted['out_of_scope']} of 32 scored images were out of scope" if counted["out_of_scope"] else
            "all 32 scored images were in scope") in scope


def test_model_card_escapes_user_text(written):
    """Class and concept names come from the user's labels and files: a Markdown viewer must not run them."""
    from markdown_it import MarkdownIt

    from medcbm.audit.modelcard import model_card
    from medcbm.audit.schema import AuditReport

    files, _ = written
    report = AuditReport.model_validate(json.loads(files["json"].read_text()))
    hostile = ["<img src=x onerror=alert(1)>", "[click](javascript:alert(2))"]
    # DICOM modalities of the training images come from their headers: user text as well
    scope = report.model.scope.model_copy(update={"modalities": ["<img src=y onerror=alert(4)>", "[m](javascript:x)"]})
    model = report.model.model_copy(update={"classes": hostile, "name": "<script>alert(3)</script>",
                                            "concepts_without_bank_entry": ["`code` *x* | y"], "scope": scope})
    card = model_card(report.model_copy(update={"model": model}))
    html = MarkdownIt("commonmark").render(card.split("---", 2)[2])  # the body, as a viewer renders it
    assert "<img" not in html and "<script" not in html and "javascript:" not in html.replace("(javascript:", "")
    assert "<a " not in html and "`code` *x* | y" in html  # shown as typed, not as code or emphasis
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "[click](javascript:alert(2))" in html
    assert "&lt;img src=y onerror=alert(4)&gt;" in html and "[m](javascript:x)" in html


def test_cli_writes_and_refuses_an_existing_folder(audit_model, audit_manifest, feature_cache, tmp_path):
    from typer.testing import CliRunner

    from medcbm.audit.cli import app

    path, frame = audit_manifest
    args = ["audit", "--model", str(audit_model), "--manifest", str(path), "--out", str(tmp_path / "o"),
            "--cache-dir", str(feature_cache), "--cases", ",".join(frame["id"].iloc[:3]), "--occlusion-cases", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "audit.html").is_file() and len(json.loads((tmp_path / "o" / "audit.json").read_text())["cases"]) == 3
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, ConfigError)


@pytest.mark.parametrize("width", [1440, 390])
def test_html_opens_offline_in_headless_chromium(written, tmp_path, width):
    """Real Chromium at desktop and phone width: no request leaves the file, no console error, no
    serious/critical axe violation, and nothing wider than the screen (no sideways scrolling of the page)."""
    files, _ = written
    with offline_page(files["html"].as_uri(), width=width, height=900) as view:
        assert view.page.locator("article.case").count() == 32
        assert view.page.locator("svg[role=img]").count() >= 2
        view.page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # citations shown
        wide = view.page.evaluate("""w => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 5)
            .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""", width)
        assert view.page.evaluate("document.documentElement.scrollWidth") <= width, wide
        bad = view.serious_axe_violations()
        view.page.screenshot(path=str(tmp_path / "report.png"))
    assert view.outside == [] and view.errors == []
    assert not bad, bad


def test_an_adaptation_is_audited_with_what_it_masked(audit_model, ham_own, feature_cache, tmp_path):
    from medcbm.audit.report import write_audit_report
    from medcbm.data.manifest import load_manifest
    from medcbm.workflows.adapt import adapt_cbm

    _, df = ham_own
    test = df[df.split == "test"].drop(columns="split")
    support = pd.concat([test[test.label == c].iloc[:4] for c in ("benign", "malignant")])
    support.to_csv(tmp_path / "support.csv", index=False)
    fitted, adapted_dir = adapt_cbm(audit_model, load_manifest(tmp_path / "support.csv"), site="clinic-x",
                                    adapter="mask", n_mask=2, guard=False, cache_dir=feature_cache, progress=False)
    masked = {c.concept for c in fitted.changes_}
    query = test.drop(support.index)
    query.to_csv(tmp_path / "query.csv", index=False)
    files = write_audit_report(adapted_dir, tmp_path / "query.csv", tmp_path / "adapted", cache_dir=feature_cache,
                               progress=False, occlusion_cases=0)
    data = json.loads(files["json"].read_text())
    (a,) = data["adaptations"]
    assert a["applied"] and a["adapter"] == "mask" and {c["concept"] for c in a["concepts"]} == masked
    case = data["cases"][0]["explanation"]["concepts"]
    assert all(abs(c["contributions"]["malignant"]) < 1e-6 for c in case if c["concept"] in masked)
    html = files["html"].read_text()
    assert "Site adaptations" in html and "adapted site 1" in html and "clinic-x" not in html
    base = write_audit_report(audit_model, tmp_path / "query.csv", tmp_path / "base", cache_dir=feature_cache,
                              progress=False, occlusion_cases=0)
    (b,) = json.loads(base["json"].read_text())["adaptations"]
    assert not b["applied"] and {c["concept"] for c in b["concepts"]} == masked


def test_an_id_map_leads_back_from_each_salted_case_and_only_where_asked(audit_model, audit_manifest, feature_cache,
                                                                        tmp_path):
    from typer.testing import CliRunner

    from medcbm.audit.cli import app

    path, frame = audit_manifest
    base = ["audit", "--model", str(audit_model), "--manifest", str(path), "--cache-dir", str(feature_cache),
            "--occlusion-cases", "0", "--max-cases", "4"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o"), "--id-map", str(tmp_path / "private.csv")])
    assert res.exit_code == 0, res.output
    ids = pd.read_csv(tmp_path / "private.csv")
    assert list(ids.columns) == ["case", "row", "id"] and len(ids) == len(frame)
    assert ids["id"].tolist() == frame["id"].tolist() and ids["row"].tolist() == list(range(1, len(frame) + 1))
    report = json.loads((tmp_path / "o" / "audit.json").read_text())
    shown = {c["explanation"]["case"] for c in report["cases"]} | {i["case"] for i in report["data"]["image_issues"]}
    back = dict(zip(ids["case"], ids["id"]))
    assert shown and shown <= set(back)  # every case id in the report, unreadable images included, maps back
    assert back[report["cases"][0]["explanation"]["case"]] == frame["id"].iloc[0]
    assert not any(f.name == "private.csv" for f in (tmp_path / "o").iterdir())
    assert not any(i in (tmp_path / "o" / "audit.json").read_text() for i in frame["id"])
    inside = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o2"), "--id-map", str(tmp_path / "o2" / "m.csv")])
    assert isinstance(inside.exception, ConfigError) and "meant to be shared" in str(inside.exception)
