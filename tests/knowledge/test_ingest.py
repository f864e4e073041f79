"""ingest_paths / build_default_store / CLI on real files: skip-bad summaries, strict failures, reuse."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medcbm.errors import DataError
from medcbm.knowledge import build_default_store, ingest_paths, open_store
from tests.knowledge.conftest import CORPUS
from tests.knowledge.test_readers import PUBMED, make_pdf

PTX = ("# Pneumothorax\n\nA visceral pleural line with no lung markings beyond it indicates a pneumothorax. "
       "On supine radiographs air collects anteriorly and basally, giving a deep sulcus sign.\n")


@pytest.fixture()
def mixed_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "ptx.md").write_text(PTX)
    (d / "pubmed.xml").write_text(PUBMED)  # one good article, one without PMID
    (d / "book.pdf").write_bytes(make_pdf(["Actinic keratosis on the face shows a strawberry pattern:",
                                           "erythema between follicles with white-yellow keratin plugs."]))
    (d / "bad.txt").write_bytes(b"\x00\x01\x02 binary junk")
    (d / "latin1.txt").write_bytes("Kaposi sarcome \xe9ruptif".encode("latin-1"))
    return d


def test_skip_bad_records_reasons_and_ingests_the_rest(tmp_path, mixed_dir):
    store = open_store(tmp_path / "s")
    s = ingest_paths(store, [mixed_dir], skip_bad=True)
    assert s.files == 3 and s.documents == 3 and len(store) == 3
    reasons = " | ".join(r for _, r in s.skipped)
    assert len(s.skipped) == 3 and "binary" in reasons and "UTF-8" in reasons and "no PMID" in reasons
    assert "bad.txt" in reasons and "latin1.txt" in reasons
    (hit,) = store.search("strawberry pattern", k=1, mode="bm25")
    assert hit.doc_id == "book" and hit.section == "page 1"
    assert store.manifest()["inputs"].keys() >= {str(mixed_dir / "ptx.md"), str(mixed_dir / "book.pdf")}


def test_strict_ingest_fails_before_writing(tmp_path, mixed_dir):
    store = open_store(tmp_path / "s")
    with pytest.raises(DataError, match="binary"):
        ingest_paths(store, [mixed_dir], skip_bad=False)
    assert len(store) == 0 and store.corpus_hash == ""
    with pytest.raises(DataError, match="nothing to ingest"):
        ingest_paths(store, [mixed_dir / "bad.txt"], skip_bad=True)


def test_build_default_store_reuses_when_up_to_date(default_store):
    n_passages = sum(1 for f in CORPUS.glob("*.jsonl") for line in f.read_text().splitlines() if line.strip())
    store = default_store
    assert len(store) >= n_passages * 0.9  # long passages may give 2 chunks, duplicates none
    h = store.corpus_hash
    manifest_mtime = store.manifest_path.stat().st_mtime_ns
    again = build_default_store(store.location)
    assert again.corpus_hash == h and again.manifest_path.stat().st_mtime_ns == manifest_mtime
    assert {p.source for p in again.search("atypical pigment network", k=5)} == {"medcbm-starter"}


def test_cli_ingest_search_stats(tmp_path, mixed_dir):
    from medcbm.cli import app

    runner = CliRunner()
    store = str(tmp_path / "cli")
    r = runner.invoke(app, ["knowledge", "ingest", str(mixed_dir), "--store", store, "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "3 documents from 3 files" in r.output and r.output.count("skipped:") == 3
    r = runner.invoke(app, ["knowledge", "search", "deep sulcus sign", "--store", store, "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert hits[0]["doc_id"] == "ptx" and hits[0]["title"] == "Pneumothorax" and len(hits) == 2
    r = runner.invoke(app, ["knowledge", "search", "deep sulcus sign", "--store", store, "--mode", "bm25"])
    assert r.exit_code == 0 and "Pneumothorax" in r.output
    r = runner.invoke(app, ["knowledge", "stats", "--store", store])
    assert r.exit_code == 0 and json.loads(r.output)["n_chunks"] == 3
    r = runner.invoke(app, ["knowledge", "ingest", str(mixed_dir / "bad.txt"), "--store", store])
    assert r.exit_code != 0 and isinstance(r.exception, DataError)
