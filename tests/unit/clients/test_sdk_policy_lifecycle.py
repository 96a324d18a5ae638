"""The policy lifecycle methods of both clients: versions, one version, approve/reject/withdraw."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from clients import AsyncGatewayClient, Conflict, GatewayClient, GatewayError, NotFound

DECISION = {"status": "pending", "version": 3, "approvals": {"acme": True, "bigmart": False}}
VERSIONS = [
    {
        "version": 1,
        "status": "active",
        "proposed_by": "acme",
        "created_at": "2025-01-01T00:00:00+00:00",
        "approvals": {"acme": True},
    },
    {
        "version": 2,
        "status": "pending",
        "proposed_by": "acme",
        "created_at": "2025-01-02T00:00:00+00:00",
        "approvals": {"acme": True, "bigmart": False},
    },
]
ONE_VERSION = {**VERSIONS[1], "document": "collaboration: cx\n", "diff": "--- v1\n+++ v2\n"}

SyncCall = Callable[[GatewayClient], Any]
AsyncCall = Callable[[AsyncGatewayClient], Awaitable[Any]]

CALLS: list[tuple[str, SyncCall, AsyncCall, str, str, Any]] = [
    (
        "versions",
        lambda gw: gw.policy_versions("cx"),
        lambda gw: gw.policy_versions("cx"),
        "GET",
        "/v1/collaborations/cx/policy/versions",
        {"versions": VERSIONS},
    ),
    (
        "version",
        lambda gw: gw.policy_version("cx", 2),
        lambda gw: gw.policy_version("cx", 2),
        "GET",
        "/v1/collaborations/cx/policy/versions/2",
        ONE_VERSION,
    ),
    (
        "approve",
        lambda gw: gw.approve_policy("cx", 3),
        lambda gw: gw.approve_policy("cx", 3),
        "POST",
        "/v1/collaborations/cx/policy/versions/3/approve",
        DECISION,
    ),
    (
        "reject",
        lambda gw: gw.reject_policy("cx", 3),
        lambda gw: gw.reject_policy("cx", 3),
        "POST",
        "/v1/collaborations/cx/policy/versions/3/reject",
        {**DECISION, "status": "rejected"},
    ),
    (
        "withdraw",
        lambda gw: gw.withdraw_policy("cx", 3),
        lambda gw: gw.withdraw_policy("cx", 3),
        "POST",
        "/v1/collaborations/cx/policy/versions/3/withdraw",
        {**DECISION, "status": "withdrawn"},
    ),
]
IDS = [c[0] for c in CALLS]


def _expected(name: str, answer: Any) -> Any:
    return answer["versions"] if name == "versions" else answer


@pytest.mark.parametrize(("name", "call", "_acall", "method", "path", "answer"), CALLS, ids=IDS)
def test_sync_lifecycle_requests(
    fake: Any,
    client: GatewayClient,
    name: str,
    call: SyncCall,
    _acall: AsyncCall,
    method: str,
    path: str,
    answer: Any,
) -> None:
    fake.reply = lambda request: httpx.Response(200, json=answer)
    assert call(client) == _expected(name, answer)
    request = fake.last.request
    assert (request.method, request.url.path) == (method, path)
    assert fake.last.body == b""
    assert request.headers["Authorization"] == "Bearer ig_test_analyst_key"


@pytest.mark.parametrize(("name", "_call", "acall", "method", "path", "answer"), CALLS, ids=IDS)
def test_async_lifecycle_requests(
    fake: Any,
    make_async_client: Callable[[], AsyncGatewayClient],
    name: str,
    _call: SyncCall,
    acall: AsyncCall,
    method: str,
    path: str,
    answer: Any,
) -> None:
    fake.reply = lambda request: httpx.Response(200, json=answer)

    async def run() -> Any:
        async with make_async_client() as gw:
            return await acall(gw)

    assert asyncio.run(run()) == _expected(name, answer)
    request = fake.last.request
    assert (request.method, request.url.path) == (method, path)
    assert fake.last.body == b""


def test_one_version_asks_for_json(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json=ONE_VERSION)
    client.policy_version("cx", 2)
    assert fake.last.request.headers["Accept"] == "application/json"


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.0])
@pytest.mark.parametrize(
    "method", ["policy_version", "approve_policy", "reject_policy", "withdraw_policy"]
)
def test_a_bad_version_sends_nothing(
    fake: Any, client: GatewayClient, method: str, version: Any
) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        getattr(client, method)("cx", version)
    assert fake.calls == []


def test_collaboration_id_is_escaped(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"versions": []})
    assert client.policy_versions("a/b") == []
    assert fake.last.request.url.raw_path == b"/v1/collaborations/a%2Fb/policy/versions"


@pytest.mark.parametrize("body", [{}, {"versions": None}, {"versions": {"1": "active"}}])
def test_versions_without_a_list_is_a_gateway_error(
    fake: Any, client: GatewayClient, body: dict[str, Any]
) -> None:
    fake.reply = lambda request: httpx.Response(200, json=body)
    with pytest.raises(GatewayError) as caught:
        client.policy_versions("cx")
    assert caught.value.code == "invalid_response"


def test_refusals_are_typed(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(
        409, json={"error": {"code": "conflict", "message": "version 3 is not pending"}}
    )
    with pytest.raises(Conflict, match="not pending"):
        client.withdraw_policy("cx", 3)
    fake.reply = lambda request: httpx.Response(
        404, json={"error": {"code": "not_found", "message": "policy version 9 not found"}}
    )
    with pytest.raises(NotFound):
        client.policy_version("cx", 9)
