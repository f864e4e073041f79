"""Crash safety of an embedded store: an ingest interrupted after the vector upsert, damaged BM25 files,
and two processes writing one folder (the write lock, and a lock left by a killed writer)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from medcbm.knowledge import add_documents, open_store
from medcbm.knowledge.locking import StoreBusyError
from medcbm.knowledge.passage import Document
from tests.knowledge.conftest import REPO

LATE = Document("late-1", "Zygomatic arch fractures show a step-off of the cortex on the submentovertex view, "
                          "often with depression of the malar eminence.", title="Zygoma", source="t")
OTHER = Document("other-1", "Tracheal deviation away from the opaque hemithorax suggests a large pleural effusion "
                            "rather than collapse of the lung.", title="Deviation", source="t")


def _bm25_ids(path, query: str) -> list[str]:
    return [p.doc_id for p in open_store(path).search(query, k=3, mode="bm25")]


def test_crash_after_upsert_is_repaired_on_reopen(tmp_path, small_docs, monkeypatch, caplog):
    path = tmp_path / "s"
    store = open_store(path)
    add_documents(store, small_docs[:10])

    def power_cut(*args, **kwargs):
        raise KeyboardInterrupt  # after the upsert, before the BM25 index and corpus hash are recorded

    monkeypatch.setattr(store, "finalize", power_cut)
    with pytest.raises(KeyboardInterrupt):
        add_documents(store, [LATE])
    reopened = open_store(path)
    assert reopened.write_pending and reopened.corpus_hash == ""
    with caplog.at_level(logging.WARNING, logger="medcbm.knowledge.store"):
        hits = reopened.search("zygomatic arch step-off", k=3, mode="bm25")
    assert hits[0].doc_id == "late-1" and "left mid-write" in caplog.text
    # repaired for good: marker cleared, hash recorded, and the next reader loads the saved index
    assert not reopened.write_pending and reopened.corpus_hash
    assert _bm25_ids(path, "zygomatic arch step-off")[0] == "late-1"
    assert open_store(path).search("malar eminence depression", k=1, mode="dense")[0].doc_id == "late-1"


@pytest.mark.parametrize("damage", ["truncated-chunks", "garbage-chunks", "row-missing", "bad-index-json",
                                    "bad-npy", "missing-vocab"])
def test_damaged_bm25_files_are_rebuilt(tmp_path, small_docs, damage, caplog):
    path = tmp_path / "s"
    add_documents(open_store(path), [*small_docs[:8], LATE])
    want = _bm25_ids(path, "zygomatic arch step-off")
    bm25 = path / "bm25"
    chunks = bm25 / "chunks.jsonl"
    if damage == "truncated-chunks":
        chunks.write_bytes(chunks.read_bytes()[: chunks.stat().st_size // 2])
    elif damage == "garbage-chunks":
        chunks.write_bytes(b"\x00\xff not json\n")
    elif damage == "row-missing":  # still valid JSON lines, one fewer than recorded
        chunks.write_text("".join(chunks.read_text().splitlines(keepends=True)[:-1]))
    elif damage == "bad-index-json":
        (bm25 / "index.json").write_text("[1, 2")
    elif damage == "bad-npy":
        (bm25 / "data.csc.index.npy").write_bytes(b"not an array")
    else:
        (bm25 / "vocab.index.json").unlink()
    with caplog.at_level(logging.INFO, logger="medcbm.knowledge.store"):
        assert _bm25_ids(path, "zygomatic arch step-off") == want
    assert "rebuilding" in caplog.text
    assert _bm25_ids(path, "zygomatic arch step-off") == want  # the rewritten index loads cleanly


def test_cli_search_after_damage_prints_results(tmp_path, small_docs):
    from medcbm.cli import app

    path = tmp_path / "s"
    add_documents(open_store(path), [*small_docs[:5], LATE])
    (path / "bm25" / "chunks.jsonl").write_text('{"id": "late-1#0", "te')
    r = CliRunner().invoke(app, ["knowledge", "search", "zygomatic arch", "--store", str(path), "--mode", "bm25",
                                 "--json", "-k", "1"])
    assert r.exit_code == 0, r.output
    assert '"doc_id": "late-1"' in r.output


# A writer in another process that stops dead after its upsert, holding the lock, until it is killed.
_HOLDER = textwrap.dedent("""
    import sys, time
    from medcbm.knowledge import add_documents, open_store
    from medcbm.knowledge.passage import Document

    store = open_store(sys.argv[1])
    def stall(*args, **kwargs):
        print("upserted", flush=True)
        time.sleep(600)
    store.finalize = stall
    add_documents(store, [Document("late-1", sys.argv[2], title="Zygoma", source="t")])
""")


@pytest.mark.slow
def test_second_process_is_refused_then_a_killed_writer_is_recovered(tmp_path, small_docs):
    from medcbm.cli import app

    path = tmp_path / "s"
    add_documents(open_store(path), small_docs[:5])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), LATE.text], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "upserted", "the writer process did not get to its upsert"
        t0 = time.monotonic()
        with pytest.raises(StoreBusyError, match=rf"store {path} is being written by another process "
                                                 rf"\(pid {holder.pid}\); wait"):
            add_documents(open_store(path, lock_timeout=1.0), [OTHER])
        assert 1.0 <= time.monotonic() - t0 < 5
        doc = tmp_path / "other.txt"
        doc.write_text(OTHER.text)
        r = CliRunner().invoke(app, ["knowledge", "ingest", str(doc), "--store", str(path), "--lock-timeout", "0"])
        assert r.exit_code != 0 and isinstance(r.exception, StoreBusyError)
    finally:
        holder.kill()  # dies holding the lock, mid-write
        holder.wait(timeout=30)
    t0 = time.monotonic()
    store = open_store(path)
    add_documents(store, [OTHER])  # the dead writer's lock does not block
    assert time.monotonic() - t0 < 10
    assert not store.write_pending
    # the killed writer's chunk reached the vectors; the finalised BM25 index includes it
    assert _bm25_ids(path, "zygomatic arch step-off")[0] == "late-1"
    assert _bm25_ids(path, "tracheal deviation opaque hemithorax")[0] == "other-1"
