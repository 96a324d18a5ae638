"""Run compiled queries on DuckDB and return exact cells.

Two places a query runs:

* :func:`run_hot`: a cursor on the hot database of :mod:`gateway.engine.hot`, whose tables
  hold decrypted dataset versions (in memory, never spilled); the usual path.
* :func:`run_arrow` (and the older :func:`run_exact`): a new in-memory connection per query
  over Arrow tables, for datasets the hot database does not keep.

Either way DuckDB cannot spill to disk (no temp directory: decrypted data never touches the
disk) and cannot read files (external access is off before the query runs). The result is
exact cells keyed by group: they go to the DP layer only, never to a caller. Quantile grids
(up to 2^18 bins per group) come back as one dense vector per group, built from Arrow arrays
without a Python loop over their bins.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from gateway.domain.cells import ExactCells, GroupKey
from gateway.engine.compiler import TOKEN, CompiledQuery
from gateway.engine.hot import PERFECT_HASH_BITS, HotDatasets, HotTable

BinVectors = dict[str, dict[GroupKey, NDArray[np.int64]]]
"""Statistic key -> group -> counts of bins ``0 … n-1`` (the compiled query's ``dense``)."""


def connect(memory_limit: str = "4GB", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that loads no extensions and never spills to disk."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": memory_limit,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET temp_directory = ''")
    con.execute(f"SET perfect_ht_threshold = {PERFECT_HASH_BITS}")
    return con


def _dense_bins(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object], n_groups: int, size: int
) -> dict[GroupKey, NDArray[np.int64]]:
    """Rows ``(groups…, bin, count)`` as one dense count vector of ``size`` bins per group."""
    table = con.sql(sql, params=params).to_arrow_table()
    if table.num_rows == 0:
        return {}
    bins = table.column(n_groups).to_numpy().astype(np.int64)
    counts = table.column(n_groups + 1).to_numpy().astype(np.int64)
    codes = np.zeros(table.num_rows, dtype=np.int64)
    columns = []
    for i in range(n_groups):
        column = table.column(i).combine_chunks()
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        columns.append(column)
        codes = codes * len(column.dictionary) + column.indices.to_numpy().astype(np.int64)
    unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    vectors = np.zeros((len(unique), size), dtype=np.int64)
    vectors[inverse, bins] = counts
    keys = zip(*(c.take(pa.array(first)).to_pylist() for c in columns), strict=True)
    if not n_groups:
        return {(): vectors[0]}
    return {tuple(key): vectors[g] for g, key in enumerate(keys)}


def _execute(
    con: duckdb.DuckDBPyConnection, compiled: CompiledQuery, dense: bool
) -> tuple[ExactCells, BinVectors]:
    cells = ExactCells()
    vectors: BinVectors = {}
    n_groups = len(compiled.group_columns)
    if compiled.setup:
        con.execute(compiled.setup, list(compiled.params))
    if compiled.scalars:
        sql, params = compiled.statement(compiled.scalars)
        for row in con.execute(sql, params).fetchall():
            values = zip(compiled.scalar_keys, row[n_groups:], strict=True)
            cells.scalars[tuple(row[:n_groups])] = {k: int(v or 0) for k, v in values}
    for key, bins_sql in compiled.bins.items():
        sql, params = compiled.statement(bins_sql)
        if dense and key in compiled.dense:
            vectors[key] = _dense_bins(con, sql, params, n_groups, compiled.dense[key])
            continue
        per_group: dict[GroupKey, dict[int, int]] = {}
        for row in con.execute(sql, params).fetchall():
            per_group.setdefault(tuple(row[:n_groups]), {})[int(row[n_groups])] = int(
                row[n_groups + 1]
            )
        cells.bins[key] = per_group
    return cells, vectors


def run_arrow(
    compiled: CompiledQuery, tables: Mapping[str, pa.Table], memory_limit: str = "4GB"
) -> tuple[ExactCells, BinVectors]:
    """Execute ``compiled`` over ``tables`` (dataset id -> decrypted table) on a new connection."""
    con = connect(memory_limit)
    try:
        for dataset_id, sql_name in compiled.tables.items():
            con.register(sql_name, tables[dataset_id])
        con.execute("SET enable_external_access = false")
        return _execute(con, compiled, dense=True)
    finally:
        con.close()


def run_exact(
    compiled: CompiledQuery,
    tables: Mapping[str, pa.Table],
    memory_limit: str = "4GB",
) -> ExactCells:
    """Execute ``compiled`` over ``tables`` and return cells, every bin as a dict entry."""
    con = connect(memory_limit)
    try:
        for dataset_id, sql_name in compiled.tables.items():
            con.register(sql_name, tables[dataset_id])
        con.execute("SET enable_external_access = false")
        return _execute(con, compiled, dense=False)[0]
    finally:
        con.close()


def run_hot(
    compiled: CompiledQuery, hot: HotDatasets, tables: Mapping[str, HotTable]
) -> tuple[ExactCells, BinVectors]:
    """Execute ``compiled`` on the hot database; ``tables`` must stay pinned meanwhile."""
    cursor = hot.cursor()
    try:
        for dataset_id, sql_name in compiled.tables.items():
            hot_name = tables[dataset_id].name.replace('"', '""')
            cursor.execute(f'CREATE TEMP VIEW {sql_name} AS SELECT * FROM "{hot_name}"')
        return _execute(cursor, compiled, dense=True)
    finally:
        cursor.close()


def max_rows_per_customer(table: pa.Table) -> int:
    """The largest number of rows any one customer token has in ``table`` (0 when empty)."""
    con = connect()
    try:
        con.register("t", table)
        row = con.execute(
            f"SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM t GROUP BY {TOKEN})"
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0
