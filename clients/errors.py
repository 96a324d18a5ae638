"""The exceptions the SDK raises for a gateway refusal.

Every non-2xx answer becomes one :class:`GatewayError` carrying the gateway's stable ``code``,
its ``message`` and the HTTP ``status``. The subclass is chosen by ``code`` first (the gateway's
contract) and by ``status`` only when the code is missing or unknown (a proxy's HTML page, a
gateway newer than this SDK), so callers can catch the class and still read the raw code::

    GatewayError                  code                        status
    ├── AuthenticationError       unauthenticated             401
    ├── PermissionDenied          forbidden                   403
    │   └── PolicyViolation       policy_violation            403 (message names the rule)
    ├── NotFound                  not_found                   404
    ├── Conflict                  conflict                    409
    ├── InvalidRequest            invalid_request,            400 (and 422 with another code)
    │                             unsupported_query
    ├── InvalidUpload             invalid_dataset,            422, 415
    │                             unsupported_media_type
    ├── InvalidPolicyError        invalid_policy              422
    ├── PayloadTooLarge           payload_too_large           413
    ├── BudgetExceeded            budget_exceeded             429 (a rate limit stays the base)
    └── ServerError               internal_error              5xx
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "AuthenticationError",
    "BudgetExceeded",
    "Conflict",
    "GatewayError",
    "InvalidPolicyError",
    "InvalidRequest",
    "InvalidUpload",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolicyViolation",
    "ServerError",
    "error_from_response",
]

_MAX_MESSAGE_CHARS = 500


class GatewayError(Exception):
    """A refusal or failure reported by the gateway.

    Attributes:
        code: The gateway's stable machine-readable code (e.g. ``"budget_exceeded"``), or a
            code derived from the status when the body carried none.
        message: The human-readable message; never contains data values.
        status: The HTTP status of the answer.
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.message = message
        self.status = status


class AuthenticationError(GatewayError):
    """The API key is missing, malformed or revoked (401)."""


class PermissionDenied(GatewayError):
    """The key's role or organisation may not do this (403)."""


class PolicyViolation(PermissionDenied):
    """The active policy forbids this use of data; the message names the policy rule (403)."""


class NotFound(GatewayError):
    """The thing does not exist, or its existence is private to the caller (404)."""


class Conflict(GatewayError):
    """The request clashes with the current state, e.g. a second approval (409)."""


class InvalidRequest(GatewayError):
    """The request is malformed or asks for a query outside the supported subset (400)."""


class InvalidUpload(GatewayError):
    """The uploaded dataset does not fit the policy or its media type is not accepted (422)."""


class InvalidPolicyError(GatewayError):
    """The proposed policy document does not validate (422)."""


class PayloadTooLarge(GatewayError):
    """The request body exceeds the gateway's size limit (413)."""


class BudgetExceeded(GatewayError):
    """Running the query would overspend the organisation's privacy budget (429)."""


class ServerError(GatewayError):
    """The gateway failed; retrying later may help (5xx)."""


_BY_CODE: dict[str, type[GatewayError]] = {
    "unauthenticated": AuthenticationError,
    "forbidden": PermissionDenied,
    "policy_violation": PolicyViolation,
    "not_found": NotFound,
    "conflict": Conflict,
    "invalid_request": InvalidRequest,
    "unsupported_query": InvalidRequest,
    "invalid_dataset": InvalidUpload,
    "unsupported_media_type": InvalidUpload,
    "invalid_policy": InvalidPolicyError,
    "payload_too_large": PayloadTooLarge,
    "budget_exceeded": BudgetExceeded,
    "internal_error": ServerError,
}

# 422 without a known code is a request the gateway could not process, most likely a body
# validation error: InvalidRequest. 429 without ``budget_exceeded`` is a rate limit, which is
# not a budget refusal, so it stays the base class.
_BY_STATUS: dict[int, type[GatewayError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: InvalidUpload,
    422: InvalidRequest,
}

_CODE_FOR_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def _error_class(code: str, status: int) -> type[GatewayError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, GatewayError)


def _body_text(response: httpx.Response) -> str:
    try:
        return response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError, LookupError):
        return ""


def _parse_body(text: str) -> tuple[str | None, str | None]:
    """Read ``(code, message)`` from the gateway's error shape, or FastAPI's ``detail``."""
    try:
        body: Any = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (
            code if isinstance(code, str) and code else None,
            message if isinstance(message, str) else None,
        )
    detail = body.get("detail")
    if isinstance(detail, str):
        return None, detail
    if detail is not None:
        return None, json.dumps(detail)[:_MAX_MESSAGE_CHARS]
    return None, None


def error_from_response(response: httpx.Response) -> GatewayError:
    """Turn a non-2xx answer into the matching :class:`GatewayError` subclass.

    Never raises: a body that is not the gateway's JSON error shape (HTML from a proxy, empty,
    undecodable) still yields an error whose ``code`` is derived from the status and whose
    ``message`` is the start of the body or the reason phrase.

    Args:
        response: A received answer; its body must have been read (the clients always do).

    Returns:
        The exception to raise; the caller raises it.

    Example:
        >>> r = httpx.Response(429, json={"error": {"code": "budget_exceeded", "message": "no"}})
        >>> type(error_from_response(r)).__name__
        'BudgetExceeded'
    """
    status = response.status_code
    text = _body_text(response)
    code, message = _parse_body(text)
    if code is None:
        code = _CODE_FOR_STATUS.get(status, "internal_error" if status >= 500 else "http_error")
    if not message:
        message = text.strip()[:_MAX_MESSAGE_CHARS] or response.reason_phrase or f"HTTP {status}"
    return _error_class(code, status)(code, message, status)
