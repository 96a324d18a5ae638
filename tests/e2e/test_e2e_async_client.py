"""The async SDK against a real gateway: one query and one streamed file upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pyarrow.parquet as pq
import pytest

from clients import AsyncGatewayClient, Release
from gateway.demo.data import CHANNELS, generate_demo_tables
from gateway.demo.seed import COLLABORATION

pytestmark = pytest.mark.e2e

C = COLLABORATION


def test_async_query(gateway: Any, keys: dict[str, Any]) -> None:
    plan = {
        "from": "bigmart.loyalty",
        "group_by": ["channel"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "visits_90d", "as": "avg_visits"},
        ],
    }

    async def main() -> tuple[Release, list[dict[str, Any]]]:
        async with AsyncGatewayClient(gateway.url, keys["acme"]["analyst"]) as gw:
            release = await gw.query(C, plan=plan, epsilon=0.4)
            return release, await gw.budget(C)

    release, [budget] = anyio.run(main)
    assert release.replay is False
    assert release.epsilon_spent == pytest.approx(0.4)
    assert sorted(row["channel"] for row in release.rows) == sorted(CHANNELS)
    assert budget["epsilon_spent"] == pytest.approx(release.budget["epsilon_spent"])
    for row in release.rows:
        if not row.get("suppressed"):
            low, high = row["customers"]["ci95"]
            assert low <= row["customers"]["value"] <= high


def test_async_upload_of_a_file(gateway: Any, keys: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "survey.parquet"
    pq.write_table(generate_demo_tables(customers=500).survey, path)
    sent: list[int] = []

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncGatewayClient(gateway.url, keys["acme"]["contributor"]) as gw:
            before = await gw.datasets(C)
            answer = await gw.upload(C, "survey", path, progress=sent.append)
            return before, answer

    before, answer = anyio.run(main)
    [survey] = [d for d in before["datasets"] if d["id"] == "acme.survey"]
    assert answer["dataset"] == "acme.survey"
    assert answer["version"] == survey["version"] + 1
    assert answer["rows"] == 500
    assert sent and sent[-1] == path.stat().st_size
    assert all(a < b for a, b in zip(sent, sent[1:], strict=False))
