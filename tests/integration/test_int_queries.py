"""Queries over the seeded demo: replays, explain, budgets and suppression, through the real app."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
EXPLAIN = f"/v1/collaborations/{DEMO}/queries/explain"
BUDGET = f"/v1/collaborations/{DEMO}/budget"
REGIONS = ("north", "south", "east", "west")

JOINT = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [{"column": "channel", "op": "in", "values": ["store", "app"]}],
        "group_by": ["region"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "sum", "column": "visits_90d", "as": "visits"},
            {"fn": "sum", "column": "spend_90d", "as": "spend"},
            {"fn": "mean", "column": "satisfaction", "as": "avg_satisfaction"},
        ],
    },
    "epsilon": 0.8,
}


def post(api: Any, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, key=key, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_release_shape(api: Any, demo_keys: dict[str, Any]) -> None:
    release = post(api, QUERIES, demo_keys["acme"]["analyst"], JOINT)
    assert release["replay"] is False
    assert release["epsilon_spent"] == 0.8
    assert release["policy_version"] == 1
    assert release["budget"] == {"epsilon_total": 8.0, "epsilon_spent": 0.8, "epsilon_left": 7.2}
    assert release["group_by"] == ["region"]
    assert [r["region"] for r in release["rows"]] == ["north", "south", "east", "west"]
    for row in release["rows"]:
        if row.get("suppressed"):
            continue
        for name in ("customers", "visits", "spend", "avg_satisfaction"):
            cell = row[name]
            assert set(cell) == {"value", "ci95"}
            lo, hi = cell["ci95"]
            assert lo <= cell["value"] <= hi
        assert 1 <= row["avg_satisfaction"]["ci95"][0] <= row["avg_satisfaction"]["ci95"][1] <= 5


def test_replay_is_free_and_identical(api: Any, demo_keys: dict[str, Any], snapshot: Any) -> None:
    analyst = demo_keys["acme"]["analyst"]
    first = post(api, QUERIES, analyst, JOINT)
    before = snapshot()
    again = post(api, QUERIES, analyst, JOINT)
    assert again["replay"] is True
    assert again["epsilon_spent"] == 0
    assert again["query_id"] == first["query_id"]
    assert again["rows"] == first["rows"]
    assert again["budget"] == first["budget"]
    assert snapshot() == before
    # Key order and spelling of the same plan do not matter: still a replay.
    reordered = {"epsilon": 0.8, "plan": dict(reversed(list(JOINT["plan"].items())))}
    assert post(api, QUERIES, analyst, reordered)["query_id"] == first["query_id"]
    assert snapshot() == before
    # Another organisation asking the same question gets its own release, on its own budget.
    other = post(api, QUERIES, demo_keys["bigmart"]["analyst"], JOINT)
    assert other["replay"] is False and other["query_id"] != first["query_id"]
    assert other["budget"]["epsilon_total"] == 4.0
    # A different ε is a different question.
    changed = post(api, QUERIES, analyst, {**JOINT, "epsilon": 0.7})
    assert changed["replay"] is False


def test_replay_still_answers_when_the_budget_is_gone(
    api: Any, demo_keys: dict[str, Any], put_policy: Any, assert_error: Any
) -> None:
    put_policy(lambda doc: doc["budgets"]["acme"].update(epsilon=0.8))
    analyst = demo_keys["acme"]["analyst"]
    first = post(api, QUERIES, analyst, JOINT)
    assert first["budget"]["epsilon_left"] == 0
    assert post(api, QUERIES, analyst, JOINT)["query_id"] == first["query_id"]
    assert_error(
        api.post(QUERIES, key=analyst, json={**JOINT, "epsilon": 0.1}), 429, "budget_exceeded"
    )


def test_explain_spends_nothing_and_predicts_the_intervals(
    api: Any, demo_keys: dict[str, Any], snapshot: Any
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    before = snapshot()
    explained = post(api, EXPLAIN, analyst, JOINT)
    assert snapshot() == before
    assert explained["epsilon"] == 0.8
    assert explained["policy_version"] == 1
    assert explained["groups"] == 4
    assert explained["within_budget"] is True
    assert explained["budget"] == {"epsilon_total": 8.0, "epsilon_spent": 0.0, "epsilon_left": 8.0}
    # The statistics' ε shares add up to the query's ε.
    assert sum(s["epsilon"] for s in explained["statistics"]) == pytest.approx(0.8)
    widths = {a["as"]: a for a in explained["aggregates"]}
    assert set(widths) == {"customers", "visits", "spend", "avg_satisfaction"}
    mean_widths = widths["avg_satisfaction"]["ci95_halfwidth_at_group_size"]
    sizes = sorted(mean_widths, key=int)
    assert all(mean_widths[a] >= mean_widths[b] for a, b in zip(sizes, sizes[1:], strict=False))

    release = post(api, QUERIES, analyst, JOINT)
    assert release["epsilon_spent"] == explained["epsilon"]
    released = [r for r in release["rows"] if not r.get("suppressed")]
    assert released, "every group suppressed: nothing to compare"
    for row in released:
        for name in ("customers", "visits", "spend"):
            lo, hi = row[name]["ci95"]
            assert (hi - lo) / 2 == pytest.approx(widths[name]["ci95_halfwidth"], abs=1e-6)
            assert row[name]["value"] - lo == pytest.approx(hi - row[name]["value"], abs=1e-6)
    # Explain after the query reports what was spent.
    assert post(api, EXPLAIN, analyst, JOINT)["budget"]["epsilon_spent"] == pytest.approx(0.8)


def test_budget_visibility(api: Any, demo_keys: dict[str, Any], assert_error: Any) -> None:
    post(api, QUERIES, demo_keys["acme"]["analyst"], JOINT)
    for org in ("acme", "bigmart"):
        response = api.get(BUDGET, key=demo_keys[org]["analyst"])
        assert response.status_code == 200
        (entry,) = response.json()["budgets"]
        assert entry["org"] == org
        assert set(entry) == {
            "org",
            "epsilon_total",
            "epsilon_spent",
            "epsilon_left",
            "period",
            "resets_at",
        }
    for org in ("acme", "bigmart"):
        entries = api.get(BUDGET, key=demo_keys[org]["compliance"]).json()["budgets"]
        assert {e["org"]: e["epsilon_spent"] for e in entries} == {"acme": 0.8, "bigmart": 0.0}
        assert {e["org"]: e["epsilon_left"] for e in entries} == {"acme": 7.2, "bigmart": 4.0}
    assert_error(api.get(BUDGET, key=demo_keys["acme"]["contributor"]), 403, "forbidden")


def test_budget_resets_on_the_first_of_the_next_utc_month(
    api: Any, demo_keys: dict[str, Any], services: Any
) -> None:
    now = datetime.now(UTC)
    entry = api.get(BUDGET, key=demo_keys["acme"]["analyst"]).json()["budgets"][0]
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    assert entry["period"] == "month"
    assert datetime.fromisoformat(entry["resets_at"]) == datetime(year, month, 1, tzinfo=UTC)

    services.clock = lambda: datetime(2031, 12, 31, 23, 59, tzinfo=UTC)
    post(api, QUERIES, demo_keys["acme"]["analyst"], JOINT)
    entry = api.get(BUDGET, key=demo_keys["acme"]["analyst"]).json()["budgets"][0]
    assert entry["resets_at"] == "2032-01-01T00:00:00+00:00"
    assert entry["epsilon_spent"] == 0.8

    # A new month starts from a full budget; the old month's spend stays in the ledger.
    services.clock = lambda: datetime(2032, 1, 1, 0, 0, 1, tzinfo=UTC)
    entry = api.get(BUDGET, key=demo_keys["acme"]["analyst"]).json()["budgets"][0]
    assert entry["epsilon_spent"] == 0 and entry["epsilon_left"] == 8.0
    assert entry["resets_at"] == "2032-02-01T00:00:00+00:00"


COUNT_BY_REGION_ONLY = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["region"],
        "aggregates": [
            {"fn": "count", "as": "n"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        ],
    },
    "epsilon": 1.0,
}


def test_groups_under_the_minimum_size_are_suppressed_but_keep_their_key(
    api: Any, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    put_policy(lambda doc: doc["rules"].update(min_group_size=1_000_000))
    release = post(api, QUERIES, demo_keys["acme"]["analyst"], COUNT_BY_REGION_ONLY)
    assert release["rows"] == [
        {"region": region, "suppressed": True, "n": None, "avg_spend": None}
        for region in ("north", "south", "east", "west")
    ]
    # ε was spent all the same: suppression is decided on the noisy counts.
    assert release["epsilon_spent"] == 1.0


def test_a_rare_combination_is_suppressed(
    api: Any, demo_keys: dict[str, Any], demo_tables: Any
) -> None:
    loyalty = demo_tables.loyalty
    at_popup = loyalty.filter(pc.equal(loyalty["store_id"], "S040"))
    exact = {r: at_popup["region"].to_pylist().count(r) for r in REGIONS}
    assert sum(exact.values()) < 5  # the demo's pop-up store is tiny
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "where": [{"column": "store_id", "op": "eq", "value": "S040"}],
            "group_by": ["region"],
            "aggregates": [{"fn": "count", "as": "n"}],
        },
        "epsilon": 1.0,
    }
    analyst = demo_keys["acme"]["analyst"]
    (count,) = post(api, EXPLAIN, analyst, body)["statistics"]
    # A group is released only if its noisy count reaches min_group_size (25): for discrete
    # Laplace noise, P(X >= k) = a^k / (1 + a) with a = exp(-1 / scale). Union over the groups:
    alpha = math.exp(-1 / count["noise_scale"])
    bound = sum(alpha ** (25 - n) / (1 + alpha) for n in exact.values())
    assert bound < 1e-9
    release = post(api, QUERIES, analyst, body)
    assert release["rows"] == [{"region": r, "suppressed": True, "n": None} for r in REGIONS]


def test_a_stored_version_that_no_longer_fits_the_policy_is_refused_before_spending(
    api: Any,
    demo_keys: dict[str, Any],
    put_policy: Any,
    upload: Any,
    encode: Any,
    demo_tables: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        columns = doc["datasets"]["bigmart.loyalty"]["columns"]
        columns["income"] = {"use": "measure", "bounds": [0, 100], "aggregates": ["sum"]}
        columns["email"] = {"use": "dimension"}
        columns["channel"] = {"use": "dimension", "type": "int", "keys": [1, 2, 3]}

    put_policy(edit)
    analyst = demo_keys["acme"]["analyst"]
    plans = [
        {"from": "bigmart.loyalty", "aggregates": [{"fn": "sum", "column": "income"}]},
        {
            "from": "bigmart.loyalty",
            "where": [{"column": "email", "op": "ne", "value": "x"}],
            "aggregates": [{"fn": "count"}],
        },
        {"from": "bigmart.loyalty", "group_by": ["channel"], "aggregates": [{"fn": "count"}]},
    ]
    before = snapshot()
    for plan in plans:
        response = api.post(QUERIES, key=analyst, json={"plan": plan, "epsilon": 0.5})
        error = assert_error(response, 409, "conflict")
        assert "version 1" in error["message"]
    assert snapshot() == before

    # Once the owner uploads a version that fits, the same question is answered.
    loyalty = demo_tables.loyalty
    fitted = loyalty.append_column("income", pc.multiply(loyalty["nps_score"], 10)).set_column(
        loyalty.schema.get_field_index("channel"),
        "channel",
        pc.add(pc.index_in(loyalty["channel"], value_set=pa.array(["store", "online", "app"])), 1),
    )
    response = upload("bigmart", "loyalty", encode.parquet(fitted))
    assert response.status_code == 201, response.text
    for plan in plans:
        assert (
            api.post(QUERIES, key=analyst, json={"plan": plan, "epsilon": 0.5}).status_code == 200
        )
