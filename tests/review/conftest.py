"""The review app's fixtures: the audit tests' small real model (PH2 concept probes on HAM10000 images) and the
32 held-out test-split images of its manifest, served by a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import pytest

from tests.audit.conftest import audit_model, ham_own  # noqa: F401 - pytest finds fixtures by name here


@pytest.fixture(scope="session")
def review_manifest(ham_own, tmp_path_factory):
    _, df = ham_own
    path = tmp_path_factory.mktemp("review-manifest") / "cases.csv"
    df[df.split == "test"].drop(columns="split").to_csv(path, index=False)
    return path


@dataclass
class Server:
    url: str
    token: str
    session: object

    def link(self, path: str = "/") -> str:
        return f"{self.url}{path}{'&' if '?' in path else '?'}token={self.token}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(audit_model, review_manifest, feature_cache, tmp_path_factory):
    """A running review of the test images (a fresh store per test module)."""
    import uvicorn

    from medcbm.data.manifest import load_manifest
    from medcbm.review.app import create_app
    from medcbm.review.session import open_review

    store = tmp_path_factory.mktemp("review-store") / "corrections.sqlite"
    session = open_review(audit_model, load_manifest(review_manifest).check_files(), store=store,
                          cache_dir=feature_cache, progress=False)
    token, port = "test-token-0123456789", free_port()
    app = create_app(session, token=token, reviewer="dr-test")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", token, session)
    server.should_exit = True
    thread.join(timeout=10)
