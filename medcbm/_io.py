"""Atomic file writes and content hashing, shared by every module that persists state."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Atomically write JSON (keys kept in insertion order; NaN/inf written as null so files stay valid JSON)."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False, default=_json_default) + "\n")


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None, recursively (e.g. the AUROC of a one-class subgroup); numpy becomes Python."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths show up in metrics and manifests
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file_or_none(path: str | os.PathLike) -> str | None:
    """:func:`sha256_file`, or ``None`` when the file does not exist (the caller names the row)."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def sha256_text(*parts: str) -> str:
    """Hex SHA-256 of the given strings joined by NUL (stable identity for configs and lists)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


# a spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_escape(value: Any) -> Any:
    """Prefix a text cell that a spreadsheet would run as a formula with ``'``; other values pass through."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_unescape(value: Any) -> Any:
    """Undo :func:`csv_escape` (for files medcbm wrote and reads back)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def safe_csv_bytes(frame) -> bytes:
    """``frame`` as UTF-8 CSV with every formula-like text cell escaped (safe to open in a spreadsheet)."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = frame.copy()
    for col in out.columns:
        if is_object_dtype(out[col]) or is_string_dtype(out[col]):
            out[col] = out[col].map(csv_escape)
    return out.to_csv(index=False).encode("utf-8")
