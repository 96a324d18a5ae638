"""SQL front end: each construct compiles to the plan the JSON parser builds for the same question;
each refusal names the construct and where it is in the query."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.domain.errors import InvalidRequest, UnsupportedQuery
from gateway.domain.plan import parse_plan, parse_query_request
from gateway.domain.sql import parse_sql, parse_sql_query

JOIN = "FROM bigmart.loyalty AS l JOIN acme.survey AS s ON l.customer_key = s.customer_id"


def plan(**fields: Any) -> dict[str, Any]:
    """A JSON plan over bigmart.loyalty counting rows, with ``fields`` overriding."""
    return {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}], **fields}


def where(*predicates: Any) -> dict[str, Any]:
    return plan(where=list(predicates))


def f(column: str, op: str, *values: Any) -> dict[str, Any]:
    return {"column": column, "op": op, "values": list(values)}


# ---------------------------------------------------------------------------------------------
# SQL == JSON

EQUIVALENT: dict[str, tuple[str, dict[str, Any]]] = {
    "design example": (
        f"""SELECT region, COUNT(*) AS customers, AVG(spend_90d) AS avg_spend
            {JOIN}
            WHERE region IN ('north', 'south')
            GROUP BY region""",
        {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "where": [f("region", "in", "north", "south")],
            "group_by": ["region"],
            "aggregates": [
                {"fn": "count", "as": "customers"},
                {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
            ],
        },
    ),
    "default output names": (
        """SELECT COUNT(*), SUM(visits_90d), AVG(spend_90d), MEDIAN(nps_score),
                  QUANTILE(spend_90d, 0.9), HISTOGRAM(visits_90d)
           FROM bigmart.loyalty""",
        plan(
            aggregates=[
                {"fn": "count"},
                {"fn": "sum", "column": "visits_90d"},
                {"fn": "mean", "column": "spend_90d"},
                {"fn": "median", "column": "nps_score"},
                {"fn": "quantile", "column": "spend_90d", "q": 0.9},
                {"fn": "histogram", "column": "visits_90d"},
            ]
        ),
    ),
    "median and quantiles in every spelling": (
        """SELECT MEDIAN(spend_90d) AS med, QUANTILE(spend_90d, 0.1) AS p10,
                  QUANTILE_CONT(spend_90d, 0.25) AS p25,
                  PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY spend_90d) AS p75,
                  percentile_cont(0.5) within group (order by l.nps_score asc) AS nps_median
           FROM bigmart.loyalty l""",
        plan(
            aggregates=[
                {"fn": "median", "column": "spend_90d", "as": "med"},
                {"fn": "quantile", "column": "spend_90d", "q": 0.1, "as": "p10"},
                {"fn": "quantile", "column": "spend_90d", "q": 0.25, "as": "p25"},
                {"fn": "quantile", "column": "spend_90d", "q": 0.75, "as": "p75"},
                {
                    "fn": "quantile",
                    "column": "bigmart.loyalty.nps_score",
                    "q": 0.5,
                    "as": "nps_median",
                },
            ]
        ),
    ),
    "median is quantile 0.5": (
        "SELECT MEDIAN(spend_90d) AS m FROM bigmart.loyalty",
        plan(aggregates=[{"fn": "quantile", "column": "spend_90d", "q": 0.5, "as": "m"}]),
    ),
    "aliases qualify columns": (
        f"""SELECT l.region, s.segment, COUNT(*) AS n, SUM(s.tenure_months) AS tenure
            {JOIN} GROUP BY l.region, s.segment""",
        {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "group_by": ["bigmart.loyalty.region", "acme.survey.segment"],
            "aggregates": [
                {"fn": "count", "as": "n"},
                {"fn": "sum", "column": "acme.survey.tenure_months", "as": "tenure"},
            ],
        },
    ),
    "aliases without AS, INNER JOIN, reversed and parenthesised ON": (
        """SELECT COUNT(*) FROM bigmart.loyalty l
           INNER JOIN acme.survey s ON (s.customer_id = l.customer_key)
           WHERE s.segment = 'premium'""",
        {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "where": [f("acme.survey.segment", "eq", "premium")],
            "aggregates": [{"fn": "count"}],
        },
    ),
    "columns qualified by the dataset name": (
        """SELECT bigmart.loyalty.region, COUNT(*) FROM bigmart.loyalty
           WHERE "bigmart.loyalty".channel = 'app' AND loyalty.store_id <> 'S040'
           GROUP BY bigmart.loyalty.region""",
        plan(
            where=[
                f("bigmart.loyalty.channel", "eq", "app"),
                f("bigmart.loyalty.store_id", "ne", "S040"),
            ],
            group_by=["bigmart.loyalty.region"],
        ),
    ),
    "one quoted dataset name": (
        'SELECT COUNT(*) AS n FROM "bigmart.loyalty"',
        plan(aggregates=[{"fn": "count", "as": "n"}]),
    ),
    "an owner that needs quotes": (
        """SELECT p.aisle, COUNT(*) FROM "probe-retail".insights AS p
           JOIN "acme.survey" a ON p.customer_key = a.customer_id GROUP BY p.aisle""",
        {
            "from": "probe-retail.insights",
            "join": ["acme.survey"],
            "group_by": ["probe-retail.insights.aisle"],
            "aggregates": [{"fn": "count"}],
        },
    ),
    "quoted names keep their case and spelling": (
        'SELECT "Region", COUNT(*) AS "avg-spend" FROM bigmart.loyalty GROUP BY "Region"',
        plan(group_by=["Region"], aggregates=[{"fn": "count", "as": "avg-spend"}]),
    ),
    "three datasets": (
        """SELECT COUNT(*) FROM bigmart.loyalty l
           JOIN acme.survey s ON l.customer_key = s.customer_id
           JOIN "probe-retail".insights p ON p.customer_key = s.customer_id""",
        plan(join=["acme.survey", "probe-retail.insights"]),
    ),
    "equality, inequality, literal on the left": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE region = 'north' AND channel <> 'app' "
        "AND store_id != 'S001' AND 'east' = region AND 3 <> visits",
        where(
            f("region", "eq", "north"),
            f("channel", "ne", "app"),
            f("store_id", "ne", "S001"),
            f("region", "eq", "east"),
            f("visits", "ne", 3),
        ),
    ),
    "IN, NOT IN, integers and negative integers": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE region IN ('north') "
        "AND region NOT IN ('south', 'east') AND NOT (store_id IN ('S001')) "
        "AND score IN (-1, 0, 7)",
        where(
            f("region", "in", "north"),
            f("region", "not_in", "south", "east"),
            f("store_id", "not_in", "S001"),
            f("score", "in", -1, 0, 7),
        ),
    ),
    "BETWEEN and NOT BETWEEN": (
        "SELECT COUNT(*) FROM bigmart.loyalty WHERE store_id BETWEEN 'S001' AND 'S010' "
        "AND NOT age BETWEEN 18 AND 25 AND tier NOT BETWEEN -2 AND 2",
        where(
            f("store_id", "between", "S001", "S010"),
            {"not": f("age", "between", 18, 25)},
            {"not": f("tier", "between", -2, 2)},
        ),
    ),
    "nested AND, OR, NOT": (
        """SELECT COUNT(*) FROM bigmart.loyalty
           WHERE (region = 'north' OR (channel = 'app' AND NOT store_id IN ('S001', 'S002')))
             AND NOT (region = 'west' OR NOT channel = 'store')""",
        where(
            {
                "or": [
                    f("region", "eq", "north"),
                    {"and": [f("channel", "eq", "app"), f("store_id", "not_in", "S001", "S002")]},
                ]
            },
            {"not": {"or": [f("region", "eq", "west"), {"not": f("channel", "eq", "store")}]}},
        ),
    ),
    "chains of OR and parenthesised ANDs are flattened": (
        """SELECT COUNT(*) FROM bigmart.loyalty
           WHERE (region = 'north' AND (channel = 'app'))
             AND (a = 1 OR b = 2 OR (c = 3 OR d = 4))""",
        where(
            f("region", "eq", "north"),
            f("channel", "eq", "app"),
            {"or": [f("a", "eq", 1), f("b", "eq", 2), f("c", "eq", 3), f("d", "eq", 4)]},
        ),
    ),
    "one partner store against the rest of the network": (
        """SELECT CASE WHEN store_id = 'S001' THEN 'S001' ELSE 'rest of network' END AS store,
                  AVG(spend_90d) AS avg_spend
           FROM bigmart.loyalty GROUP BY store""",
        plan(
            group_by=[
                {
                    "bucket": [{"when": f("store_id", "eq", "S001"), "then": "S001"}],
                    "else": "rest of network",
                    "as": "store",
                }
            ],
            aggregates=[{"fn": "mean", "column": "spend_90d", "as": "avg_spend"}],
        ),
    ),
    "named buckets and an 'other' bucket, grouped by position": (
        """SELECT CASE WHEN region IN ('north', 'east') THEN 'north-east'
                       WHEN region = 'south' AND channel <> 'app' THEN 'south (in store)'
                       ELSE 'other' END AS area,
                  segment, COUNT(*)
           FROM bigmart.loyalty JOIN acme.survey ON loyalty.customer_key = survey.customer_id
           GROUP BY 2, 1""",
        {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "group_by": [
                "segment",
                {
                    "bucket": [
                        {"when": f("region", "in", "north", "east"), "then": "north-east"},
                        {
                            "when": {
                                "and": [f("region", "eq", "south"), f("channel", "ne", "app")]
                            },
                            "then": "south (in store)",
                        },
                    ],
                    "else": "other",
                    "as": "area",
                },
            ],
            "aggregates": [{"fn": "count"}],
        },
    ),
    "a bucket without ELSE, ELSE NULL, simple CASE, grouped by expression": (
        """SELECT CASE WHEN visits BETWEEN 0 AND 4 THEN 'light' END AS light,
                  CASE channel WHEN 'app' THEN 'digital' WHEN 'online' THEN 'digital'
                       ELSE NULL END AS digital, COUNT(*)
           FROM bigmart.loyalty
           GROUP BY CASE WHEN visits BETWEEN 0 AND 4 THEN 'light' END, digital""",
        plan(
            group_by=[
                {
                    "bucket": [{"when": f("visits", "between", 0, 4), "then": "light"}],
                    "as": "light",
                },
                {
                    "bucket": [
                        {"when": f("channel", "eq", "app"), "then": "digital"},
                        {"when": f("channel", "eq", "online"), "then": "digital"},
                    ],
                    "else": None,
                    "as": "digital",
                },
            ]
        ),
    ),
    "GROUP BY order wins, duplicates collapse, qualification merges": (
        """SELECT l.region, channel, COUNT(*) FROM bigmart.loyalty l
           GROUP BY channel, region, 1, l.channel""",
        plan(group_by=["bigmart.loyalty.channel", "bigmart.loyalty.region"]),
    ),
    "FROM first, lower case keywords, comments, a trailing semicolon": (
        """-- the analyst's note
           from bigmart.loyalty /* block */ select region, count(*) as n group by region;""",
        plan(group_by=["region"], aggregates=[{"fn": "count", "as": "n"}]),
    ),
}


@pytest.mark.parametrize("sql, json_plan", EQUIVALENT.values(), ids=EQUIVALENT.keys())
def test_sql_compiles_to_the_json_plan(sql: str, json_plan: dict[str, Any]) -> None:
    assert parse_sql(sql) == parse_plan(json_plan)


def test_the_same_question_gives_the_same_fingerprint() -> None:
    sql = f"SELECT region, COUNT(*) AS n {JOIN} WHERE channel IN ('app') GROUP BY region"
    by_sql = parse_query_request({"sql": sql, "epsilon": 0.5})
    by_plan = parse_query_request(
        {
            "plan": {
                "from": "bigmart.loyalty",
                "join": ["acme.survey"],
                "where": [f("channel", "in", "app")],
                "group_by": ["region"],
                "aggregates": [{"fn": "count", "as": "n"}],
            },
            "epsilon": 0.5,
        }
    )
    assert by_sql.plan == by_plan.plan
    assert by_sql.sql == sql
    assert by_sql.fingerprint() == by_plan.fingerprint()


def test_join_columns_are_returned_for_the_checker() -> None:
    _, keys = parse_sql_query(
        """SELECT COUNT(*) FROM bigmart.loyalty l
           JOIN acme.survey s ON s.customer_id = l.customer_key
           JOIN "probe-retail".insights p ON l.customer_key = p.ck"""
    )
    assert keys == [
        ("bigmart.loyalty", "customer_key"),
        ("acme.survey", "customer_id"),
        ("bigmart.loyalty", "customer_key"),
        ("probe-retail.insights", "ck"),
    ]
    assert parse_sql_query("SELECT COUNT(*) FROM bigmart.loyalty")[1] == []


def test_long_conditions_are_read_quickly() -> None:
    values = ", ".join(f"'S{i:05d}'" for i in range(5000))
    ors = " OR ".join(f"store_id = 'S{i:05d}'" for i in range(2000))
    started = time.perf_counter()
    compiled = parse_sql(
        f"SELECT COUNT(*) FROM bigmart.loyalty WHERE store_id IN ({values}) AND ({ors})"
    )
    assert time.perf_counter() - started < 5
    assert len(compiled.where[0].values) == 5000  # type: ignore[union-attr]
    assert len(compiled.where[1].items) == 2000  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Refusals: (SQL, error class, fragments the message must hold, and the text the reported line and
# column must point at: the first occurrence of that anchor in the SQL)

U, V = UnsupportedQuery, InvalidRequest  # refused as unsupported, or as invalid
C = "SELECT COUNT(*) FROM bigmart.loyalty"
J = f"{C} l JOIN acme.survey s ON "
G = "SELECT region, COUNT(*) FROM bigmart.loyalty GROUP BY "
Refusal = tuple[str, type[InvalidRequest], tuple[str, ...], str | None]
REFUSED: dict[str, Refusal] = {
    # aggregates
    "COUNT(DISTINCT)": (
        "SELECT COUNT(DISTINCT customer_key) FROM bigmart.loyalty",
        U,
        ("COUNT(DISTINCT ...)", "max_rows_per_unit", "COUNT(*) over one-row-per-customer"),
        "COUNT(",
    ),
    "COUNT(column)": (
        "SELECT COUNT(spend_90d) FROM bigmart.loyalty",
        U,
        ("COUNT of a column or value", "write COUNT(*)"),
        "COUNT(",
    ),
    "SUM(DISTINCT)": (
        "SELECT SUM(DISTINCT spend_90d) FROM bigmart.loyalty",
        U,
        ("SUM(DISTINCT ...)",),
        "SUM",
    ),
    "arithmetic inside an aggregate": (
        "SELECT AVG(spend_90d * 2) FROM bigmart.loyalty",
        U,
        ("arithmetic ('*')", "one column"),
        "spend_90d",
    ),
    "other aggregates": (
        "SELECT region,\n  MAX(spend_90d) FROM bigmart.loyalty GROUP BY 1",
        U,
        ("the aggregate MAX()", "MEDIAN"),
        "MAX",
    ),
    "discrete quantiles": (
        "SELECT PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY spend_90d) FROM bigmart.loyalty",
        U,
        ("PERCENTILE_DISC", "discrete"),
        "PERCENTILE_DISC",
    ),
    "q outside (0, 1)": (
        "SELECT QUANTILE(spend_90d, 1.5) FROM bigmart.loyalty",
        V,
        ("strictly between 0 and 1",),
        "1.5",
    ),
    "several q": (
        "SELECT QUANTILE_CONT(spend_90d, [0.1, 0.9]) FROM bigmart.loyalty",
        U,
        ("several quantiles",),
        "[",
    ),
    "WITHIN GROUP DESC": (
        "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY spend_90d DESC) FROM bigmart.loyalty",
        U,
        ("WITHIN GROUP",),
        "PERCENTILE_CONT",
    ),
    "PERCENTILE_CONT without WITHIN GROUP": (
        "SELECT PERCENTILE_CONT(0.5) FROM bigmart.loyalty",
        U,
        ("WITHIN GROUP",),
        "PERCENTILE_CONT",
    ),
    "FILTER": (
        "SELECT COUNT(*) FILTER (WHERE region = 'north') FROM bigmart.loyalty",
        U,
        ("FILTER (WHERE ...)", "put the condition in WHERE"),
        "COUNT",
    ),
    "window function": (
        "SELECT SUM(spend_90d) OVER (PARTITION BY region) FROM bigmart.loyalty",
        U,
        ("window function (OVER)",),
        "SUM",
    ),
    "no aggregate": (
        "SELECT region FROM bigmart.loyalty GROUP BY region",
        U,
        ("without an aggregate", "COUNT(*)"),
        "region",
    ),
    # SELECT list
    "SELECT *": ("SELECT * FROM bigmart.loyalty", U, ("SELECT *",), "*"),
    "SELECT t.*": ("SELECT l.*, COUNT(*) FROM bigmart.loyalty l", U, ("* (all columns)",), "l.*"),
    "a literal": ("SELECT 1, COUNT(*) FROM bigmart.loyalty", U, ("a literal in SELECT",), "1"),
    "arithmetic": (
        "SELECT COUNT(*) + 1 AS n FROM bigmart.loyalty",
        U,
        ("arithmetic ('+') in SELECT",),
        "COUNT",
    ),
    "a ratio of aggregates": (
        "SELECT SUM(spend_90d) / COUNT(*) FROM bigmart.loyalty",
        U,
        ("arithmetic ('/')",),
        "SUM",
    ),
    "a function": (
        "SELECT LOWER(region), COUNT(*) FROM bigmart.loyalty GROUP BY 1",
        U,
        ("the function LOWER()",),
        "LOWER",
    ),
    "CAST": (
        "SELECT CAST(region AS TEXT), COUNT(*) FROM bigmart.loyalty GROUP BY 1",
        U,
        ("CAST in SELECT",),
        "CAST",
    ),
    "a scalar subquery": (
        "SELECT (SELECT 1), COUNT(*) FROM bigmart.loyalty",
        U,
        ("subquery",),
        "(SELECT",
    ),
    "a bucket without a name": (
        "SELECT CASE WHEN region = 'north' THEN 'n' END, COUNT(*) FROM bigmart.loyalty GROUP BY 1",
        U,
        ("CASE bucket without a name", "END AS <name>"),
        "CASE",
    ),
    "a bucket label that is a number": (
        "SELECT CASE WHEN region = 'north' THEN 1 ELSE 0 END AS b, COUNT(*) "
        "FROM bigmart.loyalty GROUP BY b",
        U,
        ("label that is not a string",),
        "1",
    ),
    "renaming a dimension": (
        "SELECT region AS r, COUNT(*) FROM bigmart.loyalty GROUP BY 1",
        U,
        ("renaming a dimension",),
        "region",
    ),
    "two outputs with one name": (
        "SELECT AVG(spend_90d),\n AVG(spend_90d) FROM bigmart.loyalty",
        V,
        ("an output name appears twice",),
        "\n AVG",
    ),
    "a reserved name": (
        "SELECT COUNT(*) AS suppressed FROM bigmart.loyalty",
        V,
        ("reserved",),
        "COUNT",
    ),
    "an output name with a space": (
        'SELECT COUNT(*) AS "n n" FROM bigmart.loyalty',
        V,
        ("output name",),
        '"n n"',
    ),
    # FROM and JOIN
    "no FROM": ("SELECT COUNT(*)", V, ("needs FROM",), None),
    "a dataset without owner": ("SELECT COUNT(*) FROM loyalty", V, ("owner.name",), "loyalty"),
    "a catalog": ("SELECT COUNT(*) FROM x.bigmart.loyalty", V, ("owner.name",), "x.bigmart"),
    "a subquery in FROM": (
        "SELECT COUNT(*) FROM (SELECT * FROM bigmart.loyalty) t",
        U,
        ("subquery in FROM",),
        "(SELECT",
    ),
    "a table function": (
        "SELECT COUNT(*) FROM read_csv('/etc/passwd')",
        U,
        ("FROM item",),
        "read_csv",
    ),
    "a self-join": (
        "SELECT COUNT(*) FROM bigmart.loyalty a JOIN bigmart.loyalty b "
        "ON a.customer_key = b.customer_key",
        V,
        ("a dataset appears twice", "only once"),
        "bigmart.loyalty b",
    ),
    "LEFT JOIN": (
        f"{C} l\nLEFT JOIN acme.survey s ON l.customer_key = s.customer_id",
        U,
        ("LEFT JOIN", "only [INNER] JOIN"),
        "LEFT",
    ),
    "RIGHT JOIN": (
        f"{C} l RIGHT JOIN acme.survey s ON l.customer_key = s.customer_id",
        U,
        ("RIGHT JOIN",),
        "RIGHT",
    ),
    "FULL OUTER JOIN": (
        f"{C} l FULL OUTER JOIN acme.survey s ON l.customer_key = s.customer_id",
        U,
        ("FULL OUTER JOIN",),
        "FULL",
    ),
    "CROSS JOIN": (f"{C} CROSS JOIN acme.survey", U, ("CROSS JOIN",), "CROSS"),
    "NATURAL JOIN": (f"{C} NATURAL JOIN acme.survey", U, ("NATURAL JOIN",), "NATURAL"),
    "a comma join": (f"{C}, acme.survey", U, ("without ON",), ","),
    "USING": (f"{C} JOIN acme.survey USING (customer_key)", U, ("USING",), "JOIN"),
    "two join conditions": (
        f"{J}l.customer_key = s.customer_id AND l.region = s.region",
        U,
        ("more than one condition",),
        "l.customer_key =",
    ),
    "a join on a comparison": (
        f"{J}l.customer_key > s.customer_id",
        U,
        ("this join condition",),
        "l.customer_key >",
    ),
    "a join on a literal": (
        f"{J}l.customer_key = 'x'",
        U,
        ("this join condition",),
        "l.customer_key =",
    ),
    "an unqualified join column": (
        f"{J}customer_key = s.customer_id",
        V,
        ("needs its table",),
        "customer_key =",
    ),
    "a join within one table": (
        f"{J}l.customer_key = l.customer_key",
        V,
        ("must compare a column of the joined table",),
        "l.customer_key =",
    ),
    "an unknown alias": (
        f"{C} l WHERE x.region = 'north'",
        V,
        ("unknown table or alias",),
        "x.region",
    ),
    "a bare name hidden by an alias": (
        f"{C} l WHERE loyalty.region = 'north'",
        V,
        ("unknown table or alias",),
        "loyalty.region",
    ),
    "an ambiguous qualifier": (
        "SELECT COUNT(*) FROM a.t JOIN b.t ON a.t.k = b.t.k WHERE t.region = 'x'",
        V,
        ("the table qualifier names more than one table",),
        "t.region",
    ),
    # WHERE
    "less than": (f"{C}\nWHERE  visits_90d < 3", U, ("the comparison '<'",), "visits_90d"),
    "greater or equal": (f"{C} WHERE region >= 'n'", U, ("the comparison '>='",), "region"),
    "LIKE": (f"{C} WHERE region LIKE 'n%'", U, ("LIKE",), "region"),
    "IS NULL": (f"{C} WHERE region IS NULL", U, ("IS [NOT] NULL is not supported",), "region"),
    "IS NOT NULL": (
        f"{C} WHERE region IS NOT NULL",
        U,
        ("IS [NOT] NULL is not supported",),
        "region",
    ),
    "= NULL": (f"{C} WHERE region = NULL", U, ("NULL is not supported",), "NULL"),
    "a decimal": (
        f"{C} WHERE visits = 1.5",
        U,
        ("a number that is not whole", "whole numbers"),
        "1.5",
    ),
    "a boolean": (f"{C} WHERE flag = TRUE", U, ("the boolean TRUE",), "TRUE"),
    "a parameter": (f"{C} WHERE region = ?", U, ("a query parameter",), "?"),
    "two columns": (
        f'{C} WHERE region = "north"',
        U,
        ("comparison of two columns", "single quotes"),
        "region",
    ),
    "no column": (f"{C} WHERE 1 = 1", U, ("without a column",), "1 = 1"),
    "a function of a column": (
        f"{C} WHERE LOWER(region) = 'north'",
        U,
        ("the function LOWER()",),
        "LOWER",
    ),
    "IN a subquery": (
        f"{C} WHERE region IN (SELECT region FROM bigmart.loyalty)",
        U,
        ("subquery",),
        "region IN",
    ),
    "EXISTS": (f"{C} WHERE EXISTS (SELECT 1)", U, ("subquery",), "EXISTS"),
    "a column as a condition": (f"{C} WHERE flag", U, ("a column on its own",), "flag"),
    "BETWEEN of two types": (
        f"{C} WHERE visits BETWEEN 1 AND 'z'",
        V,
        ("BETWEEN bounds must be of one type",),
        "visits",
    ),
    "too deep": (
        f"{C} WHERE " + "NOT (" * 18 + "region = 'n'" + ")" * 18,
        V,
        ("nested more than 16 levels",),
        None,
    ),
    "an empty IN list": (f"{C} WHERE region IN ()", V, ("IN lists 1 to 10,000 values",), "region"),
    "a huge integer": (
        f"{C} WHERE visits = 99999999999999999999",
        V,
        ("64 bits",),
        "9999",
    ),
    # clauses
    "HAVING": (f"{C} HAVING COUNT(*) > 10", U, ("HAVING", "WHERE"), "HAVING"),
    "ORDER BY": (f"{G}region\n ORDER BY 2", U, ("ORDER BY",), "ORDER"),
    "LIMIT": (f"{C}\nLIMIT 10", U, ("LIMIT",), "LIMIT"),
    "OFFSET": (f"{C} OFFSET 10", U, ("OFFSET",), "OFFSET"),
    "DISTINCT": (
        "SELECT DISTINCT region, COUNT(*) FROM bigmart.loyalty GROUP BY region",
        U,
        ("SELECT DISTINCT",),
        "DISTINCT",
    ),
    "UNION": (f"{C}\nUNION ALL {C}", U, ("UNION",), "UNION"),
    "WITH": (f"WITH x AS (SELECT 1) {C}", U, ("WITH",), "WITH"),
    "QUALIFY": (f"{C} QUALIFY 1 = 1", U, ("QUALIFY",), "QUALIFY"),
    "the first clause in the text is named": (
        f"{C} ORDER BY 1 LIMIT 2",
        U,
        ("ORDER BY",),
        "ORDER",
    ),
    # GROUP BY
    "GROUP BY ALL": (f"{G}ALL", U, ("GROUP BY ALL",), "GROUP"),
    "ROLLUP": (f"{G}ROLLUP (region)", U, ("ROLLUP",), "ROLLUP"),
    "grouped but not selected": (
        "SELECT COUNT(*) FROM bigmart.loyalty GROUP BY region",
        U,
        ("not selected", "select it"),
        "region",
    ),
    "selected but not grouped": (
        "SELECT region, channel, COUNT(*) FROM bigmart.loyalty GROUP BY region",
        V,
        ("a selected column is not grouped",),
        "channel",
    ),
    "GROUP BY an aggregate position": (f"{G}1, 2", V, ("GROUP BY 2 refers to an aggregate",), "2"),
    "GROUP BY an aggregate name": (
        "SELECT region, COUNT(*) AS n FROM bigmart.loyalty GROUP BY region, n",
        V,
        ("GROUP BY names an aggregate's output",),
        "n\0",
    ),
    "GROUP BY out of range": (f"{G}3", V, ("has 2 items",), "3"),
    "GROUP BY arithmetic": (
        f"{G}region || 'x'",
        U,
        ("arithmetic ('||') in GROUP BY",),
        "region ||",
    ),
    "GROUP BY an unselected CASE": (
        "SELECT COUNT(*) FROM bigmart.loyalty GROUP BY CASE WHEN region = 'n' THEN 'n' END",
        U,
        ("CASE in GROUP BY",),
        "CASE",
    ),
    # statements
    "two statements": (f"{C};\n{C}", U, ("second statement",), "\nSELECT"),
    "DROP": ("DROP TABLE bigmart.loyalty", U, ("DROP statement",), "DROP"),
    "INSERT": ("INSERT INTO bigmart.loyalty VALUES (1)", U, ("INSERT statement",), "INSERT"),
    "COPY": ("COPY bigmart.loyalty TO '/tmp/x.csv'", U, ("COPY statement",), "COPY"),
    "ATTACH": ("  ATTACH '/tmp/x.db' AS x", U, ("ATTACH statement",), "ATTACH"),
    "PRAGMA": ("PRAGMA database_list", U, ("PRAGMA statement",), "PRAGMA"),
    "EXPLAIN": (f"EXPLAIN {C}", U, ("EXPLAIN statement",), "EXPLAIN"),
    "SET": ("SET threads = 1", U, ("SET statement",), "SET"),
    "a parenthesised query": (f"({C})", U, ("in parentheses",), None),
    "DROP after a query": (f"{C}; DROP TABLE x", U, ("second statement",), "DROP"),
    # text that does not parse
    "a syntax error": (
        "SELECT COUNT(*)\nFROM WHERE",
        V,
        ("cannot parse", "expected table name"),
        "WHERE",
    ),
    "an unclosed string": (
        f"{C}\nWHERE region = 'north",
        V,
        ("cannot read", "not closed"),
        "'north",
    ),
    "an unclosed quoted name": (
        'SELECT COUNT(*) FROM "bigmart.loyalty',
        V,
        ("cannot read", "not closed"),
        '"',
    ),
    "nothing": ("  -- just a comment\n;", V, ("no query",), None),
}


def at(sql: str, anchor: str) -> str:
    """``line L, column C`` of the first occurrence of ``anchor`` after its leading whitespace
    (which only makes the anchor unique); an anchor ending in NUL means the SQL's last character."""
    skip = len(anchor) - len(anchor.lstrip())
    offset = len(sql) - 1 if anchor.endswith("\0") else sql.index(anchor) + skip
    line = sql.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - (sql.rfind(chr(10), 0, offset) + 1) + 1}"


@pytest.mark.parametrize("sql, error, fragments, anchor", REFUSED.values(), ids=REFUSED.keys())
def test_refusals_name_the_construct_and_where_it_is(
    sql: str, error: type[InvalidRequest], fragments: tuple[str, ...], anchor: str | None
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_sql(sql)
    assert type(caught.value) is error, caught.value.message
    message = caught.value.message
    assert message.startswith("sql: ")
    for fragment in fragments:
        assert fragment in message, message
    if anchor is not None:
        assert f" at {at(sql, anchor)}" in message, message
    # No parser internals, no terminal escapes; no snippet of the SQL either (a literal or a
    # name in it may be data: tests/integration/test_int_canary_errors.py).
    for internal in ("<Token", "TokenType", "sqlglot", "<class", "\x1b", "Traceback"):
        assert internal not in message


def test_deeply_nested_text_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidRequest):
        parse_sql(f"{C} WHERE " + "(" * 5000 + "region = 'n'" + ")" * 5000)
    with pytest.raises(InvalidRequest):
        parse_sql(f"{C} WHERE " + "NOT " * 5000 + "region = 'n'")


def test_parse_query_request_reports_sql_refusals_with_their_class() -> None:
    with pytest.raises(UnsupportedQuery, match="ORDER BY"):
        parse_query_request({"sql": f"{C} ORDER BY 1", "epsilon": 0.5})
