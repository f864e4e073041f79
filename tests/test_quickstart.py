"""The quickstart: the whole journey as a user runs it (real data, a subprocess), and its pieces' contracts on
synthetic records."""

import json

import pandas as pd
import pytest

from medcbm.errors import ConfigError
from medcbm.quickstart import render_summary
from medcbm.quickstart.journey import StageStore, check_writable, stage_keys
from medcbm.quickstart.results import (AcceptResult, AdaptResult, AuditResult, ChangedConcept, DataResult, Gain,
                                       QueryScores, QuickstartResult, Scores, StageRecord, TrainResult)
from medcbm.quickstart.stages import JourneyContext, pick_cases
from tests.test_cli import medcbm


def _result(tmp_path, *, changed: bool) -> QuickstartResult:
    q = QueryScores(acc=0.7, balanced_acc=0.69, auroc=0.8)
    s = Scores(id_acc=0.86, ood_acc=0.5, ood_balanced_acc=0.5, ood_auroc=0.48)
    long_q = "Is there a blue-whitish veil, a structureless blue area with an overlying white ground-glass haze? " * 2
    changes = [ChangedConcept(concept=f"concept_{i}", action="amplified" if i % 2 else "masked", statistic=0.3,
                              factor=2.5 if i % 2 else 0.0, question=long_q) for i in range(8)]
    return QuickstartResult(
        run_dir=str(tmp_path), seconds={"data": 1.0, "train": 140.0, "adapt": 0.4, "accept": 1.0, "audit": 2.0},
        cached={"data": True, "train": True, "adapt": False, "accept": False, "audit": False},
        metrics=str(tmp_path / "metrics.json"),
        data=DataResult(images={"ham10000": 5764, "ph2": 200}, sites={"rosendahl": 1259, "vidir_molemax": 3159},
                        protocol="p", seed=0, split_sizes={"train": 600}, manifest=str(tmp_path / "m.csv")),
        train=TrainResult(probe=s, cbm=s, n_concepts=34, model_dir=str(tmp_path / "models" / "cbm")),
        adapt=AdaptResult(adapter="site", site="new-site", k=4, n_support=8, n_unlabelled=92, n_query=100, before=q,
                          after=q, changed=changed, reason="tfti {'n_mask': 2} not kept: nested estimate cannot tell",
                          estimate=Gain(gain=0.12, ci95=(-0.2, 0.4), n=8, measured_on="support", verdict="cannot tell"),
                          heldout=Gain(gain=0.01, ci95=(-0.01, 0.03), n=100, measured_on="query", verdict="cannot tell"),
                          changes=changes if changed else [],
                          adaptation_dir=str(tmp_path / "models" / "cbm" / "adaptations" / "new-site"),
                          support_manifest="s.csv", unlabelled_manifest="u.csv", query_manifest="q.csv"),
        accept=AcceptResult(verdict="do not deploy", reasons=["balanced accuracy 0.559 is near chance " * 3],
                            balanced_acc=0.559, balanced_acc_ci95=(0.51, 0.61), html=str(tmp_path / "acceptance.html"),
                            json_path="acc.json"),
        audit=AuditResult(n_cases=6, n_correct=5, n_wrong=1, n_images=100, html=str(tmp_path / "audit.html"),
                          json_path="a.json", model_card="MODEL_CARD.md"))


@pytest.mark.parametrize("changed", [True, False])
def test_summary_fits_a_100_column_terminal_and_names_the_files(tmp_path, changed):
    res = _result(tmp_path, changed=changed)
    text = render_summary(res)
    assert max(map(len, text.splitlines())) <= 100
    assert f"Files in {tmp_path}" in text and "audit.html" in text and "\n  metrics        metrics.json" in text
    assert "train 140 s (cached)" in text
    assert ("model left unchanged" in text) != changed and "DO NOT DEPLOY" in text and "acceptance.html" in text
    assert "[95 % interval -0.200, +0.400] on 8 images" in text
    assert ("and 2 more" in text) == changed  # six changed concepts shown, the rest counted


def test_pick_cases_takes_confident_right_answers_a_mistake_then_borderline_cases():
    frame = pd.DataFrame({"prediction": ["a", "a", "b", "b", "a", "b"],
                          "p_a": [0.9, 0.6, 0.2, 0.45, 0.8, 0.1], "p_b": [0.1, 0.4, 0.8, 0.55, 0.2, 0.9]})
    truth = ["a", "a", "b", "b", "b", "a"]
    rows = pick_cases(frame, truth, ["a", "b"], 4)
    # 0 and 2: the most confident correct case per class; 5: the most confident mistake; 3: the least confident
    assert rows == [0, 2, 5, 3]
    assert sorted(pick_cases(frame, truth, ["a", "b"], 10)) == list(range(6))  # never more rows than there are


def test_stage_records_are_reused_only_with_the_same_key_and_their_files(tmp_path):
    ctx = JourneyContext(run_dir=tmp_path, data_root=tmp_path, cache_dir=tmp_path / "f")
    keys = stage_keys(ctx)
    assert len(set(keys.values())) == 5
    assert stage_keys(JourneyContext(run_dir=tmp_path, data_root=tmp_path, cache_dir=tmp_path / "f", k=8))["train"] \
        == keys["train"] != stage_keys(JourneyContext(run_dir=tmp_path, data_root=tmp_path, cache_dir=tmp_path / "f",
                                                     seed=1))["train"]
    res = _result(tmp_path, changed=True).audit
    for f in ("audit.html", "a.json", "MODEL_CARD.md"):
        (tmp_path / f).write_text("x")
    res = res.model_copy(update={"json_path": str(tmp_path / "a.json"), "model_card": str(tmp_path / "MODEL_CARD.md")})
    store = StageStore(tmp_path / "stages")
    store.save(StageRecord(stage="audit", key=keys["audit"], seconds=2.0, result=res))
    assert store.load("audit", keys["audit"], ctx).result == res
    assert store.load("audit", keys["adapt"], ctx) is None  # other inputs
    (tmp_path / "audit.html").unlink()
    assert store.load("audit", keys["audit"], ctx) is None  # its report is gone
    (tmp_path / "stages" / "audit.json").write_text("{not json")
    assert store.load("audit", keys["audit"], ctx) is None  # a torn record is run again, not an error


def test_an_unwritable_run_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot write to .*file.*--run-dir"):
        check_writable(tmp_path / "file" / "run")
    check_writable(tmp_path / "ok")
    assert (tmp_path / "ok").is_dir() and not list((tmp_path / "ok").iterdir())


def test_quickstart_walks_the_journey_and_resumes(tmp_path, data_root, feature_cache):
    run = tmp_path / "run"
    args = ("quickstart", "--run-dir", run, "--cache-dir", feature_cache)
    env = {"MEDCBM_DATA": str(data_root)}
    r = medcbm(*args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((run / "metrics.json").read_text())
    probe, cbm = res["train"]["probe"], res["train"]["cbm"]
    assert probe["id_acc"] > 0.8 and probe["ood_acc"] < 0.65  # the black box collapses at the site it never saw
    gap = {name: m["id_acc"] - m["ood_acc"] for name, m in (("probe", probe), ("cbm", cbm))}
    assert cbm["ood_acc"] > probe["ood_acc"] + 0.05 and gap["cbm"] < gap["probe"] - 0.1
    adapt, accept, audit = res["adapt"], res["accept"], res["audit"]
    assert adapt["n_support"] == 8 and adapt["n_query"] >= 80 and adapt["n_unlabelled"] >= 80
    parts = {n: pd.read_csv(adapt[f"{n}_manifest"]) for n in ("support", "unlabelled", "query")}
    assert set(parts["support"]["site"]) == set(parts["query"]["site"]) == {"vidir_modern"}  # never in training
    held = set(parts["query"]["patient_id"])
    assert not held & (set(parts["support"]["patient_id"]) | set(parts["unlabelled"]["patient_id"]))
    h = adapt["heldout"]
    assert h["n"] == adapt["n_query"] and h["ci95"][0] <= h["gain"] <= h["ci95"][1]
    assert abs(adapt["after"]["balanced_acc"] - adapt["before"]["balanced_acc"] - h["gain"]) < 1e-9
    assert adapt["estimate"]["n"] == 8 and adapt["estimate"]["ci95"][1] - adapt["estimate"]["ci95"][0] > 0.2
    acc_doc = json.loads((run / "acceptance" / "acceptance.json").read_text())
    assert acc_doc["verdict"] == accept["verdict"] and accept["reasons"] and acc_doc["n"] == adapt["n_query"]
    assert acc_doc["adaptation"]["gain"] == pytest.approx(h["gain"])
    assert "vidir" not in (run / "acceptance" / "acceptance.html").read_text()
    assert audit["n_correct"] >= 1 and audit["n_wrong"] >= 1
    report = json.loads((run / "audit" / "audit.json").read_text())
    assert len(report["cases"]) == audit["n_cases"] == 6
    # the summary says where the report and the metrics are, and fits a 100-column terminal
    assert f"Files in {run}" in r.stdout and "audit report   audit/audit.html" in r.stdout
    assert "acceptance     acceptance/acceptance.html" in r.stdout and "verdict: " in r.stdout
    assert "metrics        metrics.json" in r.stdout
    assert "linear probe" in r.stdout and "before" in r.stdout and max(map(len, r.stdout.splitlines())) <= 100
    assert all(not v for v in res["cached"].values())

    # a rerun only re-prints; an interrupted one (audit lost) resumes at the audit
    r2 = medcbm(*args, env=env)
    assert r2.returncode == 0 and r2.stdout.replace(" (cached)", "") == r.stdout, r2.stderr[-2000:]
    assert r2.stderr.count("done before, reusing it") == 5
    (run / "stages" / "audit.json").unlink()
    r3 = medcbm(*args, env=env)
    assert r3.returncode == 0 and "quickstart stage audit: running" in r3.stderr
    assert json.loads((run / "metrics.json").read_text())["cached"] == {
        "data": True, "train": True, "adapt": True, "accept": True, "audit": False}

    # a run directory that cannot be written: one line naming it, no traceback
    blocked = tmp_path / "file"
    blocked.write_text("")
    r4 = medcbm("quickstart", "--run-dir", blocked / "run", "--cache-dir", feature_cache, env=env)
    assert r4.returncode == 2 and "cannot write to" in r4.stderr and "--run-dir" in r4.stderr
    assert "Traceback" not in r4.stderr
