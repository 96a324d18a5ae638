"""Compile a checked query over an aggregate dataset (or a benchmark network) to DuckDB SQL.

An aggregate dataset has no customer key, so there is nothing to bound per customer here: its
owner declared how many rows a customer can appear in and what one customer can add to a row,
uploads were checked against those declarations (``gateway/service/ingest_aggregate.py``), and
the checker set every sensitivity from them. What is left is exact integer arithmetic:

* a count is the sum of the count column (customers, not rows);
* a measure is clamped to ``count x per_unit_bounds`` (what uploads were checked against; a
  later, tighter declaration then still holds for rows stored before it), rounded to fixed
  point once per row (cents for floats) and summed as an integer;
* a centred sum (a mean's numerator) subtracts ``mid · count`` per row, integer throughout;
* rows outside the public group keys (or bucket labels) are dropped, as for customer tables.

A network's members are stacked with ``UNION ALL``, each row labelled with its member's
organisation in the network's member column (a bound parameter, like every key and filter
value). The result has the shape of :func:`gateway.engine.compiler.compile_query`'s, so the
same runner executes it and the same DP layer noises it.
"""

from __future__ import annotations

from gateway.domain.checker import CheckedQuery, ResolvedColumn, Statistic
from gateway.engine.compiler import JOINED, CompiledQuery, _predicate_sql, group_columns, quote

__all__ = ["compile_aggregate_query"]

_COUNT = "_count"
_SOURCE = "d"


def _fixed(column: str, stat: Statistic) -> str:
    """One row's value within ``count x per_unit_bounds``, in fixed-point units, exactly."""
    if stat.scale == 1:
        lo, hi = f"CAST({stat.lo} AS HUGEINT) * {_COUNT}", f"CAST({stat.hi} AS HUGEINT) * {_COUNT}"
        return f"LEAST(GREATEST(CAST({column} AS HUGEINT), {lo}), {hi})"
    lo, hi = f"{_COUNT} * {stat.lo / stat.scale!r}", f"{_COUNT} * {stat.hi / stat.scale!r}"
    value = f"LEAST(GREATEST(CAST({column} AS DOUBLE), {lo}), {hi})"
    return f"CAST(ROUND({value} * {stat.scale}) AS HUGEINT)"


def compile_aggregate_query(checked: CheckedQuery) -> CompiledQuery:
    """Compile ``checked`` (an aggregate dataset or a network of them) to SQL."""
    network = checked.network
    members = checked.datasets
    tables = {ds.id: f"t{i}" for i, ds in enumerate(members)}
    count_column = members[0].count_column
    assert count_column is not None
    needed: list[str] = []

    def use(col: ResolvedColumn) -> str:
        stored = network is None or col.name != network.member_column
        if stored and col.name not in needed:
            needed.append(col.name)
        return f"{_SOURCE}.{quote(col.name)}"

    select: list[str] = []
    select_params: list[object] = []
    where_params: list[object] = []
    predicates = [_predicate_sql(p, use, where_params) for p in checked.filters]
    group_names = group_columns(checked, use, select, select_params, predicates, where_params)

    measures: dict[str, str] = {}
    for stat in checked.statistics:
        if stat.column is not None and stat.column.name not in measures:
            measures[stat.column.name] = f"m{len(measures)}"
            select.append(f"{use(stat.column)} AS {measures[stat.column.name]}")
    select.append(f"{_SOURCE}.{quote(count_column)} AS {_COUNT}")
    if count_column not in needed:
        needed.append(count_column)

    columns = ", ".join(quote(c) for c in needed)
    source_params: list[object] = []
    if network is None:
        source = f"SELECT {columns} FROM {tables[members[0].id]}"
    else:
        label = quote(network.member_column)
        parts = []
        for ds in members:
            source_params.append(ds.owner)
            parts.append(f"SELECT ? AS {label}, {columns} FROM {tables[ds.id]}")
        source = " UNION ALL ".join(parts)
    where = f" WHERE {' AND '.join(predicates)}" if predicates else ""
    rows = f"SELECT {', '.join(select)} FROM ({source}) AS {_SOURCE}{where}"
    if group_names:
        rows = (
            f"SELECT * FROM ({rows}) WHERE {' AND '.join(f'{g} IS NOT NULL' for g in group_names)}"
        )
    setup = f"CREATE TEMP TABLE {JOINED} AS {rows}"

    scalar_select: list[str] = []
    scalar_keys: list[str] = []
    for stat in checked.statistics:
        if stat.kind == "count":
            value = _COUNT
        elif stat.kind in ("sum", "csum"):
            assert stat.column is not None
            m = measures[stat.column.name]
            fixed = _fixed(m, stat)
            if stat.kind == "csum":
                fixed = f"{fixed} - CAST({stat.mid} AS HUGEINT) * {_COUNT}"
            # An empty value of a nullable measure adds 0 (in a centred sum: the centre).
            value = f"CASE WHEN {m} IS NULL THEN 0 ELSE {fixed} END"
        else:
            raise AssertionError(f"{stat.kind} statistics are not offered on aggregate datasets")
        scalar_select.append(f"CAST(COALESCE(SUM({value}), 0) AS HUGEINT)")
        scalar_keys.append(stat.key)
    group_list = ", ".join(group_names)
    group_by = f" GROUP BY {group_list}" if group_names else ""
    scalars = f"SELECT {', '.join([*group_names, *scalar_select])} FROM {JOINED}{group_by}"
    return CompiledQuery(
        setup=setup,
        params=(*select_params, *source_params, *where_params),
        scalars=scalars,
        scalar_keys=tuple(scalar_keys),
        bins={},
        group_columns=tuple(group_names),
        tables=tables,
    )
