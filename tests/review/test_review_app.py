"""The review app end to end on real HAM10000 images and a real model: the token, a reviewer's session in headless
Chromium at desktop and phone width (axe, no overflow, nothing from outside), persistence, export, refusal of
a stale page, and no lost correction when the server is SIGKILLed mid-write."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from medcbm.review.store import CorrectionStore
from tests.browser import offline_page
from tests.review.conftest import free_port


def test_every_request_needs_the_token(served):
    with httpx.Client(base_url=served.url, follow_redirects=False) as c:
        for path in ("/", "/export.csv", "/static/review.css", "/cases/x"):
            assert c.get(path).status_code == 403, path
        assert c.get("/", params={"token": "wrong"}).status_code == 403
        assert c.get("/", headers={"host": "evil.example:80"}).status_code == 421  # DNS rebinding
        first = c.get("/", params={"token": served.token})
        assert first.status_code == 303 and first.headers["location"] == "/"  # the token leaves the address bar
        assert "httponly" in first.headers["set-cookie"].lower()
        page = c.get("/")  # the client now holds the cookie
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    with httpx.Client(base_url=served.url) as c:
        assert c.post(f"/cases/{served.session.cases[0].case_id}/answer",
                      data={"concept": served.session.concepts[0], "value": "present"}).status_code == 403


def test_a_page_made_for_another_model_is_refused(served):
    case = served.session.cases[-1]
    with httpx.Client(base_url=served.url, headers={"x-review-token": served.token, "accept": "application/json"}) as c:
        r = c.post(f"/cases/{case.case_id}/answer", data={"concept": served.session.concepts[0], "value": "present",
                                                         "fingerprint": "0" * 32})
        assert r.status_code == 409 and "reload the page" in r.json()["error"]
        r = c.post(f"/cases/{case.case_id}/answer", data={"concept": "no_such_concept", "value": "present"})
        assert r.status_code == 400 and "no_such_concept" in r.json()["error"]
    assert case.key not in served.session.store.current()


def _no_overflow(view) -> bool:
    return view.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_a_reviewer_corrects_two_concepts_and_the_prediction_follows(served):
    s = served.session
    with offline_page(served.link(), width=1440, allow=(served.url, "data:")) as view:
        page = view.page
        assert page.url == served.url + "/"
        assert f"0 of {len(s.cases)} cases reviewed" in page.inner_text("#progress")
        assert view.serious_axe_violations() == []
        page.click("table.worklist tbody tr:first-child a")
        page.wait_for_selector("#prediction")
        cid = page.url.rsplit("/", 1)[1]
        before = page.inner_text("#prediction .big")
        forms = page.locator("form.concept")
        assert forms.count() >= 2
        # answer the first two asked concepts against the model's reading
        names = []
        for i in range(2):
            form = forms.nth(i)
            concept = form.get_attribute("data-concept")
            reading = s.case(cid).P[s.concepts.index(concept)]
            value = "absent" if reading >= 0.5 else "present"
            form.locator(f"input[value={value}]").check()
            page.wait_for_selector(f"body[data-saved='{i + 1}']")
            names.append((concept, value))
        after = page.inner_text("#prediction .big")
        assert after != before and "with your answers" in after
        assert "You marked" in page.inner_text("#changes")
        occ = page.locator("img[src*=occlusion]")
        occ.scroll_into_view_if_needed()
        page.wait_for_load_state("networkidle")
        assert occ.evaluate("img => img.complete && img.naturalWidth") > 0
        assert view.serious_axe_violations() == []
        page.reload()
        for concept, value in names:
            assert page.locator(f"form[data-concept='{concept}'] input[value={value}]").is_checked()
        assert view.outside == [] and view.errors == []
        page.goto(served.url + "/")
        assert f"1 of {len(s.cases)} cases reviewed" in page.inner_text("#progress")
        with page.expect_download() as download:
            page.click("a[href='/export.csv']")
        text = open(download.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    row = next(r for r in rows if r["id"] == cid)
    for concept, value in names:
        assert row[f"concept_{concept}"] == ("1.0" if value == "present" else "0.0")
    # the page's probability is the model's intervention under those answers
    want = s.model.intervene_concepts(s.case(cid).P[None, :], {k: float(v == "present") for k, v in names})[0]
    pct = int(re.search(r"(\d+)%", after).group(1))
    assert abs(pct - 100 * want.max()) <= 0.5 + 1e-6


@pytest.mark.parametrize("path", ["/", "case"])
def test_the_app_fits_a_phone(served, path):
    target = f"/cases/{served.session.cases[1].case_id}" if path == "case" else path
    with offline_page(served.link(target), width=390, height=844, allow=(served.url, "data:")) as view:
        view.page.wait_for_load_state("networkidle")
        assert _no_overflow(view), view.page.evaluate("document.documentElement.scrollWidth")
        assert view.serious_axe_violations() == []
        assert view.outside == [] and view.errors == []


def test_keyboard_alone_answers_a_concept(served):
    with offline_page(served.link(f"/cases/{served.session.cases[2].case_id}"), width=1280,
                      allow=(served.url, "data:")) as view:
        page = view.page
        page.focus("form.concept input[value=present]")
        page.keyboard.press("ArrowRight")  # radio groups move with the arrow keys, which checks "absent"
        page.wait_for_selector("body[data-saved='1']")
        assert page.locator("form.concept").first.locator("input[value=absent]").is_checked()


def test_sigkill_mid_write_loses_no_acknowledged_correction(audit_model, review_manifest, feature_cache, tmp_path):
    store = tmp_path / "kill.sqlite"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medcbm.cli", "review", str(audit_model), str(review_manifest),
                             "--store", str(store), "--port", str(port), "--cache-dir", str(feature_cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        token = re.search(r"token=(\S+)", line).group(1)
        base = f"http://127.0.0.1:{port}"
        acked: list[int] = []
        with httpx.Client(base_url=base, headers={"x-review-token": token, "accept": "application/json"}) as c:
            for _ in range(100):  # the process prints the URL once it listens; be patient on a loaded machine
                try:
                    html = c.get("/").text
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            ids = re.findall(r'href="/cases/(case-[0-9a-f]+)"', html)
            concept = re.search(r'data-concept="([^"]+)"', c.get(f"/cases/{ids[0]}").text).group(1)
            stop = threading.Event()

            def hammer(offset: int):
                i = offset
                while not stop.is_set():
                    try:
                        r = c.post(f"/cases/{ids[i % len(ids)]}/answer",
                                   data={"concept": concept, "value": ("present", "absent", "unsure")[i % 3]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked.append(r.json()["saved"])
                    i += 2

            threads = [threading.Thread(target=hammer, args=(k,)) for k in (0, 1)]
            for t in threads:
                t.start()
            while len(acked) < 40:
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # while both writers are still sending
            stop.set()
            for t in threads:
                t.join(10)
    finally:
        proc.kill()
        proc.wait()
    con = sqlite3.connect(store)  # read the file as it was left, without opening it as a store
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in con.execute("SELECT seq FROM corrections")}
    assert set(acked) <= stored and len(acked) >= 40


def test_a_second_writer_on_the_same_store_loses_nothing(served):
    s = served.session
    case = s.cases[3]
    concept = s.concepts[0]
    direct = CorrectionStore(s.store.path, model_fingerprint=s.fingerprint)
    start = len(s.store.history())

    def via_server():
        with httpx.Client(base_url=served.url, headers={"x-review-token": served.token,
                                                        "accept": "application/json"}) as c:
            for i in range(25):
                assert c.post(f"/cases/{case.case_id}/answer",
                              data={"concept": concept, "value": ("present", "absent")[i % 2]}).status_code == 200

    t = threading.Thread(target=via_server)
    t.start()
    for i in range(25):
        direct.record(case.key, concept, "unsure", reviewer="second-reviewer")
    t.join(60)
    rows = [c for c in s.store.history(case.key) if c.field == concept]
    assert len(s.store.history()) - start == 50 and len(rows) == 50
    assert all(b.previous == a.value for a, b in zip(rows, rows[1:]))


def test_pages_show_no_raw_id_or_path_and_the_id_map_leads_back(served, review_manifest, tmp_path):
    import pandas as pd

    from medcbm.audit.privacy import CaseIds, write_id_map

    frame = pd.read_csv(review_manifest)
    with httpx.Client(base_url=served.url, headers={"x-review-token": served.token}) as c:
        pages = [c.get("/").text] + [c.get(f"/cases/{x.case_id}").text for x in served.session.cases[:3]]
    for html in pages:
        for raw in list(frame["id"]) + list(frame["image"]) + [str(review_manifest.parent)]:
            assert str(raw) not in html
    path = write_id_map(tmp_path / "ids.csv", CaseIds(served.session.store.salt), frame["id"].tolist())
    ids = pd.read_csv(path).set_index("case")
    first = served.session.cases[0]
    assert ids.loc[first.case_id, "id"] == frame["id"].iloc[first.row]


def test_binding_beyond_this_computer_needs_a_flag(audit_model, review_manifest):
    from typer.testing import CliRunner

    from medcbm.cli import app

    res = CliRunner().invoke(app, ["review", str(audit_model), str(review_manifest), "--host", "0.0.0.0"])
    assert res.exit_code != 0 and "--allow-remote" in str(res.exception)


def test_a_busy_port_is_a_one_line_error(audit_model, review_manifest, feature_cache, tmp_path):
    import socket

    from typer.testing import CliRunner

    from medcbm.cli import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["review", str(audit_model), str(review_manifest), "--port", str(port),
                                       "--store", str(tmp_path / "s.sqlite"), "--cache-dir", str(feature_cache)])
    assert res.exit_code != 0 and f"cannot listen on 127.0.0.1:{port}" in str(res.exception)


def test_without_the_script_a_form_post_saves_and_comes_back(served):
    s = served.session
    case = s.cases[4]
    concept = s.view(case.case_id).rows[0].concept
    with httpx.Client(base_url=served.url, headers={"x-review-token": served.token}) as c:
        r = c.post(f"/cases/{case.case_id}/answer", data={"concept": concept, "value": "present",
                                                         "fingerprint": s.fingerprint})
        assert r.status_code == 303 and r.headers["location"] == f"/cases/{case.case_id}#prediction"
        page = c.get(f"/cases/{case.case_id}").text
    form = page.split(f'data-concept="{concept}"', 1)[1].split("</form>", 1)[0]
    assert 'value="present" checked' in form and "with your answers" in page
    assert s.store.current(case.key)[case.key][concept] == "present"


def test_the_interval_and_range_follow_the_open_questions(served):
    s = served.session
    case = s.cases[5]
    v = s.view(case.case_id)
    p = v.now.probability
    lo, hi = v.reachable
    assert lo <= p <= hi and lo < hi
    assert lo - 1e-9 <= v.interval[0] <= v.interval[1] <= hi + 1e-9
    # the range is exact for two classes: each asked concept set at its extreme, the others as read
    for r in v.rows:
        for value in (0.0, 1.0):
            q = s.model.intervene_concepts(case.P[None, :], {r.concept: value})[0, s.classes.index(v.now.predicted)]
            assert lo - 1e-9 <= q <= hi + 1e-9
    for r in v.rows:
        s.answer(case.case_id, r.concept, "absent", reviewer="dr-range")
    done = s.view(case.case_id)
    assert done.reachable[0] == done.reachable[1] == done.interval[0] == done.interval[1]
