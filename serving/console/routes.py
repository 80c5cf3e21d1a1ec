"""HTTP routes of the operator console under /console (HTTP only: the logic is in service.py).

Pages are server-rendered (Jinja2, autoescaped: names, documents and answers are data) and
updated with htmx. A login with an admin key opens a server-side session; its id is the only
thing in the cookie (HTTP-only, SameSite=Strict, path /console). Every state change is a POST
carrying the session's CSRF token (form field or `X-CSRF-Token` header)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ragtune.adapters.errors import AdapterError
from ragtune.retrieval.errors import RetrievalError
from ragtune.serving.auth import authenticator
from ragtune.serving.console.service import ConsoleService
from ragtune.serving.console.sessions import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    ConsoleSession,
    ConsoleSessions,
    new_token,
    tokens_match,
)
from ragtune.serving.errors import AuthError, ForbiddenError, RateLimitedError, ServingError

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_FILES = {"htmx.min.js": "text/javascript", "console.css": "text/css"}
TRAFFIC_MINUTES = 5
# What an operator's action can fail with: shown in the page, as the admin API would say it.
ACTION_ERRORS = (AdapterError, ServingError, RetrievalError, ValidationError)
# Defence in depth under autoescaping: no inline script or style, no framing, forms and
# requests only to this server.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _static(name: str) -> str:
    # The file's modification time busts browsers' caches after `scripts/build-console`.
    return f"/console/static/{name}?v={int((STATIC / name).stat().st_mtime)}"


_environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.globals.update(static=_static, seconds=_seconds, percent=_percent)
templates = Jinja2Templates(env=_environment)
router = APIRouter(prefix="/console", include_in_schema=False)


def console(request: Request) -> ConsoleService:
    service: ConsoleService = request.app.state.console
    return service


def sessions(request: Request) -> ConsoleSessions:
    opened: ConsoleSessions = request.app.state.console_sessions
    return opened


Console = Annotated[ConsoleService, Depends(console)]
Sessions = Annotated[ConsoleSessions, Depends(sessions)]


def _render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _to_login(request: Request) -> Response:
    """Back to the login page: a redirect, or for htmx (which would swap the page into a
    panel) an `HX-Redirect` that reloads the whole page there."""
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"hx-redirect": "/console/login"})
    return RedirectResponse("/console/login", status_code=303)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def _form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form body (what the console's forms and htmx send)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


async def _admit_post(
    request: Request, opened: ConsoleSessions
) -> tuple[ConsoleSession, dict[str, str]] | Response:
    """A state change's session and form, or the response refusing it: no session (log in),
    or a missing or wrong CSRF token (403)."""
    session = opened.get(request.cookies.get(COOKIE))
    if session is None:
        return _to_login(request)
    form = await _form(request)
    token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not tokens_match(session.csrf_token, token):
        return _refused("missing or wrong CSRF token: reload the console and try again", 403)
    return session, form


# -- login ------------------------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    return _login_form(request)


def _login_form(request: Request, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    token = new_token()
    response = _render(
        request, "login.html", {"login_token": token, "error": error}, status_code=status_code
    )
    _set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request, opened: Sessions) -> Response:
    """Check the admin key from the form body and open a session. The key is not kept, not
    echoed back into the form, and never put in a URL or cookie."""
    form = await _form(request)
    if not tokens_match(request.cookies.get(LOGIN_COOKIE, ""), form.get("login_token")):
        return _login_form(request, "The login form expired: try again.", status_code=403)
    try:
        authenticator(request).admit_console(request, form.get("key", ""))
    except ForbiddenError:
        return _login_form(request, "This key may chat but not operate: use an admin key.", 403)
    except AuthError:
        return _login_form(request, "Invalid admin key.", 401)
    except RateLimitedError as exc:
        return _login_form(request, str(exc), 429)
    session = opened.open()
    response = RedirectResponse("/console", status_code=303)
    _set_cookie(request, response, COOKIE, session.id, max_age=int(opened.ttl_s))
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
async def logout(request: Request, opened: Sessions) -> Response:
    admitted = await _admit_post(request, opened)
    if isinstance(admitted, Response):
        return admitted
    opened.close(admitted[0].id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- pages and panels -------------------------------------------------------------------------
@router.get("")
async def console_page(request: Request, service: Console, opened: Sessions) -> Response:
    session = opened.get(request.cookies.get(COOKIE))
    if session is None:
        return _to_login(request)
    adapters = await anyio.to_thread.run_sync(service.adapters)
    context = {
        "csrf_token": session.csrf_token,
        "adapters": adapters,
        **await _collections_context(service),
        **_traffic_context(service),
    }
    return _render(request, "console.html", context)


@router.get("/panels/adapters")
async def adapters_panel(request: Request, service: Console, opened: Sessions) -> Response:
    session = opened.get(request.cookies.get(COOKIE))
    if session is None:
        return _to_login(request)
    return await _adapters_panel(request, service, session)


async def _adapters_panel(
    request: Request,
    service: ConsoleService,
    session: ConsoleSession,
    notice: str | None = None,
    notice_kind: str = "",
) -> HTMLResponse:
    adapters = await anyio.to_thread.run_sync(service.adapters)
    context = {
        "csrf_token": session.csrf_token,
        "adapters": adapters,
        "notice": notice,
        "notice_kind": notice_kind,
    }
    return _render(request, "_adapters.html", context)


async def _collections_context(service: ConsoleService) -> dict[str, Any]:
    collections = await anyio.to_thread.run_sync(service.collections)
    unassigned = await anyio.to_thread.run_sync(service.unassigned_jobs)
    jobs = [job for c in collections for job in c.jobs] + unassigned
    return {
        "collections": collections,
        "unassigned_jobs": unassigned,
        "jobs_running": any(job.status == "in_progress" for job in jobs),
    }


@router.get("/panels/collections")
async def collections_panel(request: Request, service: Console, opened: Sessions) -> Response:
    if opened.get(request.cookies.get(COOKIE)) is None:
        return _to_login(request)
    return _render(request, "_collections.html", await _collections_context(service))


@router.get("/collections/{name}/documents")
async def documents_panel(
    name: str, request: Request, service: Console, opened: Sessions
) -> Response:
    if opened.get(request.cookies.get(COOKIE)) is None:
        return _to_login(request)
    try:
        listing = await anyio.to_thread.run_sync(service.documents, name)
    except RetrievalError as exc:
        return _render(request, "_answer.html", {"error": str(exc)})
    return _render(request, "_documents.html", {"listing": listing})


def _traffic_context(service: ConsoleService, minutes: int = TRAFFIC_MINUTES) -> dict[str, Any]:
    return {"traffic": service.traffic(minutes * 60.0), "minutes": minutes}


@router.get("/panels/traffic")
async def traffic_panel(
    request: Request, service: Console, opened: Sessions, minutes: int = TRAFFIC_MINUTES
) -> Response:
    if opened.get(request.cookies.get(COOKIE)) is None:
        return _to_login(request)
    return _render(request, "_traffic.html", _traffic_context(service, max(1, min(minutes, 15))))


# -- actions ----------------------------------------------------------------------------------
@router.post("/adapters/{name}/{action}")
async def adapter_action(
    name: str, action: str, request: Request, service: Console, opened: Sessions
) -> Response:
    """load, unload or swap (form field `path`), through the admin API's own service; the
    adapters panel comes back with what happened."""
    admitted = await _admit_post(request, opened)
    if isinstance(admitted, Response):
        return admitted
    session, form = admitted
    try:
        if action == "load":
            await service.load(name)
            notice = f"{name} loaded."
        elif action == "unload":
            await service.unload(name)
            notice = f"{name} unloaded."
        elif action == "swap":
            version = await service.swap(name, form.get("path", "").strip())
            notice = f"{name} now serves v{version}."
        else:
            return Response("unknown action", status_code=404, media_type="text/plain")
    except ACTION_ERRORS as exc:
        return await _adapters_panel(request, service, session, str(exc), "error")
    return await _adapters_panel(request, service, session, notice, "ok")


UPLOAD_PATH = f"{router.prefix}/upload"
"""Takes larger bodies than the API's limit (the upload limit; see `create_app`)."""


@router.post("/upload")
async def upload(request: Request, service: Console, opened: Sessions) -> Response:
    """Upload a document into a collection (multipart: `file`, `collection`), as
    `/v1/files` + `/v1/vector_stores/{collection}/files` would: ingested in the background; the
    collections panel comes back with its job, and follows it until it is done."""
    session = opened.get(request.cookies.get(COOKIE))
    if session is None:
        return _to_login(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return _refused("send the file as multipart/form-data", 400)
    async with request.form() as form:  # its temporary files are closed on leaving
        token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not tokens_match(session.csrf_token, token if isinstance(token, str) else None):
            return _refused("missing or wrong CSRF token: reload the console and try again", 403)
        sent, collection = form.get("file"), form.get("collection")
        notice, level = "Choose a file to upload.", "error"
        if isinstance(sent, UploadFile) and isinstance(collection, str):
            try:
                filename = await anyio.to_thread.run_sync(
                    service.upload, collection.strip(), sent.filename, sent.file
                )
                notice, level = f"{filename}: uploaded, ingesting into {collection.strip()}.", "ok"
            except ACTION_ERRORS as exc:
                notice = str(exc)
    context = await _collections_context(service)
    return _render(
        request, "_collections.html", {**context, "notice": notice, "notice_kind": level}
    )


def _refused(message: str, status_code: int) -> Response:
    return Response(
        message, status_code=status_code, media_type="text/plain", headers=SECURITY_HEADERS
    )


@router.post("/chat")
async def ask(request: Request, service: Console, opened: Sessions) -> Response:
    """The playground: the question through the chat service, answered with its route,
    reason, sources and grounding."""
    admitted = await _admit_post(request, opened)
    if isinstance(admitted, Response):
        return admitted
    _, form = admitted
    question = form.get("question", "").strip()
    if not question:
        return _render(request, "_answer.html", {"error": "Ask a question."})
    try:
        answer = await service.ask(question, form.get("collection") or None)
    except ACTION_ERRORS as exc:
        return _render(request, "_answer.html", {"error": str(exc)})
    return _render(request, "_answer.html", {"answer": answer})


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """The console's vendored script and stylesheet (nothing else is served from here)."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"cache-control": "max-age=86400"}
    )
