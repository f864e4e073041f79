"""A reviewer's corrections, stored append-only and durably in one SQLite file (WAL, ``synchronous=FULL``).

Every correction is a new row — reviewer, UTC time, the model's fingerprint and the value it replaced — written
in its own ``BEGIN IMMEDIATE`` transaction, so two tabs, two reviewers or two servers on one file serialise
their writes and none is lost; a committed row survives the process being killed (SQLite's WAL is fsynced on
every commit). Rows are never updated or deleted (triggers refuse it): the current value of a field is its
latest row. Cases are keyed by the image's content hash, never by a patient id or a path.

The store belongs to one model: it records the model's fingerprint when it is created and refuses to open for,
or take corrections against, another one.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from medcbm.errors import ConfigError, DataError

#: what a reviewer may say about a concept ("cleared": withdraw an earlier answer)
CONCEPT_VALUES = ("present", "absent", "unsure", "cleared")
#: the field name of the final diagnosis (concept names are identifiers, so they cannot collide with it)
DIAGNOSIS = ":diagnosis"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS corrections(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    case_key TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    previous TEXT,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL,
    model TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_by_case ON corrections(case_key, field, seq);
CREATE TRIGGER IF NOT EXISTS corrections_no_update BEFORE UPDATE ON corrections
    BEGIN SELECT RAISE(ABORT, 'corrections are append-only'); END;
CREATE TRIGGER IF NOT EXISTS corrections_no_delete BEFORE DELETE ON corrections
    BEGIN SELECT RAISE(ABORT, 'corrections are append-only'); END;
"""


@dataclass(frozen=True)
class Correction:
    """One stored correction (``previous``: the value it replaced, ``None`` for the first answer)."""

    seq: int
    case_key: str
    field: str
    value: str
    previous: str | None
    reviewer: str
    at: str
    model: str


class CorrectionStore:
    """The corrections of one model's review, in the SQLite file ``path`` (created if missing).

    Args:
        path: the store file.
        model_fingerprint: the reviewed model's fingerprint; a store made for another model is refused.

    Raises:
        ConfigError: the file belongs to another model, or is not a medcbm review store.
    """

    def __init__(self, path: str | os.PathLike, *, model_fingerprint: str):
        self.path = Path(path)
        self.model_fingerprint = model_fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                con.executescript(_SCHEMA)
                self._claim(con)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not a medcbm review store ({exc}); give another --store") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # one short-lived connection per call: safe across the server's threads and across processes
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit: a killed server loses nothing
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    def _claim(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                                [("schema", SCHEMA_VERSION), ("model", self.model_fingerprint),
                                 ("salt", secrets.token_hex(16)), ("created", _now())])
            elif rows.get("model") != self.model_fingerprint:
                raise ConfigError(f"{self.path} holds the corrections of another model (fingerprint "
                                  f"{str(rows.get('model'))[:12]}, this model is {self.model_fingerprint[:12]}); "
                                  "give another --store, or review the model it was made for")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @property
    def salt(self) -> str:
        """The store's secret salt for the case ids shown (stable, so ids survive a restart)."""
        with self._connect() as con:
            return con.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()[0]

    def record(self, case_key: str, field: str, value: str, *, reviewer: str,
               model_fingerprint: str | None = None) -> Correction:
        """Append one correction and return it (with the value it replaced).

        Args:
            model_fingerprint: the fingerprint the reviewer's page was made for (default: the store's model).

        Raises:
            ConfigError: the page was made for another model (reload it).
        """
        fp = model_fingerprint or self.model_fingerprint
        if fp != self.model_fingerprint:
            raise ConfigError(f"this correction was made against model {fp[:12]}, but the review is of model "
                              f"{self.model_fingerprint[:12]}; reload the page")
        if not reviewer or len(reviewer) > 80:
            raise DataError("a correction needs a reviewer name of 1-80 characters", field="reviewer")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # the previous value is read under the same write lock
            try:
                row = con.execute("SELECT value FROM corrections WHERE case_key = ? AND field = ? "
                                  "ORDER BY seq DESC LIMIT 1", (case_key, field)).fetchone()
                at = _now()
                cur = con.execute("INSERT INTO corrections(case_key, field, value, previous, reviewer, at, model) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  (case_key, field, value, row[0] if row else None, reviewer, at, fp))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return Correction(int(cur.lastrowid), case_key, field, value, row[0] if row else None, reviewer, at, fp)

    def history(self, case_key: str | None = None) -> list[Correction]:
        """Every correction (of one case, or all), oldest first."""
        sql = "SELECT seq, case_key, field, value, previous, reviewer, at, model FROM corrections"
        args: tuple = ()
        if case_key is not None:
            sql, args = sql + " WHERE case_key = ?", (case_key,)
        with self._connect() as con:
            return [Correction(*r) for r in con.execute(sql + " ORDER BY seq", args)]

    def current(self, case_key: str | None = None) -> dict[str, dict[str, str]]:
        """``case_key -> field -> latest value`` ("cleared" answers and empty cases left out)."""
        out: dict[str, dict[str, str]] = {}
        for c in self.history(case_key):
            fields = out.setdefault(c.case_key, {})
            if c.value == "cleared":
                fields.pop(c.field, None)
            else:
                fields[c.field] = c.value
        return {k: v for k, v in out.items() if v}

    def integrity(self) -> str:
        """SQLite's own integrity check ("ok" when the file is sound)."""
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
