"""The hot database: same exact cells as a per-query connection, caps, versions, no disk.

Every plan below runs twice on the same data: through :func:`run_exact` on the decrypted
Arrow tables (a new connection per query, the reference) and through :func:`run_hot` on the
hot tables (128-bit integer tokens, ENUM text columns, fixed-point measure columns). The
cells must be identical, bins included.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy
from gateway.engine.compiler import TOKEN, compile_query
from gateway.engine.hot import FixedPoint, HotDatasets, layout_of, size_in_bytes
from gateway.engine.runner import run_arrow, run_exact, run_hot

SHOP = "shop.sales"
SURVEY = "brand.survey"
ODD = "x'; DROP TABLE t0; --"

POLICY: Policy = parse_policy(
    {
        "collaboration": "hot",
        "privacy": {"max_epsilon_per_query": 10.0},
        "budgets": {"brand": {"epsilon": 100.0}},
        "datasets": {
            SHOP: {
                "customer_key": "customer",
                "max_rows_per_unit": 1,
                "columns": {
                    "region": {"use": "dimension", "keys": ["north", "south", "east", "nowhere"]},
                    "tier": {"use": "dimension", "type": "int", "keys": [1, 2, 3]},
                    "store": {"use": "dimension"},
                    "spend": {
                        "use": "measure",
                        "type": "float",
                        "bounds": [0, 100],
                        "nullable": True,
                        "aggregates": ["sum", "mean", "quantile", "histogram"],
                        "bins": [0, 10, 50, 100],
                    },
                    "visits": {
                        "use": "measure",
                        "type": "int",
                        "bounds": [-2, 10],
                        "aggregates": ["sum", "mean", "quantile"],
                    },
                },
            },
            SURVEY: {
                "customer_key": "customer",
                "max_rows_per_unit": 1,
                "columns": {
                    "segment": {"use": "dimension", "keys": ["a", "b"]},
                    "score": {
                        "use": "measure",
                        "type": "int",
                        "bounds": [-5, 5],
                        "aggregates": ["sum", "mean"],
                    },
                },
            },
        },
        "joins": [[SHOP, SURVEY]],
        "rules": {"min_group_size": 0},
    }
)


def token(customer: int) -> bytes:
    return hashlib.sha256(str(customer).encode()).digest()[:16]


def shop_table(rows: int, seed: int = 7) -> pa.Table:
    """Values outside the keys, nulls, measures beyond the bounds, odd store names."""
    rng = np.random.default_rng(seed)  # data generation, not privacy noise
    regions = np.array(["north", "south", "east", "west", ""], dtype=object)
    region = regions[rng.integers(0, 5, rows)]
    region[rng.random(rows) < 0.05] = None
    stores = np.array(["s1", "s2", "s3", ODD, "S1", "s10"], dtype=object)
    store = stores[rng.integers(0, 6, rows)]
    store[rng.random(rows) < 0.05] = None
    spend = np.round(rng.normal(40, 45, rows), 3)
    return pa.table(
        {
            TOKEN: pa.array([token(i) for i in range(rows)], type=pa.binary(16)),
            "region": pa.array(region.tolist(), type=pa.string()),
            "tier": pa.array(rng.integers(0, 5, rows), type=pa.int64()),
            "store": pa.array(store.tolist(), type=pa.string()),
            "spend": pa.array(
                [
                    None if m else float(v)
                    for v, m in zip(spend, rng.random(rows) < 0.05, strict=True)
                ],
                type=pa.float64(),
            ),
            "visits": pa.array(rng.integers(-4, 14, rows), type=pa.int64()),
        }
    )


def survey_table(rows: int, offset: int, seed: int = 8) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            TOKEN: pa.array([token(i + offset) for i in range(rows)], type=pa.binary(16)),
            "segment": pa.array(rng.choice(["a", "b", "c"], rows).tolist(), type=pa.string()),
            "score": pa.array(rng.integers(-7, 8, rows), type=pa.int64()),
        }
    )


SHOP_TABLE = shop_table(3000)
SURVEY_TABLE = survey_table(3000, offset=1500)
TABLES = {SHOP: SHOP_TABLE, SURVEY: SURVEY_TABLE}


def checked(plan: dict[str, Any]) -> CheckedQuery:
    body = {"plan": {"from": SHOP, **plan}, "epsilon": 1.0}
    return check_query(parse_query_request(body), POLICY, "brand")


def loaders(hot: HotDatasets, tables: dict[str, pa.Table], version: int = 1) -> dict[str, Any]:
    out = {}
    for ds, table in tables.items():
        layout = layout_of(POLICY.datasets[ds])
        out[ds] = (("hot", ds, str(version), "layout"), lambda t=table: t, layout)
    return out


PLANS: list[dict[str, Any]] = [
    {"aggregates": [{"fn": "count"}]},
    {"group_by": ["region"], "aggregates": [{"fn": "count"}, {"fn": "sum", "column": "spend"}]},
    {"group_by": ["tier"], "aggregates": [{"fn": "mean", "column": "visits"}]},
    {"group_by": ["store"], "aggregates": [{"fn": "count"}, {"fn": "mean", "column": "spend"}]},
    {
        "where": [{"column": "store", "op": "in", "values": ["s1", ODD, "absent"]}],
        "group_by": ["region"],
        "aggregates": [{"fn": "sum", "column": "visits"}],
    },
    {
        "where": [{"not": {"column": "region", "op": "eq", "value": "north"}}],
        "aggregates": [{"fn": "count"}, {"fn": "sum", "column": "spend"}],
    },
    {
        "where": [
            {"column": "store", "op": "ne", "value": "absent"},
            {"column": "region", "op": "not_in", "values": ["south", "absent"]},
        ],
        "group_by": ["tier"],
        "aggregates": [{"fn": "count"}],
    },
    {
        "where": [{"column": "store", "op": "between", "values": ["S", "s2"]}],
        "aggregates": [{"fn": "count"}, {"fn": "mean", "column": "visits"}],
    },
    {
        "group_by": [
            {
                "bucket": [{"when": {"column": "store", "op": "eq", "value": "s1"}, "then": "one"}],
                "else": "rest",
                "as": "store_bucket",
            }
        ],
        "aggregates": [{"fn": "count"}, {"fn": "sum", "column": "spend"}],
    },
    {
        "join": [SURVEY],
        "group_by": ["segment", "region"],
        "aggregates": [
            {"fn": "count"},
            {"fn": "mean", "column": "spend"},
            {"fn": "sum", "column": "score"},
        ],
    },
    {"group_by": ["region"], "aggregates": [{"fn": "median", "column": "spend"}]},
    {"aggregates": [{"fn": "quantile", "column": "visits", "q": 0.9}]},
    {"group_by": ["tier"], "aggregates": [{"fn": "histogram", "column": "spend"}]},
]


@pytest.fixture
def hot() -> Any:
    hot = HotDatasets(capacity_bytes=64 * 1024**2, admit_after=1)
    yield hot
    hot.close()


@pytest.mark.parametrize("plan", PLANS, ids=[str(i) for i in range(len(PLANS))])
def test_hot_tables_give_the_cells_of_a_per_query_connection(hot: Any, plan: Any) -> None:
    query = checked(plan)
    used = {ds.id: TABLES[ds.id] for ds in query.datasets}
    seen = {ds: 1 for ds in used}
    reference = run_exact(compile_query(query, seen), used)
    with hot.pin(loaders(hot, used)) as tables:
        assert tables is not None
        hot_cells, hot_vectors = run_hot(compile_query(query, seen, tables), hot, tables)
    fallback = run_arrow(compile_query(query, seen), used)  # over the cap: a new connection
    for cells, vectors in ((hot_cells, hot_vectors), fallback):
        assert cells.scalars == reference.scalars
        for key, per_group in reference.bins.items():
            if key in vectors:  # quantile grids come back dense
                dense = {
                    g: {i: int(n) for i, n in enumerate(v) if n} for g, v in vectors[key].items()
                }
                assert dense == per_group
            else:
                assert cells.bins[key] == per_group
        assert set(reference.bins) == set(cells.bins) | set(vectors)


def test_random_bounding_keeps_one_row_per_customer_on_hot_tables(hot: Any) -> None:
    repeated = pa.concat_tables([SHOP_TABLE, SHOP_TABLE.slice(0, 1000)])  # 1,000 twice
    query = checked({"aggregates": [{"fn": "count"}, {"fn": "sum", "column": "visits"}]})
    with hot.pin(loaders(hot, {SHOP: repeated})) as tables:
        assert tables is not None
        compiled = compile_query(query, {SHOP: 2}, tables)
        assert compiled.setup.startswith("CREATE TEMP TABLE j")  # drawn once, read by all
        cells, _ = run_hot(compiled, hot, tables)
    reference = run_exact(compile_query(query, {SHOP: 1}), {SHOP: SHOP_TABLE})
    assert cells.scalars == reference.scalars  # the copies are identical rows: same sums


def test_hot_tables_use_integer_tokens_enums_and_fixed_point(hot: Any) -> None:
    with hot.pin(loaders(hot, {SHOP: SHOP_TABLE})) as tables:
        assert tables is not None
        table = tables[SHOP]
        assert table.token and table.enums == {"region", "store"}
        spend = FixedPoint("spend", 0, 10_000, 100)
        assert spend in table.fixed and table.fixed_column("spend", 0, 10_000, 100)
        assert table.fixed_column("spend", 0, 5_000, 100) is None  # other bounds: computed
        cursor = hot.cursor()
        try:
            types = dict(
                cursor.execute(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?",
                    [table.name],
                ).fetchall()
            )
        finally:
            cursor.close()
    assert types[TOKEN] == "UHUGEINT"
    assert types["region"].startswith("ENUM(")
    assert types[spend.name] == "SMALLINT" and types["spend"] == "DOUBLE"  # 0 … 10,000


def test_the_hot_database_never_spills_nor_touches_files(hot: Any, tmp_path: Path) -> None:
    with hot.pin(loaders(hot, {SHOP: SHOP_TABLE})) as tables:
        assert tables is not None
        cursor = hot.cursor()
        try:
            settings = dict(
                cursor.execute(
                    "SELECT name, value FROM duckdb_settings() WHERE name IN ('temp_directory', "
                    "'enable_external_access', 'autoload_known_extensions', 'memory_limit')"
                ).fetchall()
            )
            secret = tmp_path / "secret.csv"
            secret.write_text("a\n1\n")
            with pytest.raises(duckdb.Error):
                cursor.execute(f"SELECT * FROM read_csv('{secret}')").fetchall()
            target = tmp_path / "leak.csv"
            with pytest.raises(duckdb.Error):
                cursor.execute(f"COPY {tables[SHOP].name} TO '{target}'")
        finally:
            cursor.close()
    assert settings["temp_directory"] == ""
    assert settings["enable_external_access"] == "false"
    assert settings["autoload_known_extensions"] == "false"
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [secret]


def _tables_in(hot: HotDatasets) -> set[str]:
    cursor = hot.cursor()
    try:
        return {r[0] for r in cursor.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        cursor.close()


def test_a_dataset_larger_than_the_cap_is_not_kept() -> None:
    hot = HotDatasets(capacity_bytes=SHOP_TABLE.nbytes // 2, admit_after=1)
    try:
        with hot.pin(loaders(hot, {SHOP: SHOP_TABLE})) as tables:
            assert tables is None
        assert hot.loaded_keys() == [] and hot.used_bytes == 0
        assert _tables_in(hot) == set()
    finally:
        hot.close()


def test_datasets_that_fit_alone_but_not_together_are_not_kept_together() -> None:
    both = SHOP_TABLE.nbytes + SURVEY_TABLE.nbytes
    hot = HotDatasets(capacity_bytes=int(both * 0.9), admit_after=1)
    try:
        with hot.pin(loaders(hot, TABLES)) as tables:
            assert tables is None
            assert hot.used_bytes <= hot.capacity_bytes
        with hot.pin(loaders(hot, {SHOP: SHOP_TABLE})) as tables:
            assert tables is not None
        assert hot.used_bytes <= hot.capacity_bytes
    finally:
        hot.close()


def test_the_least_recently_used_unpinned_table_makes_room() -> None:
    small = {f"d{i}": shop_table(500, seed=i) for i in range(3)}
    hot = HotDatasets(
        capacity_bytes=int(max(t.nbytes for t in small.values()) * 2.5), admit_after=1
    )
    try:

        def pin(name: str) -> None:
            wanted = {name: (("c", name, "1", "l"), lambda: small[name], frozenset())}
            with hot.pin(wanted) as tables:
                assert tables is not None

        pin("d0")
        pin("d1")
        pin("d0")  # d1 is now the least recently used
        pin("d2")
        assert {k[1] for k in hot.loaded_keys()} == {"d0", "d2"}
        assert hot.used_bytes <= hot.capacity_bytes
        assert len(_tables_in(hot)) == 2
    finally:
        hot.close()


def test_a_new_version_replaces_the_old_one_which_stays_while_pinned(hot: Any) -> None:
    old = loaders(hot, {SHOP: SHOP_TABLE}, version=1)
    new = loaders(hot, {SHOP: shop_table(100, seed=3)}, version=2)
    with hot.pin(old) as old_tables:
        assert old_tables is not None
        with hot.pin(new) as new_tables:
            assert new_tables is not None
            # the old table is superseded but still pinned: a running query keeps reading it
            assert {old_tables[SHOP].name, new_tables[SHOP].name} <= _tables_in(hot)
        assert [k[2] for k in hot.loaded_keys()] == ["1", "2"]
    assert [k[2] for k in hot.loaded_keys()] == ["2"]
    assert _tables_in(hot) == {new_tables[SHOP].name}


def test_retain_drops_versions_that_are_no_longer_current(hot: Any) -> None:
    with hot.pin(loaders(hot, {SHOP: SHOP_TABLE}, version=4)) as tables:
        assert tables is not None
    hot.retain("other-collaboration", {SHOP: 5})
    hot.retain("hot", {SURVEY: 9})
    assert [k[2] for k in hot.loaded_keys()] == ["4"]
    hot.retain("hot", {SHOP: 5})
    assert hot.loaded_keys() == [] and _tables_in(hot) == set()


def test_another_layout_is_another_table(hot: Any) -> None:
    first = loaders(hot, {SHOP: SHOP_TABLE})
    (key, load, layout) = first[SHOP]
    moved = frozenset({FixedPoint("spend", 0, 500, 100)})
    with (
        hot.pin({SHOP: (key, load, layout)}) as a,
        hot.pin({SHOP: (key[:3] + ("moved",), load, moved)}) as b,
    ):
        assert a is not None and b is not None
        assert a[SHOP].name != b[SHOP].name
        assert b[SHOP].fixed == moved
    assert [k[3] for k in hot.loaded_keys()] == ["moved"]


def test_concurrent_queries_load_a_dataset_once(hot: Any) -> None:
    calls = []
    barrier = threading.Barrier(8)

    def load() -> pa.Table:
        calls.append(1)
        return SHOP_TABLE

    names = []
    errors = []

    def query() -> None:
        try:
            barrier.wait()
            wanted = {SHOP: (("c", SHOP, "1", "l"), load, layout_of(POLICY.datasets[SHOP]))}
            with hot.pin(wanted) as tables:
                assert tables is not None
                names.append(tables[SHOP].name)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=query) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(calls) == 1 and len(set(names)) == 1 and len(names) == 8


def test_a_failed_load_leaves_nothing_behind(hot: Any) -> None:
    def broken() -> pa.Table:
        raise OSError("the file is gone")

    with pytest.raises(OSError), hot.pin({SHOP: (("c", SHOP, "1", "l"), broken, frozenset())}):
        pass
    assert hot.loaded_keys() == [] and hot.used_bytes == 0 and hot._reserved == 0
    with hot.pin(loaders(hot, TABLES)) as tables:
        assert tables is not None


def test_a_version_is_loaded_from_its_second_use_by_default() -> None:
    hot = HotDatasets(capacity_bytes=64 * 1024**2)
    calls = []

    def load() -> pa.Table:
        calls.append(1)
        return SHOP_TABLE

    wanted = {SHOP: (("c", SHOP, "1", "l"), load, frozenset[FixedPoint]())}
    try:
        with hot.pin(wanted) as first:
            assert first is None  # the caller runs on a per-query connection
        assert calls == [] and hot.loaded_keys() == [] and _tables_in(hot) == set()
        with hot.pin(wanted) as second:
            assert second is not None
        with hot.pin(wanted) as third:
            assert third is not None and third[SHOP] == second[SHOP]
        assert calls == [1]
    finally:
        hot.close()


def test_size_in_bytes_reads_duckdb_memory_sizes() -> None:
    assert size_in_bytes("4GB") == 4 * 1000**3
    assert size_in_bytes("512 MiB") == 512 * 1024**2
    with pytest.raises(ValueError):
        size_in_bytes("lots")
