"""``budget_history()`` on both clients: the ``series`` list of ``GET …/budget/history``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from clients import GatewayClient
from clients.errors import GatewayError

SERIES = [
    {
        "org": "acme",
        "period": "2026-11",
        "bucket": "query",
        "points": [{"at": "2026-11-20T15:31:00+00:00", "epsilon_spent": 0.1, "epsilon_total": 8.0}],
    }
]


def test_budget_history_returns_the_series(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"series": SERIES})
    assert client.budget_history("cx") == SERIES
    assert fake.last.request.method == "GET"
    assert fake.last.request.url.path == "/v1/collaborations/cx/budget/history"


def test_the_async_client_reads_the_same(fake: Any, make_async_client: Any) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"series": SERIES})

    async def run() -> Any:
        async with make_async_client() as gw:
            return await gw.budget_history("cx")

    assert asyncio.run(run()) == SERIES
    assert fake.last.request.url.path == "/v1/collaborations/cx/budget/history"


def test_an_answer_without_series_is_an_error(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"budgets": []})
    with pytest.raises(GatewayError, match="series"):
        client.budget_history("cx")
