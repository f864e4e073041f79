"""The shipped banks: complete provenance traceable to the starter corpus, PH2 coverage, and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medcbm.cli import app
from medcbm.concepts import default_bank_path, load_bank
from medcbm.concepts.quality import bank_quality

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [("dermoscopy", "ham10000", 7), ("dermoscopy", "benign_malignant", 2), ("chest_xray", "covid", 3)]


def _ws(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    out = {}
    for f in (REPO / "knowledge" / "corpus").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out[r["id"]] = _ws(r["contents"])
    return out


@pytest.mark.parametrize("modality, task, n_classes", SHIPPED)
def test_shipped_bank_provenance_is_complete_and_traceable(corpus, modality, task, n_classes):
    bank = load_bank(default_bank_path(modality, task))
    assert bank.modality == modality and len(bank.classes) == n_classes and len(bank.concepts) >= 15
    q = bank_quality(bank)
    assert q["provenance_complete"] == 1.0 and q["duplicate_rate"] == 0.0
    for c in bank.concepts:
        assert c.provenance.doc_id in corpus, c.id
        assert _ws(c.provenance.reference) in corpus[c.provenance.doc_id], c.id
        # extractive concepts, plus the vocabulary concepts `medcbm concepts cite` added (issue 25)
        assert c.generator.backend in ("extractive", "vocabulary")
        if c.generator.backend == "vocabulary":
            assert c.grounding.method == "vocabulary" and len({x.doc_id for x in c.citations}) >= 2, c.id
        for x in c.citations:
            assert _ws(x.sentence) in corpus[x.doc_id], c.id
        assert len(c.classes) == n_classes
        for a in c.classes:
            for e in a.evidence:
                assert _ws(e.sentence) in corpus[e.doc_id]
    assert all(r.reason for r in bank.rejected)


def test_dermoscopy_bank_covers_the_ph2_criteria():
    q = bank_quality(load_bank(default_bank_path("dermoscopy", "ham10000")))
    assert q["target_coverage"] >= 0.8, q["uncovered"]


def test_cli_show_prior_quality():
    path = str(default_bank_path("dermoscopy", "ham10000"))
    runner = CliRunner()
    r = runner.invoke(app, ["concepts", "show", path, "--rejected"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "blue_whitish_veil" in r.output and "ph2:blue_whitish_veil" in r.output and "names_class" in r.output
    r = runner.invoke(app, ["concepts", "prior", path, "--evidence"], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and "arborizing_vessels" in r.output and "+1" in r.output
    r = runner.invoke(app, ["concepts", "quality", path])
    assert r.exit_code == 0 and json.loads(r.output)["provenance_complete"] == 1.0
