"""The correction store on its own: append-only, the previous value kept, one model per store, and two writer
processes on one file losing nothing."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from medcbm.errors import ConfigError
from medcbm.review.store import CorrectionStore

FP = "a" * 32


def test_corrections_are_append_only_and_keep_the_value_they_replaced(tmp_path):
    store = CorrectionStore(tmp_path / "s.sqlite", model_fingerprint=FP)
    first = store.record("img1", "blue_whitish_veil", "present", reviewer="dr-a")
    second = store.record("img1", "blue_whitish_veil", "absent", reviewer="dr-b")
    store.record("img1", "streaks", "unsure", reviewer="dr-a")
    assert (first.previous, second.previous) == (None, "present")
    assert store.current() == {"img1": {"blue_whitish_veil": "absent", "streaks": "unsure"}}
    store.record("img1", "streaks", "cleared", reviewer="dr-a")
    assert store.current() == {"img1": {"blue_whitish_veil": "absent"}}
    assert [c.reviewer for c in store.history("img1")] == ["dr-a", "dr-b", "dr-a", "dr-a"]
    con = sqlite3.connect(tmp_path / "s.sqlite")
    for sql in ("UPDATE corrections SET value = 'x'", "DELETE FROM corrections"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity() == "ok"


def test_a_store_belongs_to_one_model(tmp_path):
    CorrectionStore(tmp_path / "s.sqlite", model_fingerprint=FP).record("img1", "streaks", "present", reviewer="r")
    with pytest.raises(ConfigError, match="another model.*--store"):
        CorrectionStore(tmp_path / "s.sqlite", model_fingerprint="b" * 32)
    store = CorrectionStore(tmp_path / "s.sqlite", model_fingerprint=FP)
    with pytest.raises(ConfigError, match="reload the page"):
        store.record("img1", "streaks", "absent", reviewer="r", model_fingerprint="b" * 32)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all, just text" * 100)
    with pytest.raises(ConfigError, match="not a medcbm review store"):
        CorrectionStore(tmp_path / "junk.sqlite", model_fingerprint=FP)


def _writer(path: str, reviewer: str, n: int) -> None:
    store = CorrectionStore(path, model_fingerprint=FP)
    for i in range(n):
        store.record("img1", "streaks", ("present", "absent")[i % 2], reviewer=reviewer)
        store.record(f"img-{reviewer}", "dots", "present", reviewer=reviewer)


def test_two_writer_processes_on_one_store_lose_nothing(tmp_path):
    path = str(tmp_path / "s.sqlite")
    CorrectionStore(path, model_fingerprint=FP)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, name, 60)) for name in ("dr-a", "dr-b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = CorrectionStore(path, model_fingerprint=FP)
    rows = store.history()
    assert len(rows) == 240
    shared = [c for c in rows if c.case_key == "img1"]
    assert {c.reviewer for c in shared} == {"dr-a", "dr-b"} and len(shared) == 120
    # each write saw the one committed just before it: the writes were serialised, none overwrote another
    assert shared[0].previous is None
    assert all(b.previous == a.value for a, b in zip(shared, shared[1:]))
    assert store.integrity() == "ok"
