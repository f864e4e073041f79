"""From a review to an adaptation: the exported manifest, and ``adapt --corrections`` recalibrating the concepts the
reviewer answered (shrunk by how many cases answered them) with the diagnoses as the labelled support."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medcbm.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def reviewed(audit_model, review_manifest, feature_cache, tmp_path_factory):
    """12 cases reviewed: one concept marked present on all, another absent, and the true diagnosis."""
    from medcbm.data.manifest import load_manifest
    from medcbm.review.export import export_corrections
    from medcbm.review.session import open_review

    d = tmp_path_factory.mktemp("reviewed")
    s = open_review(audit_model, load_manifest(review_manifest).check_files(), store=d / "s.sqlite",
                    cache_dir=feature_cache, progress=False)
    truth = pd.read_csv(review_manifest).set_index("id")["label"]
    up, down = s.concepts[0], s.concepts[1]
    raw_ids = pd.read_csv(review_manifest)["id"].tolist()
    by_class = {k: [c for c in s.cases if truth[raw_ids[c.row]] == k][:6] for k in s.classes}
    cases = [c for k in s.classes for c in by_class[k]]
    rest = [c for c in s.cases if c not in cases]
    for c in cases:
        s.answer(c.case_id, up, "present", reviewer="dr-a")
        s.answer(c.case_id, down, "absent", reviewer="dr-a")
        s.diagnose(c.case_id, truth[raw_ids[c.row]], reviewer="dr-a")
    s.answer(rest[0].case_id, up, "unsure", reviewer="dr-a")  # reviewed, no value, no diagnosis
    path, n = export_corrections(s, d / "reviewed.csv")
    return s, path, n, up, down, cases, rest[0]


def test_the_export_is_a_manifest_of_the_reviewed_cases(reviewed):
    s, path, n, up, down, cases, unsure = reviewed
    df = pd.read_csv(path)
    assert n == 13 and len(df) == 13
    assert set(df["id"]) == {c.case_id for c in [*cases, unsure]}  # salted ids, never the manifest's
    first = df.set_index("id").loc[cases[0].case_id]
    assert first[f"concept_{up}"] == 1 and first[f"concept_{down}"] == 0 and first["label"] in s.classes
    last = df.set_index("id").loc[unsure.case_id]
    assert np.isnan(last[f"concept_{up}"]) and last["label"] == "unknown"


def test_adapt_with_corrections_recalibrates_the_answered_concepts(reviewed, audit_model, feature_cache, tmp_path):
    from medcbm.adapt.corrections import N0
    from medcbm.data.manifest import load_manifest
    from medcbm.workflows.adapt import adapt_cbm

    s, path, _, up, down, cases, _ = reviewed
    fitted, folder = adapt_cbm(audit_model, None, corrections=load_manifest(path).check_files(), site="reviewed",
                               out_dir=tmp_path / "adapt", cache_dir=feature_cache, progress=False)
    doc = json.loads((folder / "adaptation.json").read_text())
    changes = {c["concept"]: c for c in doc["changes"] if c["action"] == "recalibrated"}
    assert set(changes) == {up, down}
    P = np.array([c.P for c in cases])
    j_up, j_down = s.concepts.index(up), s.concepts.index(down)
    # shift = sum(z(t) - z(p)) / (n + n0), read as the head reads an answer (clipped to the training range):
    # towards present for the one marked present on every case, and vice versa
    Z = s.model.concept_inputs(P.astype(np.float32))
    T = P.copy()
    T[:, j_up], T[:, j_down] = 1.0, 0.0
    ZT = s.model.concept_inputs(T.astype(np.float32))
    assert changes[up]["statistic"] == pytest.approx((ZT - Z)[:, j_up].sum() / (12 + N0), abs=1e-3)
    assert changes[down]["statistic"] == pytest.approx((ZT - Z)[:, j_down].sum() / (12 + N0), abs=1e-3)
    lo, hi = s.model.concept_inputs(np.vstack([np.zeros(len(s.concepts)), np.ones(len(s.concepts))]).astype(np.float32))
    assert all(abs(c["statistic"]) <= (hi - lo)[s.concepts.index(k)] for k, c in changes.items())
    assert changes[up]["factor"] == 12
    assert doc["edit"]["shift"][j_up] > 0 > doc["edit"]["shift"][j_down]
    assert doc["support"]["n"] == 12 and doc["support"]["reviewed"] == {"n": 13, "concept_answers": 24}
    assert doc["params"]["concept_corrections"] is True and doc["estimate"]["n"] == 12
    assert "recalibrated on 13 reviewed image(s)" in doc["reason"]


def test_bad_corrections_get_one_line_errors(reviewed, audit_model, feature_cache, tmp_path):
    from medcbm.cli import app
    from medcbm.data.manifest import load_manifest
    from medcbm.workflows.adapt import adapt_cbm, read_corrections

    s, path, *_ = reviewed
    df = pd.read_csv(path)
    col = next(c for c in df.columns if c.startswith("concept_"))
    df[col] = df[col].astype(object)
    df.loc[2, col] = "maybe"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=rf"manifest row 3.*{col}|{col}.*row 3"):
        read_corrections(load_manifest(tmp_path / "bad.csv"), s.concepts)
    df.drop(columns=[c for c in df.columns if c.startswith("concept_")]).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(DataError, match="no column names one of the model's concepts"):
        read_corrections(load_manifest(tmp_path / "none.csv"), s.concepts)
    with pytest.raises(ConfigError, match="does not use concept corrections"):
        adapt_cbm(audit_model, None, corrections=load_manifest(path), site="x", adapter="tfti",
                  out_dir=tmp_path / "a", cache_dir=feature_cache, progress=False)
    res = CliRunner().invoke(app, ["adapt", "-m", str(audit_model), "--corrections", str(path), "--support", str(path),
                                   "--site", "x", "--out", str(tmp_path / "b"), "--cache-dir", str(feature_cache)])
    assert res.exit_code != 0 and "not both" in str(res.exception)


def test_an_adaptation_can_be_reviewed_and_has_its_own_store_identity(reviewed, audit_model, review_manifest,
                                                                       feature_cache, tmp_path):
    from medcbm.adapt.store import load_model
    from medcbm.data.manifest import load_manifest
    from medcbm.review.session import open_review
    from medcbm.workflows.adapt import adapt_cbm

    import shutil

    s, path, *_ = reviewed
    base = shutil.copytree(audit_model, tmp_path / "model")  # the shared test model keeps no adaptation
    _, folder = adapt_cbm(base, None, corrections=load_manifest(path).check_files(), site="reviewed",
                          cache_dir=feature_cache, progress=False)
    with pytest.raises(ConfigError, match="another model"):
        open_review(folder, load_manifest(review_manifest).check_files(), store=s.store.path,
                    cache_dir=feature_cache, progress=False)
    a = open_review(folder, load_manifest(review_manifest).check_files(), store=tmp_path / "a.sqlite",
                    cache_dir=feature_cache, progress=False)
    adapted, _ = load_model(folder)
    assert a.fingerprint != s.fingerprint and a.meta["adaptation"]["site"] == "reviewed"
    # float32 through a batch vs one row: the summation order may differ (BLAS kernels), so ~1 ulp apart
    np.testing.assert_allclose(a.cases[0].proba, adapted.predict_proba_from_concepts(a.cases[0].P[None, :])[0],
                               rtol=1e-6)
