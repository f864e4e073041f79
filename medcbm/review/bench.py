"""``medcbm bench review-app``: how fast the review app answers, on a real model and real images.

A real uvicorn server runs in a thread on a fresh store; a client measures, over HTTP on 127.0.0.1:

- the worklist page with every case (target ≤ 1 s for 1,000 cases);
- one concept answer's round trip — request, durable write, intervention, re-explanation, JSON with the new
  prediction (target p95 ≤ 100 ms);
- the case page;
- optionally, in headless Chromium, from ticking a radio button to the page showing the new prediction.

Features come from the cache (run it twice, or once with a warm cache: the first run extracts them).
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from medcbm import __version__

logger = logging.getLogger(__name__)
TARGETS = {"answer_p95_ms": 100.0, "worklist_1000_s": 1.0}


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms, float)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "max_ms": round(float(a.max()), 2)}


def _serve(session):
    import socket

    import uvicorn

    from medcbm.review.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench-token-" + str(random.randrange(10 ** 9))
    server = uvicorn.Server(uvicorn.Config(create_app(session, token=token, reviewer="bench"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}", token


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def run_review_app_benchmark(model_dir, manifest, *, cases: int = 1000, answers: int = 200, seed: int = 0,
                             cache_dir=None, browser: bool = True) -> dict:
    """Time the worklist, the case page and concept answers (see the module docstring).

    Args:
        model_dir: model or adaptation folder; ``manifest``: a checked Manifest (its first ``cases`` rows after a
            seeded shuffle are reviewed).
        answers: concept answers timed over HTTP (random cases and asked concepts).
        browser: also time 20 answers in headless Chromium (skipped with a note when it is not installed).
    """
    import httpx

    from medcbm.review.session import open_review

    rng = random.Random(seed)
    rows = list(range(len(manifest)))
    rng.shuffle(rows)
    sub = manifest.subset(sorted(rows[:cases]))
    with tempfile.TemporaryDirectory(prefix="medcbm-review-bench-") as tmp:
        t0 = time.perf_counter()
        session = open_review(model_dir, sub, store=Path(tmp) / "bench.sqlite", cache_dir=cache_dir, progress=True)
        open_s = time.perf_counter() - t0
        server, thread, url, token = _serve(session)
        try:
            with httpx.Client(base_url=url, headers={"x-review-token": token}) as c:
                c.get("/")  # warm the templates
                worklist = [_timed(lambda: c.get("/").raise_for_status()) for _ in range(5)]
                ids = [x.case_id for x in session.cases]
                page = [_timed(lambda: c.get(f"/cases/{rng.choice(ids)}").raise_for_status()) for _ in range(30)]
                timed = []
                for _ in range(answers):
                    cid = rng.choice(ids)
                    concept = rng.choice([r.concept for r in session.view(cid).rows])
                    data = {"concept": concept, "value": rng.choice(("present", "absent", "unsure"))}
                    timed.append(_timed(lambda: c.post(f"/cases/{cid}/answer", data=data,
                                                       headers={"accept": "application/json"}).raise_for_status()))
            in_browser = _browser_answers(url, token, ids[:20]) if browser else None
        finally:
            server.should_exit = True
            thread.join(10)
    res = {"medcbm_version": __version__, "n_cases": len(session.cases), "n_concepts": len(session.concepts),
           "open_s": round(open_s, 2), "worklist": _stats(worklist), "case_page": _stats(page),
           "answer_round_trip": _stats(timed), "answer_in_browser": in_browser, "targets": TARGETS,
           "note": "HTTP on 127.0.0.1 against a real uvicorn server in a thread; every answer is an fsynced SQLite "
                   "write; features from the cache"}
    res["checks"] = {"answer_p95_met": res["answer_round_trip"]["p95_ms"] <= TARGETS["answer_p95_ms"],
                     "worklist_met": res["worklist"]["p95_ms"] / 1000 <= TARGETS["worklist_1000_s"]
                     if len(session.cases) >= 1000 else None}
    return res


def _browser_answers(url: str, token: str, ids: list[str]) -> dict | str:
    """Milliseconds from the change event of a radio button to the new prediction in the page (measured by the
    page's own script, ``performance.now()``), in headless Chromium, after the case page has finished loading."""
    import shutil

    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "not measured: playwright is not installed"
    if exe is None:
        return "not measured: no headless Chromium on this machine"
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        page = browser.new_page()
        page.goto(f"{url}/?token={token}")
        for cid in ids:
            page.goto(f"{url}/cases/{cid}")
            page.wait_for_load_state("networkidle")  # the occlusion map is computed once, when the page opens
            page.locator("form.concept").first.locator("input[value=absent]").check()
            page.wait_for_selector("body[data-saved='1']")
            times.append(float(page.get_attribute("body", "data-last-ms")))
        browser.close()
    return _stats(times)


def markdown(res: dict) -> str:
    """A short table of the timings."""
    lines = [f"Review app on {res['n_cases']} cases, {res['n_concepts']} concepts (medcbm {res['medcbm_version']}).", "",
             "| what | n | p50 ms | p95 ms | target |", "|---|---|---|---|---|"]
    rows = [("worklist page", res["worklist"], f"≤ {TARGETS['worklist_1000_s'] * 1000:.0f} ms at 1,000 cases"),
            ("case page", res["case_page"], ""),
            ("concept answer round trip (HTTP)", res["answer_round_trip"], f"p95 ≤ {TARGETS['answer_p95_ms']:.0f} ms")]
    if isinstance(res["answer_in_browser"], dict):
        rows.append(("concept answer, click to new prediction (Chromium)", res["answer_in_browser"], ""))
    for name, s, target in rows:
        lines.append(f"| {name} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} | {target} |")
    return "\n".join(lines) + "\n"
