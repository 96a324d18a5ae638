"""Compile a checked query into bounded SQL over the datasets' tokenised tables.

The SQL bounds each customer's contribution before anything is aggregated:

* each dataset keeps at most ``max_rows_per_unit`` rows per customer token (a random choice of
  rows), unless the ingest statistics show the bound already holds;
* datasets are joined on the token only;
* each customer keeps rows in at most ``max_groups_per_unit`` groups (a random choice of
  groups), unless the bound already holds (one joined row per customer, say);
* rows outside the public group-key domain are dropped;
* measures are clamped to the policy bounds, scaled to fixed point and rounded to integers, so
  sums are exact integer sums whose sensitivity the policy fixes.

Every statistic of a query must read the same bounded rows. When bounding draws random rows or
groups, the bounded, joined rows are materialised once per query (in memory) as table ``j``;
when the ingest statistics show that every bound already holds, the rows are a function of the
data alone, and each statement reads ``j`` as a common table expression instead (nothing is
materialised). Filter values and keys travel as bound parameters, never spliced into the text.

Over the hot tables of :mod:`gateway.engine.hot` a measure's clamped fixed-point value is read
from its precomputed column (the same integers the inline expression gives), and a centred sum
is ``SUM(x) - mid · COUNT(x)``, the same integer as the sum of ``x - mid``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.domain.checker import (
    CheckedQuery,
    ResolvedBool,
    ResolvedColumn,
    ResolvedPredicate,
    Statistic,
)
from gateway.engine.hot import HotTable

TOKEN = "_token"
_PICK = "_gateway_pick"  # per-row random number that picks which rows a customer keeps
JOINED = "j"


def quote(identifier: str) -> str:
    """Quote an SQL identifier for DuckDB."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class CompiledQuery:
    """``setup`` builds the bounded joined table; ``scalars`` and ``bins`` aggregate it.

    When ``setup`` is empty, ``rows`` is the bounded rows' SELECT (taking ``params``) and every
    statement reads it as the common table expression ``j`` (:meth:`statement`).
    """

    setup: str
    params: tuple[object, ...]
    scalars: str  # empty when the query has no count or sum statistic
    scalar_keys: tuple[str, ...]
    bins: Mapping[str, str]  # statistic key -> SQL returning (groups..., bin, count)
    group_columns: tuple[str, ...]
    tables: Mapping[str, str]  # dataset id -> SQL table name the runner must register
    rows: str = ""
    dense: Mapping[str, int] = field(default_factory=dict)
    """Statistic key -> number of bins, for bins best returned as one dense vector per group
    (quantile grids: up to 2^18 bins)."""

    def statement(self, sql: str) -> tuple[str, list[object]]:
        """``sql`` (reading ``j``) ready to run, with its parameters."""
        if self.setup or not self.rows:
            return sql, []
        return f"WITH {JOINED} AS ({self.rows}) {sql}", list(self.params)


def group_columns(
    checked: CheckedQuery,
    use: Callable[[ResolvedColumn], str],
    select: list[str],
    select_params: list[object],
    predicates: list[str],
    where_params: list[object],
) -> list[str]:
    """Add each group key to ``select`` as ``g<i>`` and return those names.

    A column key selects the column and, in ``predicates``, keeps its public keys (or drops its
    nulls); a bucket key is a ``CASE`` whose labels go to ``select_params``.
    """
    group_names: list[str] = []
    for i, group in enumerate(checked.group_by):
        name = f"g{i}"
        if group.column is not None:
            ref = use(group.column)
            select.append(f"{ref} AS {name}")
            if group.keys is not None:
                where_params.extend(group.keys)
                predicates.append(f"{ref} IN ({', '.join('?' for _ in group.keys)})")
            else:
                predicates.append(f"{ref} IS NOT NULL")
        else:
            whens = []
            for when, label in group.cases:
                condition = _predicate_sql(when, use, select_params)
                select_params.append(label)
                whens.append(f"WHEN COALESCE({condition}, FALSE) THEN ?")
            default = "NULL"
            if group.default is not None:
                select_params.append(group.default)
                default = "?"
            select.append(f"CASE {' '.join(whens)} ELSE {default} END AS {name}")
        group_names.append(name)
    return group_names


def _predicate_sql(p: ResolvedPredicate, ref: object, params: list[object]) -> str:
    if isinstance(p, ResolvedBool):
        parts = [_predicate_sql(i, ref, params) for i in p.items]
        if p.op == "not":
            # SQL's three-valued logic: NOT of unknown (a null value) stays unknown, so a row
            # with a null value satisfies neither ``x = v`` nor ``NOT x = v`` (as ``<>`` does).
            return f"(NOT {parts[0]})"
        return "(" + f" {p.op.upper()} ".join(parts) + ")"
    column = ref(p.column)  # type: ignore[operator]
    params.extend(p.values)
    marks = ", ".join("?" for _ in p.values)
    return {
        "eq": f"({column} = ?)",
        "ne": f"({column} <> ?)",
        "in": f"({column} IN ({marks}))",
        "not_in": f"({column} NOT IN ({marks}))",
        "between": f"({column} BETWEEN ? AND ?)",
    }[p.op]


def _clamped(col: str, stat: Statistic) -> str:
    lo, hi = stat.lo / stat.scale, stat.hi / stat.scale
    return f"LEAST(GREATEST(CAST({col} AS DOUBLE), {lo!r}), {hi!r})"


def _bin_expression(col: str, stat: Statistic) -> str:
    value = _clamped(col, stat)
    if stat.kind == "histogram":
        edges = stat.edges
        cases = " ".join(f"WHEN {value} < {edges[i + 1]!r} THEN {i}" for i in range(len(edges) - 2))
        last = len(edges) - 2
        return (
            f"CASE WHEN {value} < {edges[0]!r} OR {value} > {edges[-1]!r} THEN NULL "
            f"{cases} ELSE {last} END"
        )
    fixed = f"CAST(ROUND({value} * {stat.scale}) AS BIGINT)"
    return f"LEAST(({fixed} - {stat.lo}) // {stat.step}, {stat.candidates - 1})"


def compile_query(
    checked: CheckedQuery,
    max_rows_seen: Mapping[str, int],
    hot: Mapping[str, HotTable] | None = None,
) -> CompiledQuery:
    """Compile ``checked`` to SQL; ``max_rows_seen`` is each dataset's ingest statistic.

    ``hot`` (dataset id -> hot table) lets the SQL read the hot tables' precomputed columns;
    the result must then run on those tables (:func:`gateway.engine.runner.run_hot`).
    """
    if checked.aggregate:  # aggregate rows: no customer key to bound (gateway/engine/aggregate.py)
        from gateway.engine.aggregate import compile_aggregate_query

        return compile_aggregate_query(checked)
    tables = {ds.id: f"t{i}" for i, ds in enumerate(checked.datasets)}
    aliases = {ds.id: f"d{i}" for i, ds in enumerate(checked.datasets)}
    needed: dict[str, list[str]] = {ds.id: [] for ds in checked.datasets}

    def use(col: ResolvedColumn) -> str:
        if col.name not in needed[col.dataset]:
            needed[col.dataset].append(col.name)
        return f"{aliases[col.dataset]}.{quote(col.name)}"

    params: list[object] = []
    predicates = [_predicate_sql(p, use, params) for p in checked.filters]

    select: list[str] = []
    select_params: list[object] = []  # SELECT precedes WHERE in the text: its parameters too
    group_names = group_columns(checked, use, select, select_params, predicates, params)

    # A measure is read raw, or from a hot table's precomputed clamped fixed-point column.
    measure_refs: dict[str, str] = {}  # SQL reference -> column name in ``j``
    measured: dict[str, tuple[str, bool]] = {}  # statistic key -> (column in ``j``, fixed?)
    for stat in checked.statistics:
        if stat.column is None:
            continue
        table = hot.get(stat.column.dataset) if hot else None
        fixed = None
        if table is not None and stat.kind in ("sum", "csum", "quantile"):
            fixed = table.fixed_column(stat.column.name, stat.lo, stat.hi, stat.scale)
        if fixed is not None:
            if fixed not in needed[stat.column.dataset]:
                needed[stat.column.dataset].append(fixed)
            ref = f"{aliases[stat.column.dataset]}.{quote(fixed)}"
        else:
            ref = use(stat.column)
        name = measure_refs.setdefault(ref, f"m{len(measure_refs)}")
        measured[stat.key] = (name, fixed is not None)
    select += [f"{ref} AS {name}" for ref, name in measure_refs.items()]

    ctes = []
    joined_rows = 1
    random_rows = False
    for ds in checked.datasets:
        cols = ", ".join([TOKEN, *(quote(c) for c in needed[ds.id])])
        bound = ds.max_rows_per_unit
        seen = max_rows_seen.get(ds.id, bound + 1)
        joined_rows *= min(seen, bound)
        source = tables[ds.id]
        qualify = ""
        if seen > bound:
            # DuckDB refuses a volatile window ORDER BY, so the random draw is made a column first.
            source = f"(SELECT {cols}, random() AS {_PICK} FROM {source})"
            qualify = (
                f" QUALIFY row_number() OVER (PARTITION BY {TOKEN} ORDER BY {_PICK}) <= {bound}"
            )
            random_rows = True
        ctes.append(f"{aliases[ds.id]} AS (SELECT {cols} FROM {source}{qualify})")

    first = aliases[checked.datasets[0].id]
    joins = "".join(
        f" JOIN {aliases[ds.id]} ON {aliases[ds.id]}.{TOKEN} = {first}.{TOKEN}"
        for ds in checked.datasets[1:]
    )
    where = f" WHERE {' AND '.join(predicates)}" if predicates else ""
    columns = ", ".join([f"{first}.{TOKEN} AS {TOKEN}", *select])
    rows = f"SELECT {columns} FROM {first}{joins}{where}"
    null_groups = " AND ".join(f"{g} IS NOT NULL" for g in group_names)
    if null_groups:
        rows = f"SELECT * FROM ({rows}) WHERE {null_groups}"
    if group_names and joined_rows > checked.groups_per_customer:
        gs = ", ".join(group_names)
        picked = (
            f"SELECT {TOKEN}, {gs} FROM (SELECT {TOKEN}, {gs}, random() AS {_PICK} FROM "
            f"(SELECT DISTINCT {TOKEN}, {gs} FROM r)) QUALIFY row_number() OVER "
            f"(PARTITION BY {TOKEN} ORDER BY {_PICK}) <= {checked.groups_per_customer}"
        )
        ctes.append(f"r AS ({rows})")
        rows = f"SELECT r.* FROM r JOIN ({picked}) p USING ({TOKEN}, {gs})"
        random_rows = True
    bounded = f"WITH {', '.join(ctes)} {rows}"
    # Random bounding must be drawn once for all statistics: materialise it. Otherwise the
    # rows depend on the data alone and each statement may read them afresh.
    setup = f"CREATE TEMP TABLE {JOINED} AS {bounded}" if random_rows else ""

    group_list = ", ".join(group_names)
    group_by = f" GROUP BY {group_list}" if group_names else ""
    scalar_select: list[str] = []
    scalar_keys: list[str] = []
    bins: dict[str, str] = {}
    dense: dict[str, int] = {}
    for stat in checked.statistics:
        if stat.kind == "count":
            scalar_select.append("COUNT(*)")
        elif stat.kind in ("sum", "csum"):
            m, is_fixed = measured[stat.key]
            if is_fixed:
                # Null stays null in the fixed column: SUM and COUNT skip it, as 0 (or the
                # centre, in a centred sum) would add nothing below.
                total = f"CAST(COALESCE(SUM({m}), 0) AS HUGEINT)"
                if stat.kind == "csum":
                    total = f"({total} - CAST({stat.mid} AS HUGEINT) * COUNT({m}))"
                scalar_select.append(total)
            else:
                fixed_value = f"CAST(ROUND({_clamped(m, stat)} * {stat.scale}) AS BIGINT)"
                if stat.kind == "csum":
                    fixed_value = f"({fixed_value} - {stat.mid})"
                # An empty value of a nullable measure counts as 0 (GREATEST/LEAST would skip
                # it); in a centred sum it counts as the centre.
                value = f"CASE WHEN {m} IS NULL THEN 0 ELSE {fixed_value} END"
                scalar_select.append(f"CAST(COALESCE(SUM({value}), 0) AS HUGEINT)")
        else:
            m, is_fixed = measured[stat.key]
            if is_fixed:
                offset = f"{m} - {stat.lo}" if stat.lo else m
                binned = f"({offset}) // {stat.step}" if stat.step > 1 else offset
                expression = f"LEAST({binned}, {stat.candidates - 1})"
            else:
                expression = _bin_expression(m, stat)
            lead = f"{group_list}, " if group_names else ""
            bins[stat.key] = (
                f"SELECT {lead}b, COUNT(*) FROM (SELECT {lead}{expression} AS b "
                f"FROM {JOINED} WHERE {m} IS NOT NULL) WHERE b IS NOT NULL GROUP BY {lead}b"
            )
            if stat.kind == "quantile":
                dense[stat.key] = stat.candidates
            continue
        scalar_keys.append(stat.key)
    scalars = ""
    if scalar_select:
        scalars = f"SELECT {', '.join([*group_names, *scalar_select])} FROM {JOINED}{group_by}"
    return CompiledQuery(
        setup=setup,
        params=(*select_params, *params),
        scalars=scalars,
        scalar_keys=tuple(scalar_keys),
        bins=bins,
        group_columns=tuple(group_names),
        tables=tables,
        rows="" if setup else bounded,
        dense=dense,
    )
