"""The engine for issue 3's queries: private group keys, buckets, boolean filters, centred sums,
histogram and quantile bins, and per-customer group bounding, on real in-memory DuckDB."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pyarrow as pa
import pytest

from gateway.domain.cells import ExactCells
from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy
from gateway.engine.compiler import TOKEN, CompiledQuery, compile_query
from gateway.engine.runner import run_exact

SHOP = "shop.sales"
INJECTION = "x'; DROP TABLE t0; --"
EDGES = [10, 20, 50, 100]  # the first edge is above the lower bound: values under it are dropped


def bounded_sql(compiled: CompiledQuery) -> str:
    """The SQL of the bounded rows: materialised (``setup``) or read as a CTE (``rows``)."""
    return compiled.setup or compiled.rows


def token(customer: str) -> bytes:
    return hashlib.sha256(customer.encode()).digest()[:16]


def make_policy(rows: int = 1, groups: int = 1) -> Policy:
    return parse_policy(
        {
            "collaboration": "engine",
            "privacy": {"max_epsilon_per_query": 10.0},
            "budgets": {"brand": {"epsilon": 100.0}},
            "datasets": {
                SHOP: {
                    "customer_key": "customer",
                    "max_rows_per_unit": rows,
                    "max_groups_per_unit": groups,
                    "columns": {
                        "region": {"use": "dimension", "keys": ["north", "south", "east"]},
                        "store": {"use": "dimension"},
                        "spend": {
                            "use": "measure",
                            "type": "float",
                            "bounds": [0, 100],
                            "aggregates": ["sum", "mean", "quantile", "histogram"],
                            "bins": EDGES,
                            "nullable": True,
                        },
                    },
                }
            },
            "rules": {"min_group_size": 0},
        }
    )


Row = tuple[str, str | None, str | None, float | None]


def table(rows: list[Row]) -> pa.Table:
    """Rows of (customer, region, store, spend), tokenised as ingest stores them."""
    return pa.table(
        {
            TOKEN: pa.array([token(r[0]) for r in rows], type=pa.binary(16)),
            "region": pa.array([r[1] for r in rows], type=pa.string()),
            "store": pa.array([r[2] for r in rows], type=pa.string()),
            "spend": pa.array([r[3] for r in rows], type=pa.float64()),
        }
    )


ROWS: list[Row] = [
    ("c1", "north", "s1", 10.0),  # on an edge: the bin above it, [10, 20)
    ("c2", "north", "s2", 150.0),  # clamped to 100: the last bin, the top of the grid
    ("c3", "south", "s1", 5.0),  # under the first edge: in no histogram bin
    ("c4", "south", INJECTION, 49.99),
    ("c5", "east", "s3", 20.0),
    ("c6", "west", "s1", 99.0),  # region outside the public keys
    ("c7", None, None, 60.0),  # null region and store
    ("c8", "north", "s2", None),  # null spend
]
TABLE = table(ROWS)


def checked_query(
    aggregates: list[dict[str, Any]],
    group_by: list[Any] | None = None,
    where: list[dict[str, Any]] | None = None,
    policy: Policy | None = None,
) -> CheckedQuery:
    plan = {
        "from": SHOP,
        "where": where or [],
        "group_by": group_by or [],
        "aggregates": aggregates,
    }
    request = parse_query_request({"plan": plan, "epsilon": 1.0})
    return check_query(request, policy or make_policy(), "brand")


def run(checked: CheckedQuery, rows: pa.Table = TABLE, seen: int = 1) -> ExactCells:
    return run_exact(compile_query(checked, {SHOP: seen}), {SHOP: rows})


# ---------------------------------------------------------------------------------------------
# Private group keys and buckets


def test_private_group_keys_are_whatever_the_data_holds() -> None:
    checked = checked_query([{"fn": "count"}], group_by=["store"])
    assert checked.private_groups and checked.group_keys == ()
    cells = run(checked).scalars
    # the null store (c7) is dropped; the injection string is a key like any other, from the data
    assert cells == {
        ("s1",): {"count": 3},
        ("s2",): {"count": 2},
        ("s3",): {"count": 1},
        (INJECTION,): {"count": 1},
    }


def test_bucket_labels_are_bound_parameters_in_text_order() -> None:
    bucket = {
        "bucket": [{"when": {"column": "store", "op": "eq", "value": "s1"}, "then": "S001"}],
        "else": "rest of network",
        "as": "network",
    }
    where = [{"column": "region", "op": "in", "values": ["north", "south"]}]
    checked = checked_query([{"fn": "count"}], group_by=[bucket, "region"], where=where)
    assert checked.group_keys == tuple(
        (b, r) for b in ("S001", "rest of network") for r in ("north", "south", "east")
    )
    compiled = compile_query(checked, {SHOP: 1})
    # SELECT (the bucket) precedes WHERE (the filter, then the group keys) in the text
    assert compiled.params == ("s1", "S001", "rest of network", "north", "south",
                               "north", "south", "east")  # fmt: skip
    assert bounded_sql(compiled).count("?") == len(compiled.params)
    assert "rest of network" not in bounded_sql(compiled) and "S001" not in bounded_sql(compiled)
    assert run(checked).scalars == {
        ("S001", "north"): {"count": 1},
        ("rest of network", "north"): {"count": 2},
        ("S001", "south"): {"count": 1},
        ("rest of network", "south"): {"count": 1},
    }


def test_a_bucket_without_else_drops_the_rows_that_match_no_case() -> None:
    bucket = {
        "bucket": [
            {"when": {"column": "store", "op": "in", "values": ["s1", "s3"]}, "then": "odd"},
            {"when": {"column": "store", "op": "eq", "value": "s1"}, "then": "never"},  # s1 above
        ],
        "as": "b",
    }
    checked = checked_query([{"fn": "count"}], group_by=[bucket])
    assert checked.group_keys == (("odd",), ("never",))
    assert run(checked).scalars == {("odd",): {"count": 4}}  # c1, c3, c6 (s1) and c5 (s3)


# ---------------------------------------------------------------------------------------------
# Boolean filters: SQL semantics (a null value never satisfies a comparison, nor its negation)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"column": "region", "op": "between", "values": ["east", "north"]}, {"c1", "c2", "c5",
                                                                              "c8"}),
        (
            {"or": [{"column": "region", "op": "eq", "value": "east"},
                    {"column": "store", "op": "eq", "value": "s1"}]},
            {"c1", "c3", "c5", "c6"},
        ),
        (
            {"and": [{"column": "region", "op": "ne", "value": "east"},
                     {"not": {"column": "store", "op": "in", "values": ["s1", "s2"]}}]},
            {"c4"},
        ),
        ({"not": {"column": "region", "op": "eq", "value": "north"}}, {"c3", "c4", "c5", "c6"}),
        ({"not": {"not": {"column": "store", "op": "eq", "value": "s2"}}}, {"c2", "c8"}),
        (
            {"not": {"or": [{"column": "region", "op": "eq", "value": "north"},
                            {"column": "store", "op": "between", "values": ["s1", "s2"]}]}},
            {"c4", "c5"},
        ),
    ],
)  # fmt: skip
def test_boolean_filters(where: dict[str, Any], expected: set[str]) -> None:
    checked = checked_query([{"fn": "count"}], where=[where])
    assert run(checked).scalars[()]["count"] == len(expected)
    bucket = {"bucket": [{"when": where, "then": "in"}], "else": "out", "as": "b"}
    cells = run(checked_query([{"fn": "count"}], group_by=[bucket])).scalars
    # in a bucket an unknown (null) condition takes the else branch
    assert cells.get(("in",), {}).get("count", 0) == len(expected)
    assert cells.get(("out",), {}).get("count", 0) == len(ROWS) - len(expected)


# ---------------------------------------------------------------------------------------------
# Centred sums, histograms and quantile grids


def test_centred_sums_are_exact_fixed_point_sums_around_the_midpoint() -> None:
    checked = checked_query(
        [{"fn": "mean", "column": "spend"}, {"fn": "sum", "column": "spend"}], group_by=["region"]
    )
    stats = {s.key: s for s in checked.statistics}
    csum = stats["csum:shop.sales.spend"]
    assert (csum.lo, csum.mid, csum.hi, csum.sensitivity) == (0, 5000, 10_000, 5000)
    assert stats["sum:shop.sales.spend"].sensitivity == 10_000  # twice the centred sum's
    cells = run(checked).scalars
    # fixed point (cents) minus the centre; a null value counts as the centre (0 here)
    assert cells[("north",)] == {
        "count": 3,
        "csum:shop.sales.spend": (1000 - 5000) + (10_000 - 5000) + 0,
        "sum:shop.sales.spend": 1000 + 10_000,
    }
    assert cells[("south",)]["csum:shop.sales.spend"] == (500 - 5000) + (4999 - 5000)
    assert cells[("east",)]["csum:shop.sales.spend"] == 2000 - 5000


def test_histogram_counts_per_group_and_bin() -> None:
    checked = checked_query([{"fn": "histogram", "column": "spend"}], group_by=["region"])
    [hist] = [s for s in checked.statistics if s.kind == "histogram"]
    assert hist.edges == tuple(EDGES) and hist.sensitivity == 1
    cells = run(checked)
    assert cells.bins[hist.key] == {
        ("north",): {0: 1, 2: 1},  # 10 on the edge goes up; 150 clamps into [50, 100]
        ("south",): {1: 1},  # 49.99; 5 is under the first edge
        ("east",): {1: 1},  # 20 on an edge goes up
    }
    # no group-by: one group, every non-null value in range (c6 and c7 included)
    ungrouped = run(checked_query([{"fn": "histogram", "column": "spend"}]))
    assert ungrouped.bins[hist.key] == {(): {0: 1, 1: 2, 2: 3}}


def test_quantile_grid_bins_cover_the_bounds() -> None:
    checked = checked_query([{"fn": "median", "column": "spend"}])
    [stat] = [s for s in checked.statistics if s.kind == "quantile"]
    width = stat.grid_width
    assert stat.candidates >= 1024 and width == pytest.approx(100 / stat.candidates)
    cells = run(checked).bins[stat.key][()]
    values = [min(max(v, 0.0), 100.0) for *_, v in ROWS if v is not None]
    expected: dict[int, int] = {}
    for v in values:
        b = min(math.floor(v / width), stat.candidates - 1)  # the top of the range: last bin
        expected[b] = expected.get(b, 0) + 1
    assert cells == expected


def test_quantiles_per_private_group() -> None:
    checked = checked_query([{"fn": "quantile", "column": "spend", "q": 0.9}], group_by=["store"])
    [stat] = [s for s in checked.statistics if s.kind == "quantile"]
    cells = run(checked)
    assert set(cells.bins[stat.key]) == {("s1",), ("s2",), (INJECTION,), ("s3",)}
    assert sum(cells.bins[stat.key][("s1",)].values()) == 3
    assert cells.scalars[("s1",)] == {"count": 3}  # partition selection needs the count


# ---------------------------------------------------------------------------------------------
# Customers with several rows: at most max_groups_per_unit groups each

CUSTOMERS = 60
MULTI = table(
    [(f"m{i}", region, f"s{j}", 10.0 * (j + 1))
     for i in range(CUSTOMERS) for j, region in enumerate(("north", "south", "east"))]
)  # fmt: skip


def test_each_customer_counts_in_at_most_max_groups_per_unit_groups() -> None:
    for groups, per_customer in ((1, 1), (2, 2), (3, 3)):
        checked = checked_query(
            [{"fn": "count"}], group_by=["region"], policy=make_policy(rows=3, groups=groups)
        )
        assert checked.l0 == groups
        assert checked.statistics[0].sensitivity == 3
        compiled = compile_query(checked, {SHOP: 3})
        assert ("SELECT DISTINCT" in bounded_sql(compiled)) == (groups < 3)
        for _ in range(3):
            cells = run_exact(compiled, {SHOP: MULTI}).scalars
            assert sum(c["count"] for c in cells.values()) == CUSTOMERS * per_customer


def test_the_groups_a_customer_keeps_are_drawn_at_random() -> None:
    checked = checked_query(
        [{"fn": "count"}], group_by=["region"], policy=make_policy(rows=3, groups=1)
    )
    cells = run_exact(compile_query(checked, {SHOP: 3}), {SHOP: MULTI}).scalars
    # A fixed choice (the first row, the smallest key) would put everyone in one region. With a
    # uniform choice some region is empty with probability <= 3·(2/3)^60 < 1e-10.
    assert set(cells) == {("north",), ("south",), ("east",)}
    assert sum(c["count"] for c in cells.values()) == CUSTOMERS


def test_group_bounding_is_skipped_when_the_ingest_statistic_shows_it_holds() -> None:
    checked = checked_query(
        [{"fn": "count"}], group_by=["region"], policy=make_policy(rows=3, groups=2)
    )
    assert "SELECT DISTINCT" not in bounded_sql(compile_query(checked, {SHOP: 2}))  # ≤ 2 rows each
    assert "QUALIFY" not in bounded_sql(compile_query(checked, {SHOP: 2}))
    assert "SELECT DISTINCT" in bounded_sql(compile_query(checked, {SHOP: 3}))
    assert "SELECT DISTINCT" in bounded_sql(compile_query(checked, {}))  # no statistic: bounded
    one_row = checked_query([{"fn": "count"}], group_by=["region"])
    compiled: CompiledQuery = compile_query(one_row, {SHOP: 1})
    assert "QUALIFY" not in bounded_sql(compiled) and "random()" not in bounded_sql(compiled)
    # without groups there is nothing to bound beyond the rows
    ungrouped = checked_query([{"fn": "count"}], policy=make_policy(rows=3, groups=1))
    assert "SELECT DISTINCT" not in bounded_sql(compile_query(ungrouped, {SHOP: 3}))
