"""Privacy by default: salted case ids, no file path in log lines, thumbnails only where they are safe.

An audit writes case ids as ``HMAC-SHA256(salt, id)`` (12 hex digits) unless the user opts in to raw ids. The
salt is random per report unless given (give the same salt to match cases across reports; it is never written).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

from medcbm.errors import ConfigError


class CaseIds:
    """Maps raw case ids to the ids shown in outputs.

    Args:
        salt: secret salt (``None``: a random one, so ids cannot be matched across reports).
        raw: show raw ids (opt-in; never the default).
    """

    def __init__(self, salt: str | None = None, *, raw: bool = False):
        if salt is not None and len(salt) < 8:
            raise ConfigError("the case-id salt must have at least 8 characters")
        self._key = (salt.encode("utf-8") if salt is not None else os.urandom(32))
        self.raw = raw

    def __call__(self, case_id: str) -> str:
        if self.raw:
            return str(case_id)
        return "case-" + hmac.new(self._key, str(case_id).encode("utf-8"), hashlib.sha256).hexdigest()[:12]


def write_id_map(path: str | os.PathLike, ids: CaseIds, manifest_ids: Sequence[str]):
    """Write ``case,row,id`` (the id as shown, the 1-based manifest row, the raw id) atomically to ``path``: the
    user's private key back from salted ids to their records (never written beside a shared report)."""
    import pandas as pd

    from medcbm._io import atomic_write_text

    rows = pd.DataFrame({"case": [ids(i) for i in manifest_ids], "row": range(1, len(manifest_ids) + 1),
                         "id": list(manifest_ids)})
    return atomic_write_text(path, rows.to_csv(index=False))


class _Redact(logging.Filter):
    """Replaces given strings (file paths, folders) in a log record's final message."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        # longest first, so a file path is replaced before its folder
        self.secrets = sorted({s for s in secrets if s and len(s) > 3}, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(s) for s in self.secrets)) if self.secrets else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pattern is None:
            return True
        msg = record.getMessage()
        clean = self.pattern.sub("<redacted>", msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


#: loggers below the audit that may name image files (skip logs, lesion-crop warnings)
PATH_LOGGERS = ("medcbm.data.manifest", "medcbm.backbones.features", "medcbm.data.readers", "medcbm.data.transforms")


@contextmanager
def redacted_logs(secrets: Iterable[str], loggers: Iterable[str] = PATH_LOGGERS) -> Iterator[None]:
    """While active, log lines of ``loggers`` have every string of ``secrets`` replaced by ``<redacted>``."""
    f = _Redact(secrets)
    targets = [logging.getLogger(n) for n in loggers]
    for lg in targets:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in targets:
            lg.removeFilter(f)
