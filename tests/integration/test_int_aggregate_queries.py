"""Queries over aggregate datasets, and side by side with customer-level data, through the API.

The demo's ``acme-retail-network`` holds ShopCo's and BigMart's weekly store aggregates and
ACME's NPS survey. The data are regenerated here from the demo's seed, so every release can be
compared with the exact figure: a value is accepted when its error is within 25 noise scales
(as ``explain`` reports them), which a correct release misses with probability below 1e-10.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gateway.demo.network_data import generate_network_tables

NETWORK = "acme-retail-network"
BASE = f"/v1/collaborations/{NETWORK}"
QUERIES, EXPLAIN = f"{BASE}/queries", f"{BASE}/queries/explain"
REGIONS = ["north", "south", "east", "west"]
K = 13
SLACK = 25  # noise scales: P(|discrete Laplace| > 25 b) < 2e-11 per cell

SUMS_SQL = (
    "SELECT region, SUM(customers) AS customers, SUM(spend) AS spend "
    "FROM shopco.store_weeks GROUP BY region"
)
SUMS_PLAN = {
    "from": "shopco.store_weeks",
    "group_by": ["region"],
    "aggregates": [
        {"fn": "sum", "column": "customers", "as": "customers"},
        {"fn": "sum", "column": "spend", "as": "spend"},
    ],
}
SIDE = {
    "side_by_side": [
        {
            "from": "acme.nps_survey",
            "group_by": ["region"],
            "aggregates": [{"fn": "mean", "column": "nps_score", "as": "brand_nps"}],
        },
        {
            "from": "acme.retail_network",
            "group_by": ["region"],
            "aggregates": [{"fn": "mean", "column": "spend", "as": "spend_per_customer"}],
        },
    ],
    "on": ["region"],
}


def _by_region(table: pa.Table, column: str, cents: bool = False) -> dict[str, float]:
    regions = np.array(table.column("region").to_pylist())
    values = np.array(table.column(column).to_pylist(), dtype=float)
    if cents:
        values = np.round(values * 100)
    return {r: float(values[regions == r].sum()) for r in REGIONS}


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    tables = generate_network_tables(survey_customers=2_000)
    shopco = tables.store_weeks["shopco"]
    both = pa.concat_tables(list(tables.store_weeks.values()))
    survey = tables.nps_survey
    stores = np.array(shopco.column("store_id").to_pylist())
    counts = np.array(shopco.column("customers").to_pylist())
    return {
        "store_customers": {s: int(counts[stores == s].sum()) for s in sorted(set(stores))},
        "customers": _by_region(shopco, "customers"),
        "spend_cents": _by_region(shopco, "spend", cents=True),
        "promoters": _by_region(shopco, "promoters"),
        "network_customers": _by_region(both, "customers"),
        "network_spend_cents": _by_region(both, "spend", cents=True),
        "survey_n": _by_region(survey.append_column("one", pa.array([1] * len(survey))), "one"),
        "survey_nps": _by_region(survey, "nps_score"),
    }


def _scales(api: Any, key: str, body: dict[str, Any]) -> dict[str, float]:
    explained = api.post(EXPLAIN, key=key, json=body)
    assert explained.status_code == 200, explained.text
    return {s["statistic"]: s["noise_scale"] for s in explained.json()["statistics"]}


def _state(api: Any, keys: dict[str, Any], services: Any) -> dict[str, Any]:
    budgets = api.get(f"{BASE}/budget", key=keys["acme"]["compliance"]).json()
    ledger = services.db.one("SELECT COUNT(*) FROM ledger")
    releases = services.db.one("SELECT COUNT(*) FROM releases")
    return {"budgets": budgets, "ledger": ledger, "releases": releases}


def _mean_error_bound(n: float, scale_sum: float, scale_count: float, half_range: float) -> float:
    """|noisy mean - mean| when both noises are within SLACK scales (see the module docstring)."""
    e_sum, e_count = SLACK * scale_sum, SLACK * scale_count
    return (e_sum + half_range * e_count) / (n - e_count)


def test_sums_of_counts_and_measures_by_region_in_sql_and_as_a_plan(
    api: Any, demo_keys: dict[str, Any], truth: dict[str, Any]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    explained = api.post(EXPLAIN, key=analyst, json={"sql": SUMS_SQL, "epsilon": 0.5}).json()
    sensitivity = {s["statistic"]: s["sensitivity"] for s in explained["statistics"]}
    # One customer: in at most 13 rows, adding 1 to each count and at most 500.00 to its spend
    # (in cents, plus one cent of rounding per row).
    assert sensitivity == {"count": K, "sum:shopco.store_weeks.spend": K * 50_001}
    assert explained["rows_per_customer"] == K and explained["groups_per_customer"] == K
    scale = {s["statistic"]: s["noise_scale"] for s in explained["statistics"]}

    release = api.post(QUERIES, key=analyst, json={"sql": SUMS_SQL, "epsilon": 0.5}).json()
    assert release["epsilon_spent"] == 0.5 and [r["region"] for r in release["rows"]] == REGIONS
    for row in release["rows"]:
        region = row["region"]
        customers, spend = row["customers"], row["spend"]
        assert abs(customers["value"] - truth["customers"][region]) <= SLACK * scale["count"]
        error = abs(spend["value"] * 100 - truth["spend_cents"][region])
        assert error <= SLACK * scale["sum:shopco.store_weeks.spend"]
        low, high = spend["ci95"]
        assert low < spend["value"] < high and customers["ci95"][0] < customers["value"]

    # The JSON plan is the same query: asked again, it is the stored release, at no cost.
    again = api.post(QUERIES, key=analyst, json={"plan": SUMS_PLAN, "epsilon": 0.5}).json()
    assert again["replay"] is True and again["epsilon_spent"] == 0
    assert again["rows"] == release["rows"] and again["query_id"] == release["query_id"]


def test_a_mean_over_aggregate_rows_is_per_customer(
    api: Any, demo_keys: dict[str, Any], truth: dict[str, Any]
) -> None:
    analyst = demo_keys["shopco"]["analyst"]  # its own dataset
    body = {
        "plan": {
            "from": "shopco.store_weeks",
            "group_by": ["region"],
            "aggregates": [
                {"fn": "mean", "column": "spend", "as": "spend_per_customer"},
                {"fn": "mean", "column": "promoters", "as": "promoter_rate"},
            ],
        },
        "epsilon": 0.9,
    }
    scale = _scales(api, analyst, body)
    release = api.post(QUERIES, key=analyst, json=body)
    assert release.status_code == 200, release.text
    for row in release.json()["rows"]:
        n = truth["customers"][row["region"]]
        spend = truth["spend_cents"][row["region"]] / 100 / n
        bound = _mean_error_bound(
            n, scale["csum:shopco.store_weeks.spend"] / 100, scale["count"], 250
        )
        assert abs(row["spend_per_customer"]["value"] - spend) <= bound
        rate = truth["promoters"][row["region"]] / n
        bound = _mean_error_bound(n, scale["csum:shopco.store_weeks.promoters"], scale["count"], 1)
        assert abs(row["promoter_rate"]["value"] - rate) <= bound
        low, high = row["spend_per_customer"]["ci95"]
        assert 0 <= low <= row["spend_per_customer"]["value"] <= high <= 500


def test_private_store_keys_go_through_partition_selection(
    api: Any, demo_keys: dict[str, Any], truth: dict[str, Any]
) -> None:
    # ε 1 (the policy's cap), not 0.5: at 0.5 the threshold is 482 at noise scale 26 and the
    # smallest store holds 734 customer-weeks, so some store was dropped in about 1 run in
    # 25,000 (P = 4.0e-5). At ε 1 the threshold is 248 at scale 13 (P < 1e-16, checked below).
    body = {
        "sql": "SELECT store_id, SUM(customers) AS n FROM shopco.store_weeks GROUP BY store_id",
        "epsilon": 1.0,
    }
    explained = api.post(EXPLAIN, key=demo_keys["acme"]["analyst"], json=body)
    assert explained.status_code == 200, explained.text
    [selection] = [
        a["partition_selection"]
        for a in explained.json()["aggregates"]
        if "partition_selection" in a
    ]
    scale = {s["statistic"]: s["noise_scale"] for s in explained.json()["statistics"]}["count"]
    # A store is released when its noisy count reaches the threshold t: it is dropped with
    # P(X <= t - 1 - n) = a^(n - t + 1) / (1 + a), a = exp(-1 / scale). Union over the stores:
    alpha = np.exp(-1 / scale)
    stores_truth = truth["store_customers"]
    dropped = sum(
        alpha ** (n - selection["threshold"] + 1) / (1 + alpha) for n in stores_truth.values()
    )
    assert len(stores_truth) == 24 and dropped < 1e-10, (selection, scale, dropped)
    release = api.post(QUERIES, key=demo_keys["acme"]["analyst"], json=body)
    assert release.status_code == 200, release.text
    stores = [row["store_id"] for row in release.json()["rows"]]
    assert stores == sorted(stores_truth)  # every ShopCo store clears the threshold


def test_min_group_size_applies_to_the_summed_count(api: Any, demo_keys: dict[str, Any]) -> None:
    policy = api.get(f"{BASE}/policy", key=demo_keys["acme"]["compliance"]).json()
    assert policy["version"] == 1
    text = api.get(
        f"{BASE}/policy",
        key=demo_keys["acme"]["compliance"],
        headers={"Accept": "application/yaml"},
    ).text
    stricter = text.replace("min_group_size: 25,", "min_group_size: 12000,")
    assert stricter != text
    proposal = api.put(
        f"{BASE}/policy",
        key=demo_keys["acme"]["compliance"],
        content=stricter.encode(),
        headers={"Content-Type": "application/yaml"},
    ).json()
    for org in ("bigmart", "shopco"):
        decided = api.post(
            f"{BASE}/policy/versions/{proposal['version']}/approve",
            key=demo_keys[org]["compliance"],
        )
        assert decided.status_code == 200, decided.text
    release = api.post(
        QUERIES, key=demo_keys["acme"]["analyst"], json={"sql": SUMS_SQL, "epsilon": 0.5}
    ).json()
    # North has about 14,000 customer-weeks at ShopCo; west about 6,000: withheld.
    rows = {row["region"]: row for row in release["rows"]}
    assert rows["west"] == {"region": "west", "suppressed": True, "customers": None, "spend": None}
    assert "suppressed" not in rows["north"] and rows["north"]["customers"]["value"] > 12_000


def test_a_tighter_declaration_holds_for_rows_stored_before_it(
    api: Any, demo_keys: dict[str, Any], truth: dict[str, Any]
) -> None:
    officer = demo_keys["acme"]["compliance"]
    text = api.get(f"{BASE}/policy", key=officer, headers={"Accept": "application/yaml"}).text
    tighter = text.replace("per_unit_bounds: [0, 500]", "per_unit_bounds: [0, 20]")
    assert tighter.count("per_unit_bounds: [0, 20]") == 2  # both retailers: one network
    proposal = api.put(
        f"{BASE}/policy",
        key=officer,
        content=tighter.encode(),
        headers={"Content-Type": "application/yaml"},
    ).json()
    for org in ("bigmart", "shopco"):
        api.post(
            f"{BASE}/policy/versions/{proposal['version']}/approve",
            key=demo_keys[org]["compliance"],
        )
    body = {"sql": SUMS_SQL, "epsilon": 0.5}
    scale = _scales(api, demo_keys["acme"]["analyst"], body)
    assert scale["sum:shopco.store_weeks.spend"] == pytest.approx(K * 2_001 / (0.5 / 2))
    release = api.post(QUERIES, key=demo_keys["acme"]["analyst"], json=body).json()
    for row in release["rows"]:
        # Stored rows average about 48 a customer: every row is clamped to count x 20.
        clamped = 20 * 100 * truth["customers"][row["region"]]
        error = abs(row["spend"]["value"] * 100 - clamped)
        assert error <= SLACK * scale["sum:shopco.store_weeks.spend"]


REFUSED: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    (
        "a join of aggregate rows",
        "acme",
        {
            "plan": {
                "from": "acme.nps_survey",
                "join": ["shopco.store_weeks"],
                "aggregates": [{"fn": "count"}],
            }
        },
        403,
        "policy_violation",
        "datasets.shopco.store_weeks.kind",
    ),
    (
        "a join in SQL",
        "acme",
        {
            "sql": "SELECT COUNT(*) AS n FROM acme.nps_survey AS s "
            "JOIN acme.retail_network AS w ON s.customer_id = w.customers"
        },
        403,
        "policy_violation",
        "networks.acme.retail_network",
    ),
    (
        "a mean of the count column",
        "acme",
        {"sql": "SELECT AVG(customers) AS a FROM shopco.store_weeks"},
        403,
        "policy_violation",
        "datasets.shopco.store_weeks.count_column",
    ),
    (
        "a median of an aggregate measure",
        "acme",
        {"sql": "SELECT MEDIAN(spend) AS m FROM shopco.store_weeks"},
        403,
        "policy_violation",
        "datasets.shopco.store_weeks.columns.spend.aggregates",
    ),
    (
        "another member's dataset by name",
        "shopco",
        {"sql": "SELECT SUM(spend) AS s FROM bigmart.store_weeks"},
        403,
        "policy_violation",
        "networks.acme.retail_network.named",
    ),
    (
        "the rest of the network by store",
        "shopco",
        {
            "sql": "SELECT CASE WHEN retailer = 'shopco' THEN 'me' ELSE 'network' END AS standing,"
            " store_id, SUM(customers) AS n FROM acme.retail_network GROUP BY standing, store_id"
        },
        403,
        "policy_violation",
        "networks.acme.retail_network.compare_by",
    ),
    (
        "side by side on different groups",
        "acme",
        {"plan": {**SIDE, "on": ["segment"]}},
        400,
        "invalid_request",
        "plan.side_by_side[0].group_by",
    ),
    (
        "side by side over private keys",
        "acme",
        {
            "plan": {
                "side_by_side": [
                    {**SIDE["side_by_side"][0], "group_by": ["region"]},
                    {
                        "from": "shopco.store_weeks",
                        "group_by": ["store_id"],
                        "aggregates": [{"fn": "count", "as": "n"}],
                    },
                ],
                "on": ["region"],
            }
        },
        400,
        "invalid_request",
        "plan.side_by_side[1].group_by",
    ),
    (
        "side by side above the cap",
        "acme",
        {"plan": SIDE, "epsilon": 1.5},
        403,
        "policy_violation",
        "privacy.max_epsilon_per_query",
    ),
    (
        "a side refused by the policy",
        "shopco",
        {
            "plan": {
                **SIDE,
                "side_by_side": [
                    SIDE["side_by_side"][0],
                    {**SIDE["side_by_side"][1], "from": "bigmart.store_weeks"},
                ],
            }
        },
        403,
        "policy_violation",
        "networks.acme.retail_network.named",
    ),
]


@pytest.mark.parametrize(
    ("org", "body", "status", "code", "path"),
    [c[1:] for c in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_refusals_spend_nothing_and_name_the_rule(
    org: str,
    body: dict[str, Any],
    status: int,
    code: str,
    path: str,
    api: Any,
    demo_keys: dict[str, Any],
    services: Any,
    assert_error: Any,
) -> None:
    before = _state(api, demo_keys, services)
    for endpoint in (EXPLAIN, QUERIES):
        response = api.post(endpoint, key=demo_keys[org]["analyst"], json={"epsilon": 0.5, **body})
        assert path in assert_error(response, status, code)["message"]
    assert _state(api, demo_keys, services) == before


def test_side_by_side_releases_both_metrics_by_region_for_one_charge(
    api: Any, demo_keys: dict[str, Any], services: Any, truth: dict[str, Any]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    body = {"plan": SIDE, "epsilon": 1.0}
    explained = api.post(EXPLAIN, key=analyst, json=body).json()
    stats = {s["statistic"]: s for s in explained["statistics"]}
    assert {s["epsilon"] for s in stats.values()} == {0.25}  # each side gets half, split in two
    assert stats["p0:count"]["sensitivity"] == 1  # a customer answers the survey once
    assert stats["p1:count"]["sensitivity"] == 2 * K  # and shops at both retailers' stores
    assert [a["as"] for a in explained["aggregates"]] == ["brand_nps", "spend_per_customer"]
    before = _state(api, demo_keys, services)["budgets"]["budgets"]

    release = api.post(QUERIES, key=analyst, json=body).json()
    assert release["epsilon_spent"] == 1.0 and release["group_by"] == ["region"]
    assert set(release["datasets"]) == {
        "acme.nps_survey",
        "bigmart.store_weeks",
        "shopco.store_weeks",
    }
    spent = {b["org"]: b["epsilon_spent"] for b in before}
    after = api.get(f"{BASE}/budget", key=demo_keys["acme"]["compliance"]).json()["budgets"]
    assert {b["org"]: b["epsilon_spent"] for b in after} == {**spent, "acme": spent["acme"] + 1.0}
    scale = {key: s["noise_scale"] for key, s in stats.items()}
    assert [row["region"] for row in release["rows"]] == REGIONS
    for row in release["rows"]:
        region = row["region"]
        assert set(row) == {"region", "brand_nps", "spend_per_customer"}
        n = truth["survey_n"][region]
        nps = truth["survey_nps"][region] / n
        bound = _mean_error_bound(
            n, scale["p0:csum:acme.nps_survey.nps_score"], scale["p0:count"], 5
        )
        assert abs(row["brand_nps"]["value"] - nps) <= bound
        n = truth["network_customers"][region]
        spend = truth["network_spend_cents"][region] / 100 / n
        csum = scale["p1:csum:acme.retail_network.spend"] / 100
        assert abs(row["spend_per_customer"]["value"] - spend) <= _mean_error_bound(
            n, csum, scale["p1:count"], 250
        )
    again = api.post(QUERIES, key=analyst, json=body).json()
    assert again["replay"] is True and again["rows"] == release["rows"]


def test_the_dataset_listing_shows_what_aggregate_columns_allow(
    api: Any, demo_keys: dict[str, Any]
) -> None:
    """``GET …/datasets`` names each aggregate measure's per-customer bounds and aggregates, and
    the count column as a measure that may only be summed."""
    response = api.get(f"/v1/collaborations/{NETWORK}/datasets", key=demo_keys["acme"]["analyst"])
    assert response.status_code == 200, response.text
    listed = {d["id"]: d for d in response.json()["datasets"]}
    weeks = listed["shopco.store_weeks"]
    assert weeks["kind"] == "aggregate"
    measures = {n: c for n, c in weeks["columns"].items() if c["use"] == "measure"}
    assert measures, weeks
    for name, column in measures.items():
        assert "per_unit_bounds" in column and column["aggregates"], (name, column)
        assert "bounds" not in column
    assert {"use": "measure", "type": "int", "per_unit_bounds": [1.0, 1.0]}.items() <= {
        k: v for k, v in measures["customers"].items() if k != "aggregates"
    }.items()
    assert measures["customers"]["aggregates"] == ["sum"]
