"""One table from error class to HTTP status, and the handlers that render the one JSON shape.

Every error leaves the gateway as ``{"error": {"code": ..., "message": ...}}``. Validation
errors name the field but never echo the submitted value; a field the API does not define is a
422 ``unknown_field`` (``body.epsilon_spent: unknown field``), any other malformed input a 400
``invalid_request``; unexpected exceptions become a generic 500 whose message holds no detail.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.domain import errors as e

log = logging.getLogger("gateway")

STATUS: dict[type[e.GatewayError], int] = {
    e.InvalidRequest: 400,
    e.UnsupportedQuery: 400,
    e.UnknownField: 422,
    e.AuthenticationFailed: 401,
    e.Forbidden: 403,
    e.PolicyViolation: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.InvalidDataset: 422,
    e.InvalidPolicy: 422,
    e.BudgetExceeded: 429,
}

_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def status_for(exc: e.GatewayError) -> int:
    """The status of the nearest class in the table (a subclass inherits its parent's)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


_MAX_NAME_SHOWN = 64


def field_path(loc: Any) -> str:
    """``("body", "members", 0)`` → ``body.members[0]``; a long key is cut short."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = str(part)
            name = name if len(name) <= _MAX_NAME_SHOWN else name[:_MAX_NAME_SHOWN] + "…"
            path += f".{name}" if path else name
    return path or "body"


def _allowed_fields(request: Request, inner: tuple[Any, ...]) -> tuple[str, ...]:
    """The fields the route's body model allows at ``inner`` (a path below the body's root)."""
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    model: Any = getattr(getattr(field, "field_info", None), "annotation", None)
    for part in inner:
        if isinstance(part, int) or model is None:
            continue
        info = getattr(model, "model_fields", {}).get(str(part))
        model = getattr(info, "annotation", None)
    fields = getattr(model, "model_fields", None)
    return tuple(str(getattr(f, "alias", None) or n) for n, f in (fields or {}).items())


class ContainInternalErrors:
    """ASGI middleware: an unexpected exception becomes a generic 500 and goes no further.

    Starlette's outermost error middleware re-raises after answering, so the server would log
    the exception's message and traceback, which may quote data. Here only the exception's type
    is logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "internal error on %s %s: %s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
            )
            if not started:
                response = JSONResponse(error_body("internal_error", "internal error"), 500)
                await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, e.GatewayError)
        headers = (
            {"WWW-Authenticate": "Bearer"} if isinstance(exc, e.AuthenticationFailed) else None
        )
        return JSONResponse(error_body(exc.code, exc.message), status_for(exc), headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        unknown = [err for err in errors if err.get("type") == "extra_forbidden"]
        if unknown:
            loc = tuple(unknown[0].get("loc", ()))
            refusal = e.UnknownField(field_path(loc[:-1]), _allowed_fields(request, loc[1:-1]))
            return JSONResponse(error_body(refusal.code, refusal.message), 422)
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("invalid_request", "body: not valid JSON"), 400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        reason = str(first.get("msg", "invalid"))
        return JSONResponse(error_body("invalid_request", f"{where}: {reason}"), 400)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return JSONResponse(error_body("internal_error", "internal error"), 500)

    app.add_exception_handler(e.GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(ContainInternalErrors)
