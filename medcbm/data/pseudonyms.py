"""Pseudonymous patient and institution values at import: keyed hashes, with the key kept outside the manifest.

A DICOM header carries the patient id and the institution name; the manifest needs them only to keep a
patient's images in one split and to group images by site. By default they are stored as
``HMAC-SHA256(key, value)`` — stable across imports with the same key, so splits and site groups still work,
but not reversible from the manifest. The key is a random file created on first use (``~/.medcbm/pseudonym.key``,
or ``$MEDCBM_PSEUDONYM_KEY``): share it only with whoever must link manifests imported separately.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from medcbm._io import atomic_write_bytes
from medcbm.errors import ConfigError

ENV_KEY_FILE = "MEDCBM_PSEUDONYM_KEY"


def key_path() -> Path:
    """Where the pseudonym key lives: ``$MEDCBM_PSEUDONYM_KEY`` or ``~/.medcbm/pseudonym.key``."""
    return Path(os.environ.get(ENV_KEY_FILE) or Path.home() / ".medcbm" / "pseudonym.key")


def load_or_create_key(path: Path | None = None) -> bytes:
    """The key (32 random bytes written with owner-only permissions the first time)."""
    p = path or key_path()
    if p.is_file():
        key = p.read_bytes()
        if len(key) < 16:
            raise ConfigError(f"pseudonym key {p} is shorter than 16 bytes; delete it to create a new one (new "
                              "pseudonyms will then not match earlier imports)")
        return key
    try:
        atomic_write_bytes(p, os.urandom(32))
        os.chmod(p, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create the pseudonym key {p} ({exc.strerror}); set {ENV_KEY_FILE} to a "
                          "writable path") from None
    return p.read_bytes()


class Pseudonymizer:
    """Keyed hashes for identifying values (``pt-…`` for patients, ``site-…`` for institutions)."""

    def __init__(self, key: bytes | None = None):
        self._key = key  # read (or created) on first use: a folder without identifiers never touches it

    def _hash(self, value: str, n: int) -> str:
        if self._key is None:
            self._key = load_or_create_key()
        return hmac.new(self._key, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()[:n]

    def patient(self, value: str) -> str:
        return "pt-" + self._hash(value, 16)

    def site(self, value: str) -> str:
        return "site-" + self._hash(value, 10)
