"""The review web app (Starlette + Jinja2, every asset shipped in the package): a worklist, a case page whose
prediction follows each concept answer, and the export of the reviewed cases.

Security: the server binds to 127.0.0.1 unless told otherwise; every request needs the session token (the printed
URL carries it once; it is then kept in a same-site, HTTP-only cookie and dropped from the address bar); a
request naming another host is refused (DNS rebinding); the pages load nothing from outside and run only the
shipped script (a strict Content-Security-Policy).
"""

from __future__ import annotations

import base64
import secrets
import threading
from pathlib import Path
from urllib.parse import parse_qs, quote

from medcbm.errors import ConfigError, DataError, MedcbmError
from medcbm.review.session import ReviewSession
from medcbm.review.store import CONCEPT_VALUES

HERE = Path(__file__).parent
COOKIE = "medcbm_review"
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
IMAGE_PX = 320


def templates():
    """The app's Jinja2 environment (autoescaped; the audit's citation macro is shared with the report)."""
    from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader

    from medcbm.audit.render import CITATION_MACRO

    loader = ChoiceLoader([FileSystemLoader(HERE / "templates"), DictLoader({"citations.html": CITATION_MACRO})])
    env = Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: f"{100 * v:.0f}%"
    return env


class _Images:
    """The case images (as data URIs) and occlusion maps (PNG), made on first request and kept."""

    def __init__(self, session: ReviewSession):
        self.session = session
        self._uris: dict[str, str | None] = {}
        self._occluder = None
        self._lock = threading.Lock()  # one backbone, one occlusion pass at a time

    def uri(self, case_id: str) -> str | None:
        from medcbm.audit.report import thumbnail_uri
        from medcbm.data.filetypes import is_dicom_file

        if case_id not in self._uris:
            path = self.session.case(case_id).image
            self._uris[case_id] = thumbnail_uri(path, dicom=is_dicom_file(path), px=IMAGE_PX)
        return self._uris[case_id]

    def occlusion_png(self, case_id: str, concept: str) -> bytes:
        from medcbm.audit.occlusion import Occluder, overlay_uri

        s = self.session
        if concept not in s.concepts:
            raise ConfigError(f"concept '{concept}' is not one of this model's concepts")
        case = s.case(case_id)
        with self._lock:
            if self._occluder is None:
                self._occluder = Occluder(s.model, s.spec)
            groups = None if case.group is None else [case.group]
            img, maps = self._occluder.maps(case.image, [concept], groups)
        uri = overlay_uri(img, maps[concept], px=IMAGE_PX)
        return base64.b64decode(uri.split(",", 1)[1])


def create_app(session: ReviewSession, *, token: str, reviewer: str, allowed_hosts: tuple[str, ...] = ("127.0.0.1",
               "localhost")):
    """The ASGI app for ``session``.

    Args:
        token: the session secret every request must carry (query ``token``, header ``X-Review-Token`` or the
            cookie the first visit sets).
        reviewer: the name corrections are recorded under unless the page sets another.
        allowed_hosts: host names the ``Host`` header may carry (any port).
    """
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env = templates()
    images = _Images(session)

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(s=session, **ctx), status_code=status)

    async def form_of(request) -> dict[str, str]:
        # urlencoded forms only (what the pages and their script send): no multipart parser is needed
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise DataError(f"send the form as application/x-www-form-urlencoded (got '{kind or 'nothing'}')")
        body = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def who(request) -> str:
        name = (request.cookies.get("medcbm_reviewer") or reviewer).strip()
        return name[:80] or reviewer

    async def worklist(request):
        items = session.worklist()
        done = sum(w.reviewed for w in items)
        return page("worklist.html", items=items, done=done, reviewer=who(request))

    async def case_page(request):
        cid = request.path_params["case_id"]
        view = session.view(cid)
        order = [w.case.case_id for w in session.worklist()]
        nxt = order[(order.index(cid) + 1) % len(order)] if len(order) > 1 else None
        return page("case.html", v=view, image=images.uri(cid), next_case=nxt, reviewer=who(request),
                    values=CONCEPT_VALUES[:3], quote=quote)

    def respond(request, view, cid: str):
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"saved": view.saved, "prediction": env.get_template("_prediction.html").render(v=view, s=session),
                                 "changes": env.get_template("_changes.html").render(v=view),
                                 "rows": {r.concept: {"answer": r.answer, "push": f"{r.explanation.margin_contribution:+.2f}"
                                                    + (" (by its absence)" if r.explanation.by_absence else "")}
                                          for r in view.rows}})
        return RedirectResponse(f"/cases/{quote(cid)}#prediction", status_code=303)

    async def answer(request):
        cid = request.path_params["case_id"]
        form = await form_of(request)
        view = session.answer(cid, str(form.get("concept", "")), str(form.get("value", "")), reviewer=who(request),
                              fingerprint=str(form.get("fingerprint") or "") or None)
        return respond(request, view, cid)

    async def diagnosis(request):
        cid = request.path_params["case_id"]
        form = await form_of(request)
        view = session.diagnose(cid, str(form.get("label", "")), reviewer=who(request),
                                fingerprint=str(form.get("fingerprint") or "") or None)
        return respond(request, view, cid)

    async def set_reviewer(request):
        form = await form_of(request)
        name = str(form.get("reviewer", "")).strip()
        if not 0 < len(name) <= 80:
            raise DataError("the reviewer name must have 1-80 characters", field="reviewer")
        out = RedirectResponse("/", status_code=303)
        out.set_cookie("medcbm_reviewer", name, httponly=True, samesite="strict")
        return out

    def occlusion(request):
        png = images.occlusion_png(request.path_params["case_id"], request.query_params.get("concept", ""))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def export(request):
        from medcbm.review.export import corrections_frame

        csv = corrections_frame(session).to_csv(index=False)
        return Response(csv, media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="reviewed.csv"', "Cache-Control": "no-store"})

    routes = [Route("/", worklist), Route("/cases/{case_id}", case_page),
              Route("/cases/{case_id}/answer", answer, methods=["POST"]),
              Route("/cases/{case_id}/diagnosis", diagnosis, methods=["POST"]),
              Route("/cases/{case_id}/occlusion.png", occlusion), Route("/reviewer", set_reviewer, methods=["POST"]),
              Route("/export.csv", export), Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]

    async def on_error(request, exc: MedcbmError):
        status = 409 if "another model" in str(exc) or "reload the page" in str(exc) else (
            404 if str(exc).startswith("no case") else 400)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": str(exc)}, status_code=status)
        return page("error.html", status=status, message=str(exc))

    app = Starlette(routes=routes, exception_handlers={MedcbmError: on_error})
    return TokenGuard(app, token=token, allowed_hosts=allowed_hosts)


class TokenGuard:
    """ASGI middleware: the session token on every request, known hosts only, security headers on every answer."""

    def __init__(self, app, *, token: str, allowed_hosts: tuple[str, ...]):
        self.app, self.token, self.hosts = app, token, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        request = Request(scope)
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in self.hosts:
            return await _secured(PlainTextResponse("unknown host", status_code=421))(scope, receive, send)
        given = request.query_params.get("token")
        if given is not None and secrets.compare_digest(given, self.token):
            # keep the token out of the address bar, history and any later Referer
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in rest) if rest else "")
            out = RedirectResponse(target, status_code=303)
            out.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return await _secured(out)(scope, receive, send)
        sent = request.headers.get("x-review-token") or request.cookies.get(COOKIE) or ""
        if not secrets.compare_digest(sent, self.token):
            msg = "This review needs the link medcbm review printed (with its token); open that link again."
            return await _secured(PlainTextResponse(msg, status_code=403))(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _SECURITY_HEADERS
            await send(message)

        return await self.app(scope, receive, send_secured)


_SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                     (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


def _secured(response):
    for k, v in _SECURITY_HEADERS:
        response.headers[k.decode()] = v.decode()
    return response
