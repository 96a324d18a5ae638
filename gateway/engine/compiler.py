"""Compile a checked query into bounded SQL over the datasets' tokenised tables.

The SQL bounds each customer's contribution before anything is aggregated:

* each dataset keeps at most ``max_rows_per_unit`` rows per customer token (a random choice of
  rows), unless the ingest statistics show the bound already holds;
* datasets are joined on the token only;
* rows outside the public group-key domain are dropped;
* measures are scaled to fixed point, clamped to the policy bounds and rounded to integers, so
  sums are exact integer sums whose sensitivity the policy fixes.

Filter values travel as bound parameters, never spliced into the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.domain.checker import CheckedQuery, ResolvedColumn

TOKEN = "_token"
_PICK = "_gateway_pick"  # per-row random number that picks which rows a customer keeps


def quote(identifier: str) -> str:
    """Quote an SQL identifier for DuckDB."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    params: tuple[object, ...]
    group_columns: tuple[str, ...]
    statistic_columns: tuple[str, ...]
    tables: Mapping[str, str]  # dataset id -> SQL table name the runner must register


def compile_query(checked: CheckedQuery, max_rows_seen: Mapping[str, int]) -> CompiledQuery:
    """Compile ``checked`` to SQL; ``max_rows_seen`` is each dataset's ingest statistic."""
    tables = {ds.id: f"t{i}" for i, ds in enumerate(checked.datasets)}
    aliases = {ds.id: f"d{i}" for i, ds in enumerate(checked.datasets)}
    needed: dict[str, list[str]] = {ds.id: [] for ds in checked.datasets}

    def use(col: ResolvedColumn) -> str:
        if col.name not in needed[col.dataset]:
            needed[col.dataset].append(col.name)
        return f"{aliases[col.dataset]}.{quote(col.name)}"

    params: list[object] = []
    predicates: list[str] = []
    for f in checked.filters:
        ref = use(f.column)
        marks = ", ".join("?" for _ in f.values)
        params.extend(f.values)
        if f.op == "eq":
            predicates.append(f"{ref} = ?")
        elif f.op == "ne":
            predicates.append(f"{ref} <> ?")
        elif f.op == "in":
            predicates.append(f"{ref} IN ({marks})")
        else:
            predicates.append(f"{ref} NOT IN ({marks})")

    group_select: list[str] = []
    group_names: list[str] = []
    for i, col in enumerate(checked.group_by):
        ref = use(col)
        keys = col.rule.keys or ()
        params.extend(keys)
        predicates.append(f"{ref} IN ({', '.join('?' for _ in keys)})")
        group_select.append(f"{ref} AS g{i}")
        group_names.append(f"g{i}")

    stat_select: list[str] = []
    stat_names: list[str] = []
    for i, stat in enumerate(checked.statistics):
        name = f"s{i}"
        if stat.kind == "count":
            stat_select.append(f"COUNT(*) AS {name}")
        else:
            assert stat.column is not None
            ref = use(stat.column)
            # Clamp before the cast: a large finite value would overflow BIGINT, failing the
            # query after its budget was reserved (and DuckDB's error would echo the value).
            scaled = f"CAST({ref} AS DOUBLE) * {stat.scale}"
            clamped = f"LEAST(GREATEST({scaled}, {stat.lo}), {stat.hi})"
            # An empty value of a nullable measure counts as 0 (GREATEST/LEAST would skip it).
            fixed = f"CASE WHEN {ref} IS NULL THEN 0 ELSE CAST(ROUND({clamped}) AS BIGINT) END"
            stat_select.append(f"CAST(COALESCE(SUM({fixed}), 0) AS HUGEINT) AS {name}")
        stat_names.append(name)

    ctes = []
    for ds in checked.datasets:
        cols = ", ".join([TOKEN, *(quote(c) for c in needed[ds.id])])
        bound = ds.max_rows_per_unit
        source = tables[ds.id]
        qualify = ""
        if max_rows_seen.get(ds.id, bound + 1) > bound:
            # DuckDB refuses a volatile window ORDER BY, so the random draw is made a column first.
            source = f"(SELECT {cols}, random() AS {_PICK} FROM {source})"
            qualify = (
                f" QUALIFY row_number() OVER (PARTITION BY {TOKEN} ORDER BY {_PICK}) <= {bound}"
            )
        ctes.append(f"{aliases[ds.id]} AS (SELECT {cols} FROM {source}{qualify})")

    first = aliases[checked.datasets[0].id]
    joins = "".join(
        f" JOIN {aliases[ds.id]} ON {aliases[ds.id]}.{TOKEN} = {first}.{TOKEN}"
        for ds in checked.datasets[1:]
    )
    where = f" WHERE {' AND '.join(predicates)}" if predicates else ""
    select = ", ".join([*group_select, *stat_select])
    group = f" GROUP BY {', '.join(group_names)}" if group_names else ""
    sql = f"WITH {', '.join(ctes)} SELECT {select} FROM {first}{joins}{where}{group}"
    return CompiledQuery(
        sql=sql,
        params=tuple(params),
        group_columns=tuple(group_names),
        statistic_columns=tuple(stat_names),
        tables=tables,
    )
