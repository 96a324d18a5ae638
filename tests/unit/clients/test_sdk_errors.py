"""Every non-2xx answer becomes the right GatewayError subclass, by code first, then status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clients import (
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    GatewayClient,
    GatewayError,
    InvalidPolicyError,
    InvalidRequest,
    InvalidUpload,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PolicyViolation,
    ServerError,
)
from clients.errors import error_from_response


def _error(status: int, code: str, message: str = "refused") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthenticated", AuthenticationError),
        (403, "forbidden", PermissionDenied),
        (403, "policy_violation", PolicyViolation),
        (404, "not_found", NotFound),
        (409, "conflict", Conflict),
        (400, "invalid_request", InvalidRequest),
        (400, "unsupported_query", InvalidRequest),
        (422, "invalid_dataset", InvalidUpload),
        (415, "unsupported_media_type", InvalidUpload),
        (422, "invalid_policy", InvalidPolicyError),
        (413, "payload_too_large", PayloadTooLarge),
        (429, "budget_exceeded", BudgetExceeded),
        (500, "internal_error", ServerError),
        (503, "unavailable", ServerError),
    ],
)
def test_gateway_error_shape_maps_to_class(
    status: int, code: str, expected: type[GatewayError]
) -> None:
    error = error_from_response(_error(status, code, "the message"))
    assert type(error) is expected
    assert (error.code, error.message, error.status) == (code, "the message", status)


def test_code_wins_over_status() -> None:
    assert type(error_from_response(_error(400, "budget_exceeded"))) is BudgetExceeded
    assert type(error_from_response(_error(422, "invalid_policy"))) is InvalidPolicyError
    assert type(error_from_response(_error(422, "invalid_dataset"))) is InvalidUpload


def test_policy_violation_is_a_permission_denial() -> None:
    error = error_from_response(
        _error(403, "policy_violation", "datasets.bigmart.loyalty.columns.email.use")
    )
    assert isinstance(error, PermissionDenied)
    assert "columns.email.use" in error.message


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidRequest),
        (401, AuthenticationError),
        (403, PermissionDenied),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (422, InvalidRequest),
        (429, GatewayError),  # a rate limit is not a budget refusal
        (418, GatewayError),
        (502, ServerError),
    ],
)
def test_unknown_or_missing_code_falls_back_to_status(
    status: int, expected: type[GatewayError]
) -> None:
    unknown_code = error_from_response(_error(status, "something_new"))
    assert type(unknown_code) is expected
    assert unknown_code.code == "something_new"
    html = error_from_response(httpx.Response(status, text="<html>proxy says no</html>"))
    assert type(html) is expected
    assert html.status == status
    assert html.code
    assert "proxy says no" in html.message


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502),
        httpx.Response(502, content=b"\xff\xfe\x00garbage"),
        httpx.Response(502, json=["not", "an", "object"]),
        httpx.Response(502, json={"error": "flat string"}),
        httpx.Response(502, json={"error": {"code": 7, "message": None}}),
        httpx.Response(502, content=b'{"error": {"code": "internal_'),
    ],
)
def test_malformed_bodies_never_crash(response: httpx.Response) -> None:
    error = error_from_response(response)
    assert isinstance(error, ServerError)
    assert error.status == 502
    assert isinstance(error.code, str) and error.code
    assert isinstance(error.message, str) and error.message


def test_fastapi_detail_becomes_the_message() -> None:
    error = error_from_response(httpx.Response(404, json={"detail": "Not Found"}))
    assert type(error) is NotFound
    assert (error.code, error.message) == ("not_found", "Not Found")


def test_long_bodies_are_truncated() -> None:
    error = error_from_response(httpx.Response(500, text="x" * 10_000))
    assert len(error.message) <= 500


def test_client_raises_the_typed_error(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: _error(429, "budget_exceeded", "0.4 left")
    with pytest.raises(BudgetExceeded) as caught:
        client.query("cx", sql="SELECT COUNT(*) AS n FROM bigmart.loyalty", epsilon=0.5)
    assert caught.value.status == 429
    assert caught.value.message == "0.4 left"
    assert "budget_exceeded" in str(caught.value)
