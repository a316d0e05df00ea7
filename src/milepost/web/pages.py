"""The web UI's pages: sign-in, journeys, the canvas, the milestone editor, outputs and settings.

Pages render what the catalog knows at once (names, structure, statuses); sizes and estimates are
fetched by the page's scripts from `/api/v1` after it is shown, so no page waits for the estimator.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from milepost.errors import MilepostError
from milepost.runtime import Runtime
from milepost.web import canvas_data
from milepost.web.session import COOKIE, SESSION_TTL_S, codec_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def _json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> block: `</` cannot end the block early."""
    return Markup(orjson.dumps(value).decode().replace("</", "<\\/"))


templates.env.filters["tojson_script"] = _json


def _asset_version() -> str:
    """A hash of the scripts and styles: URLs carrying it can be cached for good."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


templates.env.globals["v"] = _asset_version()


class _Static(StaticFiles):
    """Versioned URLs (`?v=<hash>`, the pages' and the import map's) are immutable; others revalidate."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        scope = kwargs.get("scope") or next((a for a in args if isinstance(a, dict)), {})
        versioned = b"v=" in scope.get("query_string", b"")
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if versioned else "no-cache"
        return response


def install(app: FastAPI) -> None:
    """Serve the pages at `/` and their scripts and styles at `/static`."""
    app.include_router(router)
    app.mount("/static", _Static(directory=str(HERE / "static")), name="static")


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class _SignIn(Exception):
    """Raised by pages opened without a valid session."""


def _session(request: Request) -> tuple[str, str]:
    """(token name, CSRF token) of the signed-in user; raises _SignIn otherwise."""
    cookie = request.cookies.get(COOKIE)
    codec = codec_of(request.app.state)
    plaintext = codec.open(cookie)
    token = _rt(request).catalog.verify_token(plaintext) if plaintext else None
    if token is None or cookie is None:
        raise _SignIn()
    return token.name, codec.csrf(cookie)


def _page(request: Request, template: str, nav: str, **context: Any) -> Response:
    try:
        user, csrf = _session(request)
    except _SignIn:
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
    return templates.TemplateResponse(request, template, {"user": user, "csrf": csrf, "nav": nav, **context})


def _credits(rt: Runtime) -> dict[str, int]:
    limit = rt.catalog.get_settings().audience_limit
    activated = rt.catalog.activated_count()
    return {"limit": limit, "activated": activated, "available": max(0, limit - activated)}


# ---- sign-in ------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only paths of this site: "//evil.example" or "https://…" would leave it after sign-in.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/journeys"


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(request, "signin.html", {"next": _safe_next(next), "error": None})


@router.post("/signin", response_class=HTMLResponse)
def signin(request: Request, token: str = Form(default=""), next: str = Form(default="")) -> Response:
    found = _rt(request).catalog.verify_token(token.strip()) if token.strip() else None
    if found is None:
        error = "Enter an API token." if not token.strip() else "This token is unknown or was revoked."
        return templates.TemplateResponse(
            request, "signin.html", {"next": _safe_next(next), "error": error}, status_code=401
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        codec_of(request.app.state).seal(token.strip()),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/signout")
def signout(request: Request, csrf: str = Form(default="")) -> Response:
    cookie = request.cookies.get(COOKIE)
    response = RedirectResponse("/signin", status_code=303)
    if cookie and codec_of(request.app.state).csrf_ok(cookie, csrf):
        response.delete_cookie(COOKIE, path="/")
    return response


# ---- pages --------------------------------------------------------------------------------------


@router.get("/")
def home() -> Response:
    return RedirectResponse("/journeys", status_code=303)


@router.get("/journeys", response_class=HTMLResponse)
def journeys_page(request: Request) -> Response:
    rt = _rt(request)
    journeys = sorted(rt.views.journey_list(), key=lambda j: -int(j["updated_at"]))
    return _page(request, "journeys.html", "journeys", journeys=journeys, credits=_credits(rt))


@router.get("/journeys/new", response_class=HTMLResponse)
def new_journey_page(request: Request) -> Response:
    rt = _rt(request)
    inputs = rt.catalog.list_inputs()
    workspaces = [
        {"id": w.id, "name": w.name, "inputs": [i for i in inputs if i.workspace_id == w.id]}
        for w in rt.catalog.list_workspaces()
    ]
    return _page(request, "journey_new.html", "journeys", workspaces=workspaces)


@router.get("/journeys/{journey_id}", response_class=HTMLResponse)
def canvas_page(request: Request, journey_id: int) -> Response:
    rt = _rt(request)
    try:
        data = canvas_data.journey(rt, journey_id)
    except MilepostError as exc:
        return _not_found(request, exc)
    return _page(request, "canvas.html", "journeys", data=data, journey=data["journey"])


@router.get("/journeys/{journey_id}/canvas.json")
def canvas_json(request: Request, journey_id: int) -> Response:
    """The canvas's structure for the page's script to redraw after a change (no sizes)."""
    try:
        _session(request)
    except _SignIn:
        return Response(b'{"error":{"code":"UNAUTHORIZED","message":"sign in"}}', 401)
    try:
        data = canvas_data.journey(_rt(request), journey_id)
    except MilepostError as exc:
        return Response(orjson.dumps({"error": {"code": exc.code, "message": exc.message}}), 404)
    return Response(orjson.dumps(data), media_type="application/json")


@router.get("/journeys/{journey_id}/milestones/new", response_class=HTMLResponse)
def new_milestone_page(
    request: Request, journey_id: int, parent_id: int | None = None, position: int | None = None
) -> Response:
    rt = _rt(request)
    try:
        journey = rt.catalog.get_journey(journey_id)
        parent = rt.catalog.get_milestone(parent_id) if parent_id is not None else None
    except MilepostError as exc:
        return _not_found(request, exc)
    editor: dict[str, Any] = {
        "journey_id": journey.id,
        "milestone_id": None,
        "parent_id": parent_id,
        "position": position,
        "name": "",
        "criteria": {"all": []},
        "activated_path": canvas_data.journey_has_activated(rt, journey.id),
    }
    return _page(
        request,
        "milestone.html",
        "journeys",
        journey=journey,
        parent=parent,
        editor=editor,
        title="New milestone",
    )


@router.get("/milestones/{milestone_id}/edit", response_class=HTMLResponse)
def edit_milestone_page(request: Request, milestone_id: int) -> Response:
    rt = _rt(request)
    try:
        m = rt.catalog.get_milestone(milestone_id)
        journey = rt.catalog.get_journey(m.journey_id)
        parent = rt.catalog.get_milestone(m.parent_id) if m.parent_id is not None else None
    except MilepostError as exc:
        return _not_found(request, exc)
    editor: dict[str, Any] = {
        "journey_id": journey.id,
        "milestone_id": m.id,
        "audience_id": m.audience_id,
        "parent_id": m.parent_id,
        "position": m.position,
        "name": m.name,
        "remaining": m.remaining,
        "criteria": m.criteria if m.criteria is not None else {"all": []},
        "activated_path": canvas_data.journey_has_activated(rt, journey.id),
    }
    return _page(
        request, "milestone.html", "journeys", journey=journey, parent=parent, editor=editor, title=m.name
    )


@router.get("/outputs", response_class=HTMLResponse)
def outputs_page(request: Request) -> Response:
    rt = _rt(request)
    return _page(request, "outputs.html", "outputs", data=canvas_data.outputs(rt))


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request) -> Response:
    rt = _rt(request)
    s = rt.catalog.get_settings()
    inputs = rt.catalog.list_inputs()
    workspaces = [
        {"id": w.id, "name": w.name, "inputs": [i for i in inputs if i.workspace_id == w.id]}
        for w in rt.catalog.list_workspaces()
    ]
    return _page(
        request,
        "settings.html",
        "settings",
        credits=_credits(rt),
        settings=s,
        workspaces=workspaces,
        now_ms=int(time.time() * 1000),
    )


def _not_found(request: Request, exc: MilepostError) -> Response:
    try:
        user, csrf = _session(request)
    except _SignIn:
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"user": user, "csrf": csrf, "nav": "", "message": exc.message},
        status_code=404,
    )
