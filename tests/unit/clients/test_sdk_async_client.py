"""AsyncGatewayClient sends the same requests as the sync client and streams uploads."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients import AsyncGatewayClient, BudgetExceeded, PolicyViolation, Release
from clients._upload import CHUNK_SIZE

MakeClient = Callable[[], AsyncGatewayClient]


def test_query_returns_a_release(
    fake: Any, make_async_client: MakeClient, release_json: dict[str, Any]
) -> None:
    fake.reply = lambda request: httpx.Response(200, json=release_json)

    async def run() -> Release:
        async with make_async_client() as gw:
            return await gw.query("cx", sql="SELECT COUNT(*) AS n FROM x.y", epsilon=0.5)

    release = asyncio.run(run())
    assert release.query_id == "q-123"
    assert release.to_arrow().column("suppressed").to_pylist() == [False, True]
    request = fake.last.request
    assert (request.method, request.url.path) == ("POST", "/v1/collaborations/cx/queries")
    assert request.headers["Authorization"] == "Bearer ig_test_analyst_key"
    assert fake.last.json() == {"sql": "SELECT COUNT(*) AS n FROM x.y", "epsilon": 0.5}


def test_errors_are_typed(fake: Any, make_async_client: MakeClient) -> None:
    async def run(status: int, code: str) -> None:
        fake.reply = lambda request: httpx.Response(
            status, json={"error": {"code": code, "message": "no"}}
        )
        async with make_async_client() as gw:
            await gw.query("cx", plan={"from": "x.y"}, epsilon=0.5)

    with pytest.raises(BudgetExceeded):
        asyncio.run(run(429, "budget_exceeded"))
    with pytest.raises(PolicyViolation):
        asyncio.run(run(403, "policy_violation"))


def test_upload_streams_a_file_in_chunks(
    fake: Any, make_async_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "survey.arrows"
    path.write_bytes(bytes(range(256)) * (CHUNK_SIZE // 64))
    fake.reply = lambda request: httpx.Response(201, json={"version": 2})
    seen: list[int] = []

    async def run() -> dict[str, Any]:
        async with make_async_client() as gw:
            return await gw.upload("cx", "survey", path, progress=seen.append)

    assert asyncio.run(run()) == {"version": 2}
    call = fake.last
    assert call.request.url.path == "/v1/collaborations/cx/datasets/survey"
    assert call.request.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
    assert len(call.chunks) == 4
    assert call.body == path.read_bytes()
    assert seen[-1] == path.stat().st_size


def test_upload_a_table(fake: Any, make_async_client: MakeClient) -> None:
    table = pa.table({"customer_key": ["a", "b"], "nps": [9, 7]})

    async def run() -> None:
        async with make_async_client() as gw:
            await gw.upload("cx", "survey", table)

    asyncio.run(run())
    assert fake.last.request.headers["Content-Type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(fake.last.body)).equals(table)


def test_the_other_methods_share_the_sync_contract(
    fake: Any, make_async_client: MakeClient
) -> None:
    fake.reply = lambda request: httpx.Response(
        200, json={"budgets": [{"org": "acme"}], "events": [{"seq": 1}], "ok": True}
    )

    async def run() -> list[Any]:
        async with make_async_client() as gw:
            return [
                await gw.health(),
                await gw.me(),
                await gw.create_org("o", "O", "retailer"),
                await gw.create_key("o", "analyst"),
                await gw.create_collaboration("cx", "CX", ["o", "p"]),
                await gw.collaboration("cx"),
                await gw.datasets("cx"),
                await gw.budget("cx"),
                await gw.policy_document("cx"),
                await gw.put_policy("cx", "collaboration: cx\n"),
                await gw.approve_policy("cx", 2),
                await gw.audit("cx", limit=5),
                await gw.verify_audit("cx"),
                (await gw.explain("cx", sql="SELECT 1", epsilon=0.1)).raw,
            ]

    results = asyncio.run(run())
    assert results[7] == [{"org": "acme"}]
    assert results[11] == [{"seq": 1}]
    assert [(c.request.method, c.request.url.path) for c in fake.calls] == [
        ("GET", "/v1/health"),
        ("GET", "/v1/me"),
        ("POST", "/v1/orgs"),
        ("POST", "/v1/orgs/o/keys"),
        ("POST", "/v1/collaborations"),
        ("GET", "/v1/collaborations/cx"),
        ("GET", "/v1/collaborations/cx/datasets"),
        ("GET", "/v1/collaborations/cx/budget"),
        ("GET", "/v1/collaborations/cx/policy"),
        ("PUT", "/v1/collaborations/cx/policy"),
        ("POST", "/v1/collaborations/cx/policy/versions/2/approve"),
        ("GET", "/v1/collaborations/cx/audit"),
        ("GET", "/v1/collaborations/cx/audit/verify"),
        ("POST", "/v1/collaborations/cx/queries/explain"),
    ]
    assert fake.calls[9].request.headers["Content-Type"] == "application/yaml"


def test_policy_text(fake: Any, make_async_client: MakeClient) -> None:
    fake.reply = lambda request: httpx.Response(200, text="collaboration: cx\n")

    async def run() -> str:
        async with make_async_client() as gw:
            return await gw.policy("cx")

    assert asyncio.run(run()) == "collaboration: cx\n"
    assert fake.last.request.headers["Accept"] == "application/yaml"
