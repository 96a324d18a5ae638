"""compile_query + run_exact on real in-memory DuckDB over small tokenised Arrow tables.

``run_exact`` returns :class:`ExactCells`: ``scalars[group][statistic]`` for counts and sums,
``bins[statistic][group][bin]`` for histograms and quantile grids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from gateway.domain.cells import ExactCells
from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy
from gateway.engine.compiler import TOKEN, CompiledQuery, compile_query, quote
from gateway.engine.runner import connect, max_rows_per_customer, run_exact

SHOP = "shop.sales"
SURVEY = "brand.survey"
SPEND = f"sum:{SHOP}.spend"
VISITS = f"sum:{SHOP}.visits"
SCORE = f"sum:{SURVEY}.score"
INJECTION = "x'; DROP TABLE t0; --"


def token(customer: str) -> bytes:
    return hashlib.sha256(customer.encode()).digest()[:16]


def make_policy(shop_rows: int = 1, survey_rows: int = 1, shop_groups: int = 1) -> Policy:
    return parse_policy(
        {
            "collaboration": "engine",
            "privacy": {"max_epsilon_per_query": 10.0},
            "budgets": {"brand": {"epsilon": 100.0}},
            "datasets": {
                SHOP: {
                    "customer_key": "customer",
                    "max_rows_per_unit": shop_rows,
                    "max_groups_per_unit": shop_groups,
                    "columns": {
                        "region": {"use": "dimension", "keys": ["north", "south", "east"]},
                        "tier": {"use": "dimension", "type": "int", "keys": [1, 2, 3]},
                        "store": {"use": "dimension"},
                        "spend": {
                            "use": "measure",
                            "type": "float",
                            "bounds": [0, 100],
                            "aggregates": ["sum", "mean"],
                        },
                        "visits": {
                            "use": "measure",
                            "type": "int",
                            "bounds": [0, 10],
                            "aggregates": ["sum", "mean"],
                        },
                        "email": {"use": "hidden"},
                    },
                },
                SURVEY: {
                    "customer_key": "customer",
                    "max_rows_per_unit": survey_rows,
                    "columns": {
                        "segment": {"use": "dimension", "keys": ["a", "b"]},
                        "score": {
                            "use": "measure",
                            "type": "int",
                            "bounds": [-5, 5],
                            "aggregates": ["sum"],
                        },
                    },
                },
            },
            "joins": [[SHOP, SURVEY]],
            "rules": {"min_group_size": 0},
        }
    )


def shop_table(rows: list[tuple[str, str | None, int | None, str | None, float, int]]) -> pa.Table:
    """Rows of (customer, region, tier, store, spend, visits), tokenised as ingest stores them."""
    return pa.table(
        {
            TOKEN: pa.array([token(r[0]) for r in rows], type=pa.binary(16)),
            "region": pa.array([r[1] for r in rows], type=pa.string()),
            "tier": pa.array([r[2] for r in rows], type=pa.int64()),
            "store": pa.array([r[3] for r in rows], type=pa.string()),
            "spend": pa.array([r[4] for r in rows], type=pa.float64()),
            "visits": pa.array([r[5] for r in rows], type=pa.int64()),
        }
    )


def survey_table(rows: list[tuple[str, str, int]]) -> pa.Table:
    return pa.table(
        {
            TOKEN: pa.array([token(r[0]) for r in rows], type=pa.binary(16)),
            "segment": pa.array([r[1] for r in rows], type=pa.string()),
            "score": pa.array([r[2] for r in rows], type=pa.int64()),
        }
    )


SHOP_ROWS: list[tuple[str, str | None, int | None, str | None, float, int]] = [
    ("c1", "north", 1, "s1", 10.004, 3),  # 1000.4 cents -> 1000
    ("c2", "north", 2, "s2", 150.0, 12),  # above the bounds: 10000 cents, 10 visits
    ("c3", "south", 1, "s1", -5.0, -3),  # below the bounds: 0, 0
    ("c4", "south", 3, INJECTION, 12.34, 7),  # 1234 cents
    ("c5", "east", 2, "s3", 0.996, 0),  # 99.6 cents -> 100
    ("c6", "west", 1, "s1", 50.0, 5),  # region outside the public keys: dropped when grouped
    ("c7", None, 1, "s2", 60.0, 6),  # null region: dropped when grouped
    ("c8", "north", None, None, 20.0, 1),  # null tier and store
]

SHOP_TABLE = shop_table(SHOP_ROWS)


def checked_query(
    aggregates: list[dict[str, Any]],
    group_by: list[str] | None = None,
    where: list[dict[str, Any]] | None = None,
    join: list[str] | None = None,
    policy: Policy | None = None,
) -> CheckedQuery:
    plan = {
        "from": SHOP,
        "join": join or [],
        "where": where or [],
        "group_by": group_by or [],
        "aggregates": aggregates,
    }
    request = parse_query_request({"plan": plan, "epsilon": 1.0})
    return check_query(request, policy or make_policy(), "brand")


def cells_of(
    checked: CheckedQuery,
    tables: dict[str, pa.Table] | None = None,
    max_rows_seen: dict[str, int] | None = None,
) -> ExactCells:
    tables = tables or {SHOP: SHOP_TABLE}
    seen = max_rows_seen if max_rows_seen is not None else {ds: 1 for ds in tables}
    return run_exact(compile_query(checked, seen), tables)


def run(
    checked: CheckedQuery,
    tables: dict[str, pa.Table] | None = None,
    max_rows_seen: dict[str, int] | None = None,
) -> dict[tuple[str | int, ...], dict[str, int]]:
    """The scalar cells (counts and sums) per group."""
    return cells_of(checked, tables, max_rows_seen).scalars


def sql_of(compiled: CompiledQuery) -> str:
    """Every SQL text the runner executes for ``compiled``."""
    return "\n".join([compiled.setup, compiled.rows, compiled.scalars, *compiled.bins.values()])


COUNT_SPEND_VISITS = [
    {"fn": "count"},
    {"fn": "sum", "column": "spend"},
    {"fn": "sum", "column": "visits"},
]


# ---------------------------------------------------------------------------------------------
# Exact cells


def test_counts_and_clamped_fixed_point_sums_per_group() -> None:
    cells = run(checked_query(COUNT_SPEND_VISITS, group_by=["region"]))
    assert cells == {
        ("north",): {"count": 3, SPEND: 1000 + 10_000 + 2000, VISITS: 3 + 10 + 1},
        ("south",): {"count": 2, SPEND: 0 + 1234, VISITS: 0 + 7},
        ("east",): {"count": 1, SPEND: 100, VISITS: 0},
    }


def test_no_group_by_gives_one_cell_over_every_row() -> None:
    cells = run(checked_query(COUNT_SPEND_VISITS))
    spend = 1000 + 10_000 + 0 + 1234 + 100 + 5000 + 6000 + 2000
    visits = 3 + 10 + 0 + 7 + 0 + 5 + 6 + 1
    assert cells == {(): {"count": 8, SPEND: spend, VISITS: visits}}


def test_no_matching_rows_gives_zero_cells_or_none() -> None:
    where = [{"column": "store", "op": "eq", "value": "nowhere"}]
    assert run(checked_query(COUNT_SPEND_VISITS, where=where)) == {
        (): {"count": 0, SPEND: 0, VISITS: 0}
    }
    assert run(checked_query(COUNT_SPEND_VISITS, group_by=["region"], where=where)) == {}


def test_int_dimension_groups_on_its_integer_keys() -> None:
    cells = run(checked_query([{"fn": "count"}], group_by=["tier"]))
    # c8 has a null tier; c6 (west) and c7 (null region) count here, no region filter applies
    assert cells == {(1,): {"count": 4}, (2,): {"count": 2}, (3,): {"count": 1}}


def test_two_group_columns() -> None:
    cells = run(checked_query([{"fn": "count"}], group_by=["region", "tier"]))
    assert cells == {
        ("north", 1): {"count": 1},
        ("north", 2): {"count": 1},
        ("south", 1): {"count": 1},
        ("south", 3): {"count": 1},
        ("east", 2): {"count": 1},
    }


def test_values_outside_the_public_keys_or_null_are_dropped() -> None:
    cells = run(checked_query([{"fn": "count"}], group_by=["region"]))
    assert sum(c["count"] for c in cells.values()) == 6  # c6 (west) and c7 (null) are gone
    assert set(cells) <= {("north",), ("south",), ("east",)}


@pytest.mark.parametrize(
    ("spend", "visits", "spend_cents", "visits_sum"),
    [
        (1e300, 2**63 - 1, 10_000, 10),  # far beyond BIGINT once scaled: clamped, no overflow
        (-1e300, -(2**63), 0, 0),
        (100.0, 10, 10_000, 10),  # exactly on the bounds
        (99.994, 99, 9999, 10),
        (0.004, 0, 0, 0),
        (0.005001, 1, 1, 1),
    ],
)
def test_measures_are_clamped_before_they_are_cast(
    spend: float, visits: int, spend_cents: int, visits_sum: int
) -> None:
    table = shop_table([("c1", "north", 1, "s1", spend, visits)])
    cells = run(checked_query(COUNT_SPEND_VISITS), {SHOP: table})
    assert cells == {(): {"count": 1, SPEND: spend_cents, VISITS: visits_sum}}


# ---------------------------------------------------------------------------------------------
# Filters


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"column": "region", "op": "eq", "value": "north"}, {"c1", "c2", "c8"}),
        ({"column": "region", "op": "ne", "value": "north"}, {"c3", "c4", "c5", "c6"}),
        ({"column": "region", "op": "in", "values": ["south", "west"]}, {"c3", "c4", "c6"}),
        ({"column": "region", "op": "not_in", "values": ["north", "south"]}, {"c5", "c6"}),
        ({"column": "tier", "op": "eq", "value": 2}, {"c2", "c5"}),
        ({"column": "tier", "op": "not_in", "values": [1, 2]}, {"c4"}),
        ({"column": "store", "op": "eq", "value": INJECTION}, {"c4"}),
        ({"column": "store", "op": "in", "values": ["s1", INJECTION]}, {"c1", "c3", "c4", "c6"}),
    ],
)
def test_filters_select_the_expected_customers(where: dict[str, Any], expected: set[str]) -> None:
    # SQL semantics: ne / not_in drop rows whose value is null (c7, c8 where relevant)
    cells = run(checked_query(COUNT_SPEND_VISITS, where=[where]))
    rows = [r for r in SHOP_ROWS if r[0] in expected]
    assert cells[()]["count"] == len(rows)
    assert cells[()][VISITS] == sum(min(max(r[5], 0), 10) for r in rows)


def test_filter_values_are_bound_parameters_not_sql_text() -> None:
    where = [
        {"column": "store", "op": "eq", "value": INJECTION},
        {"column": "region", "op": "in", "values": ["north", "south"]},
    ]
    checked = checked_query([{"fn": "count"}], group_by=["tier"], where=where)
    compiled = compile_query(checked, {SHOP: 1})
    assert "DROP" not in sql_of(compiled) and "north" not in sql_of(compiled)
    assert compiled.params == (INJECTION, "north", "south", 1, 2, 3)
    assert (compiled.setup or compiled.rows).count("?") == len(compiled.params)
    assert compiled.tables == {SHOP: "t0"}
    # run twice on the same table: the value matched c4's store and dropped nothing
    for _ in range(2):
        cells = run_exact(compiled, {SHOP: SHOP_TABLE}).scalars
        assert cells == {(3,): {"count": 1}}
    assert SHOP_TABLE.num_rows == len(SHOP_ROWS)


def test_only_the_needed_columns_are_read() -> None:
    checked = checked_query([{"fn": "sum", "column": "visits"}], group_by=["region"])
    sql = sql_of(compile_query(checked, {SHOP: 1}))
    assert quote("visits") in sql and quote("region") in sql
    for unused in ("spend", "store", "tier", "email", "customer"):
        assert quote(unused) not in sql


def test_quote_escapes_identifiers() -> None:
    assert quote('we"ird') == '"we""ird"'


# ---------------------------------------------------------------------------------------------
# Contribution bounding


REPEATED = shop_table(
    [
        ("c1", "north", 1, "s1", 1.0, 1),
        ("c1", "north", 1, "s1", 2.0, 2),
        ("c1", "south", 1, "s1", 3.0, 3),
        ("c2", "north", 1, "s1", 4.0, 4),
        ("c3", "south", 1, "s1", 5.0, 5),
        ("c3", "south", 1, "s1", 6.0, 8),
    ]
)


def test_bounding_keeps_one_row_per_customer() -> None:
    checked = checked_query([{"fn": "count"}, {"fn": "sum", "column": "visits"}])
    compiled = compile_query(checked, {SHOP: 3})
    assert "QUALIFY row_number() OVER (PARTITION BY _token" in sql_of(compiled)
    assert compiled.setup.rstrip().endswith("FROM d0")
    seen_sums = set()
    for _ in range(20):
        cells = run_exact(compiled, {SHOP: REPEATED}).scalars
        assert cells[()]["count"] == 3  # one row for each of c1, c2, c3
        total = cells[()][VISITS]
        assert total in {c1 + 4 + c3 for c1 in (1, 2, 3) for c3 in (5, 8)}
        seen_sums.add(total)
    # the kept rows are drawn at random: 6 distinct, equally likely sums, so 20 identical
    # draws have probability 6^-19 < 1e-14
    assert len(seen_sums) > 1


def test_bounding_keeps_at_most_max_rows_per_unit_rows() -> None:
    policy = make_policy(2, shop_groups=2)  # two groups: the group bound does not bite here
    checked = checked_query([{"fn": "count"}], group_by=["region"], policy=policy)
    compiled = compile_query(checked, {SHOP: 3})
    assert "<= 2" in sql_of(compiled)
    cells = run_exact(compiled, {SHOP: REPEATED}).scalars
    # c1 keeps two of its three rows, c2 one, c3 both
    assert sum(c["count"] for c in cells.values()) == 5
    assert cells[("south",)]["count"] in (2, 3)


def test_bounding_is_skipped_when_the_ingest_statistic_says_it_holds() -> None:
    checked = checked_query([{"fn": "count"}], policy=make_policy(2))
    assert "QUALIFY" not in sql_of(compile_query(checked, {SHOP: 2}))
    assert "QUALIFY" not in sql_of(compile_query(checked, {SHOP: 1}))
    assert "QUALIFY" in sql_of(compile_query(checked, {SHOP: 3}))
    # without a statistic the bound is enforced
    assert "QUALIFY" in sql_of(compile_query(checked, {}))


def test_join_matches_tokens_and_bounds_each_side() -> None:
    survey = survey_table(
        [
            ("c1", "a", 5),
            ("c1", "b", 9),  # clamped to 5 if kept
            ("c2", "b", -7),  # clamped to -5
            ("c9", "a", 1),  # no shop rows: dropped by the join
        ]
    )
    shop = shop_table(
        [
            ("c1", "north", 1, "s1", 1.0, 1),
            ("c2", "south", 1, "s1", 2.0, 2),
            ("c3", "south", 1, "s1", 3.0, 3),  # no survey rows: dropped by the join
        ]
    )
    checked = checked_query(
        [{"fn": "count"}, {"fn": "sum", "column": "score"}],
        group_by=["region"],
        join=[SURVEY],
    )
    compiled = compile_query(checked, {SHOP: 1, SURVEY: 2})
    assert compiled.tables == {SHOP: "t0", SURVEY: "t1"}
    assert "JOIN d1 ON d1._token = d0._token" in sql_of(compiled)
    assert sql_of(compiled).count("QUALIFY") == 1  # only the survey exceeds its bound
    cells = run_exact(compiled, {SHOP: shop, SURVEY: survey}).scalars
    assert cells == {("north",): {"count": 1, SCORE: 5}, ("south",): {"count": 1, SCORE: -5}}


def test_join_rows_per_customer_is_the_product_of_the_bounds() -> None:
    survey = survey_table([("c1", "a", 1), ("c1", "a", 1), ("c1", "b", 1)])
    shop = shop_table([("c1", "north", 1, "s1", 1.0, 1)] * 3)
    policy = make_policy(shop_rows=2, survey_rows=1)
    checked = checked_query(
        [{"fn": "count"}, {"fn": "sum", "column": "score"}],
        group_by=["segment"],
        join=[SURVEY],
        policy=policy,
    )
    assert checked.statistics[0].sensitivity == 2
    compiled = compile_query(checked, {SHOP: 3, SURVEY: 3})
    cells = run_exact(compiled, {SHOP: shop, SURVEY: survey}).scalars
    assert sum(c["count"] for c in cells.values()) == 2
    assert len(cells) == 1


def test_join_filter_on_the_joined_dataset() -> None:
    survey = survey_table([("c1", "a", 2), ("c2", "b", 3), ("c4", "a", 4)])
    checked = checked_query(
        [{"fn": "count"}, {"fn": "sum", "column": "score"}],
        where=[{"column": "segment", "op": "eq", "value": "a"}],
        join=[SURVEY],
    )
    cells = run(checked, {SHOP: SHOP_TABLE, SURVEY: survey})
    assert cells == {(): {"count": 2, SCORE: 6}}


# ---------------------------------------------------------------------------------------------
# The runner's connection


def test_max_rows_per_customer() -> None:
    assert max_rows_per_customer(REPEATED) == 3
    assert max_rows_per_customer(SHOP_TABLE) == 1
    assert max_rows_per_customer(REPEATED.slice(0, 0)) == 0


def test_the_query_connection_cannot_read_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    read = f"read_csv('{secret}')"
    materialise = "CREATE TEMP TABLE j AS SELECT _token FROM t0"
    reads = [  # in the statement that materialises the joined rows, or in one that aggregates
        (f"CREATE TEMP TABLE j AS SELECT * FROM {read}", "", {}),
        (materialise, f"SELECT COUNT(*) FROM {read}", {}),
        (materialise, "", {"histogram:x": f"SELECT 0, COUNT(*) FROM {read}"}),
    ]
    for setup, scalars, bins in reads:
        compiled = CompiledQuery(
            setup=setup,
            params=(),
            scalars=scalars,
            scalar_keys=("count",) if scalars else (),
            bins=bins,
            group_columns=(),
            tables={SHOP: "t0"},
        )
        with pytest.raises(duckdb.Error) as caught:
            run_exact(compiled, {SHOP: SHOP_TABLE})
        assert "disabled" in str(caught.value).lower()


def test_the_query_connection_cannot_write_files(tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    compiled = CompiledQuery(
        setup=f"COPY t0 TO '{target}'",
        params=(),
        scalars="",
        scalar_keys=(),
        bins={},
        group_columns=(),
        tables={SHOP: "t0"},
    )
    with pytest.raises(duckdb.Error):
        run_exact(compiled, {SHOP: SHOP_TABLE})
    assert not target.exists()


def test_connect_loads_no_extensions_and_has_no_temp_directory() -> None:
    con = connect()
    try:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('autoinstall_known_extensions', 'autoload_known_extensions', 'temp_directory')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings["autoinstall_known_extensions"] == "false"
    assert settings["autoload_known_extensions"] == "false"
    assert settings["temp_directory"] == ""
