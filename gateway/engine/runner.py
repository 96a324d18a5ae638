"""Run compiled queries on DuckDB over in-memory Arrow tables.

Each query gets its own in-memory DuckDB connection that cannot spill to disk (no temp
directory: decrypted data never touches the disk) and cannot read files (external access is
switched off once the tables are registered). The result is exact cells keyed by group: they go
to the DP layer only, never to a caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa

from gateway.domain.cells import ExactCells, GroupKey
from gateway.engine.compiler import TOKEN, CompiledQuery


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
    return con


def run_exact(
    compiled: CompiledQuery,
    tables: Mapping[str, pa.Table],
    memory_limit: str = "4GB",
) -> ExactCells:
    """Execute ``compiled`` over ``tables`` (dataset id -> decrypted table) and return cells."""
    con = connect(memory_limit)
    cells = ExactCells()
    n_groups = len(compiled.group_columns)
    try:
        for dataset_id, sql_name in compiled.tables.items():
            con.register(sql_name, tables[dataset_id])
        con.execute("SET enable_external_access = false")
        con.execute(compiled.setup, list(compiled.params))
        if compiled.scalars:
            for row in con.execute(compiled.scalars).fetchall():
                values = zip(compiled.scalar_keys, row[n_groups:], strict=True)
                cells.scalars[tuple(row[:n_groups])] = {k: int(v or 0) for k, v in values}
        for key, sql in compiled.bins.items():
            per_group: dict[GroupKey, dict[int, int]] = {}
            for row in con.execute(sql).fetchall():
                per_group.setdefault(tuple(row[:n_groups]), {})[int(row[n_groups])] = int(
                    row[n_groups + 1]
                )
            cells.bins[key] = per_group
    finally:
        con.close()
    return cells


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
