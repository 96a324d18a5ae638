"""SQL through the HTTP API: answers like the equivalent JSON plan, replays, refusals that name the
construct and its position and spend nothing, and the policy applied to SQL as to plans."""

from __future__ import annotations

from typing import Any

import pytest

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
EXPLAIN = f"/v1/collaborations/{DEMO}/queries/explain"
REGIONS = ["north", "south", "east", "west"]
SEGMENTS = ["value", "mainstream", "premium", "luxury"]
JOIN = "FROM bigmart.loyalty AS l JOIN acme.survey AS s ON l.customer_key = s.customer_id"

BY_REGION_AND_SEGMENT = f"""
    SELECT l.region, s.segment, COUNT(*) AS customers, AVG(l.spend_90d) AS avg_spend
    {JOIN}
    GROUP BY l.region, s.segment
"""
BY_REGION_AND_SEGMENT_PLAN = {
    "from": "bigmart.loyalty",
    "join": ["acme.survey"],
    "group_by": ["bigmart.loyalty.region", "acme.survey.segment"],
    "aggregates": [
        {"fn": "count", "as": "customers"},
        {"fn": "mean", "column": "bigmart.loyalty.spend_90d", "as": "avg_spend"},
    ],
}


def ask(api: Any, key: str, body: dict[str, Any], path: str = QUERIES) -> dict[str, Any]:
    response = api.post(path, key=key, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def cells(release: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that were released (not suppressed)."""
    return [row for row in release["rows"] if not row.get("suppressed")]


def shape(release: dict[str, Any]) -> tuple[Any, ...]:
    """A release without its noise: the group columns, the groups, the released cells' fields."""
    groups = release["group_by"]
    keys = [tuple(row[g] for g in groups) for row in release["rows"]]
    fields = {
        tuple(
            sorted((name, tuple(sorted(cell))) for name, cell in row.items() if name not in groups)
        )
        for row in cells(release)
    }
    return groups, keys, fields


def test_a_sql_join_answers_like_the_json_plan(api: Any, demo_keys: dict[str, Any]) -> None:
    analyst = demo_keys["acme"]["analyst"]
    by_sql = ask(api, analyst, {"sql": BY_REGION_AND_SEGMENT, "epsilon": 0.5})
    assert by_sql["replay"] is False and by_sql["epsilon_spent"] == 0.5
    assert len(by_sql["rows"]) == 16
    keys = {(row["region"], row["segment"]) for row in by_sql["rows"]}
    assert keys == {(r, s) for r in REGIONS for s in SEGMENTS}
    for row in cells(by_sql):
        assert set(row["customers"]) == {"value", "ci95"}
        assert 0 <= row["avg_spend"]["ci95"][0] <= row["avg_spend"]["ci95"][1] <= 2000

    # The same question as a JSON plan compiles to the same plan: it is the same release.
    by_plan = ask(api, analyst, {"plan": BY_REGION_AND_SEGMENT_PLAN, "epsilon": 0.5})
    assert by_plan["replay"] is True
    assert by_plan["query_id"] == by_sql["query_id"]
    assert by_plan["rows"] == by_sql["rows"]

    # Asked afresh (another ε), the JSON plan's release has the SQL release's shape.
    fresh = ask(api, analyst, {"plan": BY_REGION_AND_SEGMENT_PLAN, "epsilon": 0.4})
    assert fresh["replay"] is False
    assert shape(fresh) == shape(by_sql)


def test_unqualified_sql_matches_the_unqualified_plan(api: Any, demo_keys: dict[str, Any]) -> None:
    analyst = demo_keys["acme"]["analyst"]
    sql = f"""SELECT region, segment, COUNT(*), AVG(spend_90d) {JOIN}
              WHERE channel IN ('store', 'app') GROUP BY region, segment"""
    plan = {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [{"column": "channel", "op": "in", "values": ["store", "app"]}],
        "group_by": ["region", "segment"],
        "aggregates": [{"fn": "count"}, {"fn": "mean", "column": "spend_90d"}],
    }
    by_sql = ask(api, analyst, {"sql": sql, "epsilon": 0.3})
    assert len(by_sql["rows"]) == 16
    assert {"count", "mean_spend_90d"} <= set(cells(by_sql)[0])
    assert ask(api, analyst, {"plan": plan, "epsilon": 0.3})["query_id"] == by_sql["query_id"]


def test_the_same_sql_twice_is_a_replay(api: Any, demo_keys: dict[str, Any], snapshot: Any) -> None:
    analyst = demo_keys["acme"]["analyst"]
    first = ask(api, analyst, {"sql": BY_REGION_AND_SEGMENT, "epsilon": 0.5})
    before = snapshot()
    again = ask(api, analyst, {"sql": BY_REGION_AND_SEGMENT, "epsilon": 0.5})
    assert again["replay"] is True and again["epsilon_spent"] == 0
    assert again["query_id"] == first["query_id"]
    assert again["rows"] == first["rows"]
    assert snapshot() == before
    # Spelling does not matter either: case, spacing, comments, AS, a trailing semicolon.
    respelled = """select l.region , s.segment , count(*) customers,  -- respelled
                    avg(l.spend_90d) avg_spend from "bigmart.loyalty" l
                    inner join acme.survey s on (s.customer_id = l.customer_key)
                    group by 1, 2;"""
    replay = ask(api, analyst, {"sql": respelled, "epsilon": 0.5})
    assert replay["replay"] is True and replay["query_id"] == first["query_id"]
    assert snapshot() == before


REFUSED = {
    "COUNT(DISTINCT)": (
        "SELECT COUNT(DISTINCT customer_key) FROM bigmart.loyalty",
        "unsupported_query",
        ("COUNT(DISTINCT ...)", "line 1, column 8", "max_rows_per_unit"),
    ),
    "ORDER BY": (
        "SELECT region, COUNT(*) FROM bigmart.loyalty\nGROUP BY region\nORDER BY 2 DESC",
        "unsupported_query",
        ("ORDER BY", "line 3, column 1"),
    ),
    "LIMIT": (
        "SELECT region, COUNT(*) FROM bigmart.loyalty GROUP BY region LIMIT 1",
        "unsupported_query",
        ("LIMIT", "line 1, column 62"),
    ),
    "LEFT JOIN": (
        "SELECT COUNT(*) FROM bigmart.loyalty l\n  LEFT JOIN acme.survey s "
        "ON l.customer_key = s.customer_id",
        "unsupported_query",
        ("LEFT JOIN", "line 2, column 3"),
    ),
    "a subquery": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE region IN (SELECT region FROM acme.survey)",
        "unsupported_query",
        ("subquery", "line 1, column 44"),
    ),
    "a window function": (
        "SELECT SUM(spend_90d) OVER () FROM bigmart.loyalty",
        "unsupported_query",
        ("window function", "line 1, column 8"),
    ),
    "HAVING": (
        "SELECT region, COUNT(*) FROM bigmart.loyalty GROUP BY region HAVING COUNT(*) > 25",
        "unsupported_query",
        ("HAVING", "line 1, column 62"),
    ),
    "a comparison": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE visits_90d > 3",
        "unsupported_query",
        ("the comparison '>'", "line 1, column 44"),
    ),
    "arithmetic": (
        "SELECT SUM(spend_90d) / COUNT(*) FROM bigmart.loyalty",
        "unsupported_query",
        ("arithmetic ('/')", "line 1, column 8"),
    ),
    "SELECT *": ("SELECT * FROM bigmart.loyalty", "unsupported_query", ("SELECT *", "column 8")),
    "two statements": (
        "SELECT COUNT(*) FROM bigmart.loyalty; DROP TABLE ledger",
        "unsupported_query",
        ("second statement", "line 1, column 39"),
    ),
    "DROP": ("DROP TABLE ledger", "unsupported_query", ("DROP statement", "line 1, column 1")),
    "COPY": (
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "unsupported_query",
        ("COPY statement", "line 1, column 1"),
    ),
    "ATTACH": (
        "ATTACH '/tmp/x.db' AS x",
        "unsupported_query",
        ("ATTACH statement", "line 1, column 1"),
    ),
    "PRAGMA": ("PRAGMA database_list", "unsupported_query", ("PRAGMA statement",)),
    "a syntax error": (
        "SELECT COUNT(*)\nFROM WHERE region = 'north'",
        "invalid_request",
        ("cannot parse", "line 2, column 6"),
    ),
    "an unclosed string": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE region = 'north",
        "invalid_request",
        ("cannot read", "line 1, column 53"),
    ),
    "an unknown alias": (
        "SELECT COUNT(*) FROM bigmart.loyalty l WHERE x.region = 'north'",
        "invalid_request",
        ("unknown table or alias", "line 1, column 46"),
    ),
}


@pytest.mark.parametrize("sql, code, fragments", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("path", [QUERIES, EXPLAIN], ids=["query", "explain"])
def test_sql_refusals_name_the_construct_and_spend_nothing(
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
    path: str,
    sql: str,
    code: str,
    fragments: tuple[str, ...],
) -> None:
    before = snapshot()
    response = api.post(path, key=demo_keys["acme"]["analyst"], json={"sql": sql, "epsilon": 0.5})
    error = assert_error(response, 400, code)
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    assert snapshot() == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE email = 'someone@example.invalid'",
        "SELECT email, COUNT(*) FROM bigmart.loyalty GROUP BY email",
        "SELECT CASE WHEN l.email = 'x' THEN 'x' ELSE 'y' END AS b, COUNT(*) "
        "FROM bigmart.loyalty l GROUP BY b",
    ],
    ids=["filter", "group", "bucket"],
)
def test_sql_over_a_hidden_column_is_a_policy_violation(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any, sql: str
) -> None:
    before = snapshot()
    response = api.post(
        QUERIES, key=demo_keys["acme"]["analyst"], json={"sql": sql, "epsilon": 0.5}
    )
    error = assert_error(response, 403, "policy_violation")
    assert "datasets.bigmart.loyalty.columns.email.use" in error["message"]
    assert "someone@example.invalid" not in error["message"]
    assert snapshot() == before


def test_a_join_on_columns_other_than_the_customer_keys_is_refused(
    api: Any, demo_keys: dict[str, Any], snapshot: Any
) -> None:
    """The plan always joins on customer keys, so SQL that says otherwise must not run."""
    before = snapshot()
    sql = "SELECT COUNT(*) FROM bigmart.loyalty l JOIN acme.survey s ON l.region = s.segment"
    response = api.post(
        QUERIES, key=demo_keys["acme"]["analyst"], json={"sql": sql, "epsilon": 0.5}
    )
    assert response.status_code in (400, 403), response.text
    assert response.json()["error"]["code"] in (
        "invalid_request",
        "unsupported_query",
        "policy_violation",
    )
    assert snapshot() == before


# --- constructs that the checker, engine and noise step support for plans and SQL alike --------


def test_a_partner_store_against_the_rest_of_the_network(
    api: Any, demo_keys: dict[str, Any]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    sql = """SELECT CASE WHEN store_id = 'S001' THEN 'S001' ELSE 'rest of network' END AS store,
                    COUNT(*) AS customers, AVG(spend_90d) AS avg_spend
             FROM bigmart.loyalty GROUP BY store"""
    release = ask(api, analyst, {"sql": sql, "epsilon": 0.5})
    assert release["group_by"] == ["store"]
    assert [row["store"] for row in release["rows"]] == ["S001", "rest of network"]
    rest = release["rows"][1]
    assert not rest.get("suppressed")
    assert rest["customers"]["value"] > 1000
    plan = {
        "from": "bigmart.loyalty",
        "group_by": [
            {
                "bucket": [
                    {"when": {"column": "store_id", "op": "eq", "value": "S001"}, "then": "S001"}
                ],
                "else": "rest of network",
                "as": "store",
            }
        ],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        ],
    }
    assert ask(api, analyst, {"plan": plan, "epsilon": 0.5})["query_id"] == release["query_id"]


def test_named_buckets_with_an_other_bucket(api: Any, demo_keys: dict[str, Any]) -> None:
    sql = f"""SELECT CASE WHEN l.region IN ('north', 'east') THEN 'north-east'
                          WHEN l.region = 'south' THEN 'south'
                          ELSE 'other' END AS area,
                     s.segment, COUNT(*) AS customers
              {JOIN} GROUP BY area, s.segment"""
    release = ask(api, demo_keys["acme"]["analyst"], {"sql": sql, "epsilon": 0.5})
    assert release["group_by"] == ["area", "segment"]
    assert {(row["area"], row["segment"]) for row in release["rows"]} == {
        (a, s) for a in ("north-east", "south", "other") for s in SEGMENTS
    }


def test_between_or_and_not(api: Any, demo_keys: dict[str, Any]) -> None:
    sql = """SELECT region, COUNT(*) AS customers FROM bigmart.loyalty
             WHERE (channel = 'app' OR NOT region IN ('north', 'south'))
               AND store_id BETWEEN 'S001' AND 'S039' AND NOT channel = 'online'
             GROUP BY region"""
    release = ask(api, demo_keys["acme"]["analyst"], {"sql": sql, "epsilon": 0.5})
    assert [row["region"] for row in release["rows"]] == REGIONS
    for row in cells(release):
        assert row["customers"]["ci95"][0] <= row["customers"]["value"]


def test_median_by_region(api: Any, demo_keys: dict[str, Any]) -> None:
    sql = "SELECT region, MEDIAN(spend_90d) FROM bigmart.loyalty GROUP BY region"
    release = ask(api, demo_keys["acme"]["analyst"], {"sql": sql, "epsilon": 0.5})
    assert [row["region"] for row in release["rows"]] == REGIONS
    for row in cells(release):
        assert 0 <= row["median_spend_90d"]["value"] <= 2000


def test_percentile_cont_within_group_and_quantile(api: Any, demo_keys: dict[str, Any]) -> None:
    sql = f"""SELECT s.segment,
                     PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY l.nps_score) AS nps_p90,
                     QUANTILE_CONT(l.spend_90d, 0.25) AS spend_p25
              {JOIN} GROUP BY s.segment"""
    release = ask(api, demo_keys["acme"]["analyst"], {"sql": sql, "epsilon": 0.5})
    assert [row["segment"] for row in release["rows"]] == SEGMENTS
    for row in cells(release):
        assert 0 <= row["nps_p90"]["value"] <= 10
        assert 0 <= row["spend_p25"]["value"] <= 2000
