"""The one error tree of the gateway.

Every refusal the gateway makes is a :class:`GatewayError` with a stable ``code``. Domain and
service code raise these; the API layer maps each class to an HTTP status in one table
(``gateway/api/errors.py``) and renders ``{"error": {"code": ..., "message": ...}}``.

Messages name fields, columns and policy paths, never data values: an error must not leak a
row, an exact aggregate or a customer key.

::

    GatewayError                      code
    ├── InvalidRequest                invalid_request        (400: malformed plan, JSON, YAML)
    │   ├── UnsupportedQuery          unsupported_query      (400: valid but outside the subset)
    │   └── UnknownField              unknown_field          (422: a field the API does not define)
    ├── AuthenticationFailed          unauthenticated        (401)
    ├── Forbidden                     forbidden              (403: role or membership)
    │   └── PolicyViolation           policy_violation       (403: carries the policy path)
    ├── NotFound                      not_found              (404)
    ├── Conflict                      conflict               (409)
    ├── PayloadTooLarge               payload_too_large      (413)
    ├── UnsupportedMediaType          unsupported_media_type (415)
    ├── InvalidDataset                invalid_dataset        (422: upload does not fit the policy)
    ├── InvalidPolicy                 invalid_policy         (422: policy document is wrong)
    └── BudgetExceeded                budget_exceeded        (429)
    InternalError                     internal_error         (500: a bug, never a refusal)
"""

from __future__ import annotations

from collections.abc import Iterable


class GatewayError(Exception):
    """A refusal with a stable machine-readable ``code`` and a human message."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    code = "invalid_request"


class UnsupportedQuery(InvalidRequest):
    code = "unsupported_query"


class UnknownField(InvalidRequest):
    """A request body names a field the API does not define (``epsilon_spent``, ``owner``, …).

    Refused rather than ignored, so that nobody believes they set what they cannot set. The
    message names the object that holds the unknown field and the fields it may hold, e.g.
    ``body.plan.aggregates[0]: unknown field (allowed: as, column, fn, q)``. The unknown name
    itself is never repeated: a caller's key may be anything, including data.
    """

    code = "unknown_field"

    def __init__(self, path: str, allowed: Iterable[str] = ()) -> None:
        names = sorted(allowed)
        hint = f" (allowed: {', '.join(names)})" if names else ""
        super().__init__(f"{path}: unknown field{hint}")
        self.path = path


class AuthenticationFailed(GatewayError):
    code = "unauthenticated"


class Forbidden(GatewayError):
    code = "forbidden"


class PolicyViolation(Forbidden):
    """A use of data the active policy does not allow; ``path`` locates the rule."""

    code = "policy_violation"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} (policy rule: {path})")
        self.path = path


class NotFound(GatewayError):
    code = "not_found"


class Conflict(GatewayError):
    code = "conflict"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    code = "unsupported_media_type"


class InvalidDataset(GatewayError):
    code = "invalid_dataset"


class InvalidPolicy(GatewayError):
    """A policy document that does not validate; ``path`` locates the offending entry."""

    code = "invalid_policy"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class BudgetExceeded(GatewayError):
    code = "budget_exceeded"


class InternalError(Exception):
    """A bug in the gateway. Never carries data; rendered as a generic 500."""

    code = "internal_error"
