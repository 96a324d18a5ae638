"""Issue 3 through the HTTP API: private group keys, buckets, boolean filters, multi-row customers.

Noise cannot be seeded: every assertion on a noisy value holds whatever the noise, or fails with
a probability stated next to it (below 1e-9). For discrete Laplace noise of scale s,
``P(X >= k) = a^k / (1 + a)`` with ``a = exp(-1/s)``, and ``discrete_laplace_halfwidth(s,
1 - β)`` is the smallest t with ``P(|X| > t) <= β``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import gateway.service.queries as queries_service
from gateway.dp.noise import discrete_laplace_halfwidth
from gateway.engine.compiler import CompiledQuery

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
EXPLAIN = f"/v1/collaborations/{DEMO}/queries/explain"
REGIONS = ("north", "south", "east", "west")
RELEASE_FIELDS = {
    "query_id",
    "replay",
    "epsilon_spent",
    "delta_spent",
    "policy_version",
    "budget",
    "group_by",
    "rows",
    "datasets",
}


def post(api: Any, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, key=key, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def loyalty_table(rows: list[tuple[str, str, str]]) -> pa.Table:
    """A bigmart.loyalty upload: rows of (customer, region, store)."""
    n = len(rows)
    return pa.table(
        {
            "customer_key": [r[0] for r in rows],
            "region": [r[1] for r in rows],
            "store_id": [r[2] for r in rows],
            "channel": ["store"] * n,
            "spend_90d": [100.0] * n,
            "visits_90d": pa.array([3] * n, type=pa.int64()),
            "nps_score": pa.array([7] * n, type=pa.int64()),
        }
    )


def bound(scale: float, cells: int, failure: float = 1e-10) -> int:
    """|noise| <= bound on each of ``cells`` cells, except with probability ``failure``."""
    return discrete_laplace_halfwidth(scale, 1 - failure / cells)


def noise_scales(explained: dict[str, Any]) -> dict[str, float]:
    return {s["statistic"]: s["noise_scale"] for s in explained["statistics"]}


def selection_of(explained: dict[str, Any]) -> dict[str, Any]:
    [selection] = [
        a["partition_selection"] for a in explained["aggregates"] if "partition_selection" in a
    ]
    result: dict[str, Any] = selection
    return result


# ---------------------------------------------------------------------------------------------
# Private group keys: DP partition selection

STORES = {"S101": 400, "S102": 150, "S103": 80, "TINY9": 2}
COUNT_BY_STORE = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["store_id"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
    "epsilon": 1.0,
}


@pytest.fixture
def stores(upload: Any, encode: Any) -> dict[str, int]:
    """bigmart.loyalty with four stores, one of them (TINY9) with two customers."""
    rows = [
        (f"C{store}{i:04d}", REGIONS[i % 4], store) for store, n in STORES.items() for i in range(n)
    ]
    response = upload("bigmart", "loyalty", encode.parquet(loyalty_table(rows)))
    assert response.status_code == 201, response.text
    return STORES


def test_explain_shows_the_selection_threshold_and_delta(
    api: Any, demo_keys: dict[str, Any], stores: dict[str, int], snapshot: Any
) -> None:
    before = snapshot()
    explained = post(api, EXPLAIN, demo_keys["acme"]["analyst"], COUNT_BY_STORE)
    assert snapshot() == before
    assert explained["private_groups"] is True and explained["groups"] is None
    selection = selection_of(explained)
    # the policy's min_group_size (25) is the threshold's floor; δ stays within the policy's
    assert selection["threshold"] >= 25
    assert 0 < selection["delta"] <= 1e-7
    assert explained["delta"] == selection["delta"]


def test_only_groups_whose_noisy_count_clears_the_threshold_are_released(
    api: Any, demo_keys: dict[str, Any], stores: dict[str, int]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    explained = post(api, EXPLAIN, analyst, COUNT_BY_STORE)
    threshold, scale = selection_of(explained)["threshold"], noise_scales(explained)["count"]
    assert scale == pytest.approx(1.0) and threshold >= 25
    alpha = math.exp(-1 / scale)
    # TINY9 (2 customers) shows only if its noise reaches threshold - 2 >= 23: P < 7.6e-11.
    # S103 (80) is missing only if its noise is <= 25 - 80: P < 1e-23; the others even less.
    assert alpha ** (threshold - 2) / (1 + alpha) < 1e-10
    response = api.post(QUERIES, key=analyst, json=COUNT_BY_STORE)
    assert response.status_code == 200, response.text
    release = response.json()
    assert set(release) == RELEASE_FIELDS  # no count of suppressed groups, DP or otherwise
    assert release["delta_spent"] == explained["delta"] > 0
    assert release["epsilon_spent"] == 1.0
    assert "TINY9" not in response.text
    released = {row["store_id"]: row for row in release["rows"]}
    assert list(released) == sorted(released)  # an order that says nothing about the data
    assert set(released) == {"S101", "S102", "S103"}
    for store, row in released.items():
        assert set(row) == {"store_id", "n"}  # never flagged "suppressed": absent instead
        assert row["n"]["value"] >= threshold  # the noisy count that cleared the threshold
        assert abs(row["n"]["value"] - stores[store]) <= bound(scale, 3)


def test_private_groups_with_a_public_dimension_and_a_mean(
    api: Any, demo_keys: dict[str, Any], stores: dict[str, int]
) -> None:
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "group_by": ["store_id", "region"],
            "aggregates": [
                {"fn": "count", "as": "n"},
                {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
            ],
        },
        "epsilon": 1.0,
    }
    analyst = demo_keys["acme"]["analyst"]
    explained = post(api, EXPLAIN, analyst, body)
    threshold, scale = selection_of(explained)["threshold"], noise_scales(explained)["count"]
    assert scale == pytest.approx(2.0)  # two statistics at ε 0.5
    release = post(api, QUERIES, analyst, body)
    released = {(r["store_id"], r["region"]): r for r in release["rows"]}
    # S101 splits into 4 regions of 100 customers: each shows unless its noise is below
    # threshold - 100. S102's and S103's regions (37-38 and 20 customers) sit near the
    # threshold and may or may not show.
    exact_s101 = 100
    assert threshold <= 40  # then P(100 + X < 40) = P(X <= -61) < 1e-13 per group
    for region in REGIONS:
        row = released[("S101", region)]
        assert abs(row["n"]["value"] - exact_s101) <= bound(scale, 4)
        low, high = row["avg_spend"]["ci95"]
        assert 0 <= low <= row["avg_spend"]["value"] <= high <= 2000
    # (whether a one-customer group such as TINY9's shows is a matter of δ, which the count-only
    # test above and tests/unit/dp/test_dp_selection.py bound; at scale 2 it is ~1e-7 per group)


# ---------------------------------------------------------------------------------------------
# Buckets and boolean filters, on the demo data


def exact_count(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def test_bucket_of_one_store_against_the_rest_of_the_network(
    api: Any, demo_keys: dict[str, Any], demo_tables: Any
) -> None:
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "group_by": [
                {
                    "bucket": [
                        {"when": {"column": "store_id", "op": "eq", "value": "S001"},
                         "then": "S001"}
                    ],
                    "else": "rest of network",
                    "as": "network",
                },
                "region",
            ],
            "aggregates": [{"fn": "count", "as": "n"}],
        },
        "epsilon": 1.0,
    }  # fmt: skip
    analyst = demo_keys["acme"]["analyst"]
    explained = post(api, EXPLAIN, analyst, body)
    assert explained["groups"] == 8 and explained["private_groups"] is False
    scale = noise_scales(explained)["count"]
    release = post(api, QUERIES, analyst, body)
    assert release["group_by"] == ["network", "region"]
    # the labels are public keys: every (label, region) is in the release, in the plan's order
    assert [(r["network"], r["region"]) for r in release["rows"]] == [
        (label, region) for label in ("S001", "rest of network") for region in REGIONS
    ]
    loyalty = demo_tables.loyalty
    is_s001 = pc.equal(loyalty["store_id"], "S001")
    for row in release["rows"]:
        in_region = pc.equal(loyalty["region"], row["region"])
        mask = pc.and_(in_region, is_s001 if row["network"] == "S001" else pc.invert(is_s001))
        truth = exact_count(loyalty, mask)
        # S001 is a north store: its other regions are empty (noisy count < 25: suppressed,
        # unless the noise reaches 25 at scale 1, P < 2e-11 per group)
        if truth == 0:
            assert row == {**{k: row[k] for k in ("network", "region")}, "suppressed": True,
                           "n": None}  # fmt: skip
            continue
        assert not row.get("suppressed"), row
        assert abs(row["n"]["value"] - truth) <= bound(scale, 8)


FILTERS: list[tuple[str, dict[str, Any], Callable[[pa.Table], Any]]] = [
    (
        "between",
        {"column": "store_id", "op": "between", "values": ["S005", "S012"]},
        lambda t: pc.and_(pc.greater_equal(t["store_id"], "S005"),
                          pc.less_equal(t["store_id"], "S012")),
    ),
    (
        "or",
        {"or": [{"column": "region", "op": "eq", "value": "east"},
                {"column": "channel", "op": "in", "values": ["app"]}]},
        lambda t: pc.or_(pc.equal(t["region"], "east"), pc.equal(t["channel"], "app")),
    ),
    (
        "not",
        {"not": {"column": "region", "op": "in", "values": ["north", "south"]}},
        lambda t: pc.invert(pc.is_in(t["region"], pa.array(["north", "south"]))),
    ),
    (
        "and of not and or",
        {"and": [{"not": {"column": "channel", "op": "eq", "value": "online"}},
                 {"or": [{"column": "region", "op": "ne", "value": "west"},
                         {"column": "store_id", "op": "not_in", "values": ["S033"]}]}]},
        lambda t: pc.and_(pc.not_equal(t["channel"], "online"),
                          pc.or_(pc.not_equal(t["region"], "west"),
                                 pc.invert(pc.is_in(t["store_id"], pa.array(["S033"]))))),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "where", "mask"), FILTERS, ids=[f[0] for f in FILTERS])
def test_boolean_filters_count_the_matching_customers(
    name: str,
    where: dict[str, Any],
    mask: Callable[[pa.Table], Any],
    api: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
) -> None:
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "where": [where],
            "group_by": ["channel"],
            "aggregates": [{"fn": "count", "as": "n"}],
        },
        "epsilon": 1.0,
    }
    analyst = demo_keys["acme"]["analyst"]
    scale = noise_scales(post(api, EXPLAIN, analyst, body))["count"]
    release = post(api, QUERIES, analyst, body)
    loyalty = demo_tables.loyalty
    selected = mask(loyalty)
    for row in release["rows"]:
        truth = exact_count(
            loyalty, pc.and_(selected, pc.equal(loyalty["channel"], row["channel"]))
        )
        if row.get("suppressed"):
            # a noisy count under 25: the exact count is under 25 + bound (P < 1e-10 otherwise)
            assert truth < 25 + bound(scale, 3)
            continue
        assert abs(row["n"]["value"] - truth) <= bound(scale, 3), (name, row, truth)


# ---------------------------------------------------------------------------------------------
# Customers with several rows

MULTI_CUSTOMERS = 600


def multi_row_loyalty() -> pa.Table:
    """Every customer has three rows, in three different regions (and stores)."""
    return loyalty_table(
        [(f"M{i:05d}", region, f"S00{j + 1}")
         for i in range(MULTI_CUSTOMERS) for j, region in enumerate(REGIONS[:3])]
    )  # fmt: skip


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[CompiledQuery]:
    """Every query the service compiles, in order (the real compiler, observed)."""
    seen: list[CompiledQuery] = []
    real = queries_service.compile_query

    def spy(*args: Any, **kwargs: Any) -> CompiledQuery:
        result = real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(queries_service, "compile_query", spy)
    return seen


@pytest.mark.parametrize("groups", [1, 2])
def test_each_customer_counts_in_at_most_max_groups_per_unit_groups(
    groups: int,
    api: Any,
    demo_keys: dict[str, Any],
    put_policy: Any,
    upload: Any,
    encode: Any,
    compiled: list[CompiledQuery],
) -> None:
    def multi_row(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"].update(max_rows_per_unit=3, max_groups_per_unit=groups)

    put_policy(multi_row)
    answer = upload("bigmart", "loyalty", encode.parquet(multi_row_loyalty()))
    assert answer.status_code == 201, answer.text
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "group_by": ["region"],
            "aggregates": [{"fn": "count", "as": "n"}],
        },
        "epsilon": 1.0,
    }
    analyst = demo_keys["acme"]["analyst"]
    explained = post(api, EXPLAIN, analyst, body)
    assert (explained["rows_per_customer"], explained["groups_per_customer"]) == (3, groups)
    [count] = explained["statistics"]
    assert count["sensitivity"] == 3 and count["noise_scale"] == pytest.approx(3.0)
    release = post(api, QUERIES, analyst, body)
    rows = {r["region"]: r for r in release["rows"]}
    # every customer keeps rows in `groups` of its three regions: 600 × groups in all
    total = sum(r["n"]["value"] for r in rows.values() if not r.get("suppressed"))
    assert abs(total - MULTI_CUSTOMERS * groups) <= 4 * bound(3.0, 4)
    assert rows["west"].get("suppressed") or abs(rows["west"]["n"]["value"]) <= bound(3.0, 4)
    # the rows already hold the row bound (3 per customer, as ingest recorded): only the group
    # bound is enforced, by a random choice of groups per customer
    [query] = compiled
    assert "SELECT DISTINCT" in query.setup and "random()" in query.setup
    assert "QUALIFY row_number() OVER (PARTITION BY _token ORDER BY" in query.setup
    assert query.setup.count("QUALIFY") == 1


def test_no_bounding_work_when_the_ingest_statistics_show_the_bounds_hold(
    api: Any, demo_keys: dict[str, Any], compiled: list[CompiledQuery]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "group_by": ["region", "segment"],
            "aggregates": [{"fn": "count", "as": "n"}],
        },
        "epsilon": 0.5,
    }
    post(api, QUERIES, analyst, body)  # one row per customer in each table, before and after
    post(api, QUERIES, analyst, {**body, "plan": {**body["plan"], "join": [],
                                                  "group_by": ["region"]}})  # fmt: skip
    assert len(compiled) == 2
    for query in compiled:
        assert "random()" not in query.setup and "QUALIFY" not in query.setup
        assert "DISTINCT" not in query.setup
