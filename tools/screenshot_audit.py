"""Screenshot an audit report in headless Chromium (the README's picture).

Usage: python tools/screenshot_audit.py runs/quickstart/audit/audit.html docs/audit_report.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1500)
    args = ap.parse_args()
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if exe is None:
        sys.exit("no chromium-headless-shell or chromium on PATH (make chromium installs it)")
    if not args.html.is_file():
        sys.exit(f"{args.html} not found: run make quickstart first")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
        page.goto(args.html.resolve().as_uri())
        target = page.locator("article.case").first
        target.scroll_into_view_if_needed()  # the first explained case, with its concepts and citations
        args.png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.png))
        browser.close()
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
