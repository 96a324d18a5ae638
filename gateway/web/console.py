"""The web console: static pages and scripts served under ``/console/``, plus one draft check.

The console is plain HTML and JavaScript (no build step, nothing fetched from elsewhere). Its
scripts call the ``/v1`` JSON API with the API key the user typed, kept in the tab's
``sessionStorage`` and sent only as ``Authorization: Bearer``: never in a URL, never in a
cookie. With no ambient credential there is nothing for a cross-site request to borrow, so CSRF
is impossible by construction, and the API sends no ``Access-Control-Allow-Origin``.

Every response under ``/console`` carries a strict Content-Security-Policy (scripts only from
the gateway, no inline script, no framing), ``nosniff`` and ``no-referrer``; the scripts render
data with ``textContent`` only, so a policy that holds markup shows it as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from gateway.api.errors import error_body, status_for
from gateway.domain.errors import AuthenticationFailed, GatewayError, NotFound
from gateway.service.access import authenticate
from gateway.service.context import Services
from gateway.service.policies import MAX_POLICY_BYTES
from gateway.web.policy_check import check_draft

STATIC_DIR = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSET_NAME = re.compile(r"^[a-z][a-z0-9-]*\.(html|js|css|svg)$")


def _assets() -> dict[str, Path]:
    """The files the console may serve: a fixed list read once, so no path reaches the disk."""
    return {p.name: p for p in STATIC_DIR.iterdir() if _ASSET_NAME.match(p.name)}


ASSETS = _assets()


class ConsoleRoute(APIRoute):
    """A route whose every answer, refusals included, carries the console's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except GatewayError as exc:
                bearer = isinstance(exc, AuthenticationFailed)
                extra = {"WWW-Authenticate": "Bearer"} if bearer else {}
                response = JSONResponse(
                    error_body(exc.code, exc.message), status_for(exc), headers=extra
                )
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers


console_router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _asset(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        raise NotFound("no such console page")
    return Response(path.read_bytes(), media_type=_MEDIA_TYPES[path.suffix])


@console_router.get("")
def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@console_router.get("/")
def console_index() -> Response:
    return _asset("index.html")


@console_router.get("/{name}")
def console_asset(name: str) -> Response:
    return _asset(name)


@console_router.get("/{rest:path}")
def console_elsewhere(rest: str) -> Response:
    """Deeper paths (``a/b``, ``../x``) are never files here: 404, still with the headers."""
    raise NotFound("no such console page")


@console_router.post("/api/collaborations/{c}/policy/check")
async def check_policy_draft(
    c: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """Validate a draft as ``PUT /v1/collaborations/{c}/policy`` would; stores nothing.

    Answers 200 with ``{"valid": true, "required": [...], "active_version": N}`` or
    ``{"valid": false, "error": {"code", "message", "path", "line", "column"}}``; a caller
    who may not propose gets the same 401/403/404 as the proposal would.
    """
    services: Services = request.app.state.services
    principal = await run_in_threadpool(authenticate, services, authorization)
    media = (request.headers.get("content-type") or "application/yaml").split(";")[0].strip()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_POLICY_BYTES:
            break  # enough to refuse it as too large, without reading the rest
    verdict = await run_in_threadpool(check_draft, services, principal, c, bytes(body), media)
    return verdict.to_json()
