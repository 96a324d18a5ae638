"""The SDK reads a real benchmark release's comparison (the demo's retail network, over ASGI).

ShopCo's analyst splits its own store weeks from the rest of the network by region, as the
comment in gateway/demo/network-policy.yaml shows. ``Release.comparison`` must hold exactly
what the gateway answered, and its table must be each region's difference of the two
released means (post-processing of the release's own rows, nothing else).
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import httpx
import pytest

from clients import AsyncGatewayClient, Release

NETWORK = "acme-retail-network"
STANDING = (
    "SELECT CASE WHEN retailer = 'shopco' THEN 'me' ELSE 'network' END AS standing, region, "
    "SUM(customers) AS customers, AVG(spend) AS spend_per_customer, "
    "AVG(promoters) AS promoter_rate FROM acme.retail_network GROUP BY standing, region"
)


def _ask(api: Any, key: str, sql: str) -> Release:
    async def run() -> Release:
        transport = httpx.ASGITransport(app=api.app)
        async with AsyncGatewayClient("http://gateway", key, transport=transport) as gw:
            return await gw.query(NETWORK, sql=sql, epsilon=0.5)

    return anyio.run(run)


def test_a_retailer_reads_its_standing_as_a_table(api: Any, demo_keys: dict[str, Any]) -> None:
    release = _ask(api, demo_keys["shopco"]["analyst"], STANDING)
    comparison = release.comparison
    assert comparison is not None
    assert comparison.rows == release.raw["comparison"]["rows"]
    assert (comparison.by, comparison.of, comparison.against) == ("standing", "me", "network")
    assert comparison.keys == ["region"]
    assert comparison.aliases == ["spend_per_customer", "promoter_rate"]

    sides = {(r["standing"], r["region"]): r for r in release.rows}
    table = comparison.to_pandas().set_index("region")
    assert sorted(table.index) == sorted({region for _, region in sides})
    assert table["spend_per_customer"].notna().any()  # the demo's regions are not all withheld
    for region, row in table.iterrows():
        for alias in comparison.aliases:
            mine, rest = sides[("me", region)].get(alias), sides[("network", region)].get(alias)
            if not mine or not rest or mine["value"] is None or rest["value"] is None:
                assert math.isnan(row[alias]), (region, alias)
                continue
            assert row[alias] == pytest.approx(mine["value"] - rest["value"], abs=1e-5)
            assert row[f"{alias}_ci95_low"] < row[alias] < row[f"{alias}_ci95_high"]


def test_the_brand_by_retailer_has_no_comparison(api: Any, demo_keys: dict[str, Any]) -> None:
    by_name = "SELECT retailer, AVG(spend) AS spend FROM acme.retail_network GROUP BY retailer"
    release = _ask(api, demo_keys["acme"]["analyst"], by_name)
    assert release.comparison is None
    assert "comparison" not in release.raw
