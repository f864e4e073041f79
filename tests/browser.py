"""A report page in real headless Chromium, offline: every request that leaves the file is refused and recorded,
console errors are collected, and axe runs on demand. Shared by the browser tests of every HTML report."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.conftest import IN_CI, require


@dataclass
class OfflinePage:
    page: object
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def serious_axe_violations(self) -> list[tuple[str, str]]:
        from axe_playwright_python.sync_playwright import Axe

        result = Axe().run(self.page)
        return [(v["id"], v["impact"]) for v in result.response["violations"] if v["impact"] in ("serious", "critical")]


@contextmanager
def offline_page(url: str, *, width: int = 1280, height: int = 900, allow: tuple[str, ...] = ("file:", "data:")):
    """Open ``url`` (a file URI, or a local server named in ``allow``) at the given viewport; yields an
    :class:`OfflinePage`. Requests to anything not in ``allow`` are refused and recorded."""
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    require(exe is not None, "chromium-headless-shell is not installed (apt-get install -y chromium-headless-shell)")
    pw = pytest.importorskip("playwright.sync_api") if not IN_CI else __import__("playwright.sync_api").sync_api
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        page = browser.new_page(viewport={"width": width, "height": height})
        out = OfflinePage(page)

        def route(r):
            if r.request.url.startswith(allow):
                r.continue_()
            else:
                out.outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: out.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: out.errors.append(str(e)))
        page.goto(url)
        try:
            yield out
        finally:
            browser.close()
