"""The inter-process write lock of an embedded knowledge store folder.

chroma's embedded ``PersistentClient`` is not safe for several processes writing one folder, so every medcbm
writer (ingest, copy, BM25 repair) holds ``DIR/.medcbm-write.lock`` while it writes. The lock is a POSIX
``fcntl.flock`` on that file: the kernel releases it when the holding process exits, however it exits, so a
crashed or killed writer never leaves a stale lock behind (the pid written into the file only serves the
message). A second writer *waits* up to ``timeout`` seconds (default 10: enough to ride out a short overlap,
such as a search repairing the BM25 index) and is then *refused* with :class:`StoreBusyError` naming the
holder's pid, instead of silently queueing behind an ingest that may run for an hour. Servers started with
``chroma run`` serialise writes themselves and need no lock. The lock is per host: it does not protect a
store folder on a network file system written from several machines (use a chroma server for that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from medcbm.errors import MedcbmError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the store then runs unlocked
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_NAME = ".medcbm-write.lock"
DEFAULT_TIMEOUT_S = 10.0
_POLL_S = 0.1

# path -> (fd, depth): one flock per folder and process, re-entered by nested writers (add_documents calls
# finalize); flock locks belong to the open file, so a second open in this process would block on the first
_HELD: dict[str, tuple[int, int]] = {}
_GUARD = threading.Lock()


class StoreBusyError(MedcbmError):
    """Another process is writing the embedded store folder."""


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return pid if pid.isdigit() else "unknown"


def _try_acquire(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def write_lock(folder: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the write lock of the store ``folder`` (re-entrant within a process).

    Raises:
        StoreBusyError: another live process held the lock for longer than ``timeout`` seconds.
    """
    key = str(Path(folder).resolve())
    with _GUARD:
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            acquired = True
        else:
            acquired = False
    if not acquired:
        if fcntl is None:  # pragma: no cover
            logger.debug("no fcntl on this platform; %s is written without a lock", folder)
            yield
            return
        Path(key).mkdir(parents=True, exist_ok=True)
        fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, timeout)
        while not _try_acquire(fd):
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise StoreBusyError(
                    f"store {folder} is being written by another process (pid {holder}); wait for it to finish, "
                    "or serve the folder with `chroma run --path DIR` and use --store-url for concurrent writers")
            time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        with _GUARD:
            _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        with _GUARD:
            fd, depth = _HELD[key]
            if depth > 1:
                _HELD[key] = (fd, depth - 1)
            else:
                del _HELD[key]
                os.ftruncate(fd, 0)
                os.close(fd)  # closing the last descriptor releases the flock
