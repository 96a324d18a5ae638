"""SQL front end: a small subset of SQL compiled to the same :class:`QueryPlan` as the JSON plan.

The subset (read with sqlglot's DuckDB dialect)::

    SELECT <dimension> | CASE WHEN <condition> THEN 'label' ... [ELSE 'label'] END AS <name>
         | COUNT(*) | SUM(c) | AVG(c) | MEDIAN(c) | QUANTILE(c, q) | QUANTILE_CONT(c, q)
         | PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY c) | HISTOGRAM(c)      [AS <name>], ...
    FROM owner.dataset [AS a] [[INNER] JOIN owner.dataset [AS b] ON a.<key> = b.<key>] ...
    [WHERE <condition>]   -- =, <>, IN, NOT IN, BETWEEN, AND, OR, NOT; string or integer literals
    [GROUP BY <dimension | bucket name | position | CASE expression>, ...]

A dataset is ``owner.name``, written schema-qualified (``bigmart.loyalty``,
``"probe-retail".insights``) or as one quoted name (``"bigmart.loyalty"``). A column is
``name``, ``alias.name``, ``owner.dataset.name`` or ``"owner.dataset".name``; a qualified column
becomes ``ColumnRef(name, dataset)``, an unqualified one stays unqualified. Names keep the case
they are written in. Everything else is refused with :class:`UnsupportedQuery` naming the construct
and its line and column; text that does not parse is an :class:`InvalidRequest`.

Canonical form, so that the same question compiles to the same plan (and replays): top-level
``AND`` terms become the plan's ``where`` list; chains of ``AND`` / ``OR`` are flattened;
``NOT x IN (...)`` is ``not_in``; ``'north' = region`` is ``region = 'north'``; the plan's
``group_by`` follows the ``GROUP BY`` clause, whose items must all be selected (and vice versa).
An aggregate without ``AS`` is named as the JSON plan names it: ``count``, ``sum_<column>``,
``mean_<column>`` (AVG), ``median_<column>``, ``quantile_<column>``, ``histogram_<column>``.

The plan has no place for the join condition: :func:`parse_sql_query` also returns the columns
on each side of each ``ON``, for the checker to verify they are the datasets' customer keys.

Example:
    >>> plan = parse_sql("SELECT region, COUNT(*) AS n FROM bigmart.loyalty GROUP BY region")
    >>> plan.group_by, plan.aggregates[0].fn
    ((ColumnRef(name='region', dataset=None),), 'count')
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import TokenType, exp

from gateway.domain.errors import InvalidRequest
from gateway.domain.plan import Aggregate, Bucket, ColumnRef, GroupItem, QueryPlan, parse_plan
from gateway.domain.sql_source import SqlSource, describe, flatten, unparen
from gateway.domain.sql_terms import SUPPORTED_AGGREGATES, TermReader, is_histogram, is_name

__all__ = ["JoinColumn", "parse_sql", "parse_sql_query"]

JoinColumn = tuple[str, str]
"""``(dataset id, column name)``: one side of a join condition."""

_RESERVED = frozenset({"suppressed"})  # as the JSON plan: a release row's flag
_JOIN_WORDS = frozenset(
    {"JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "NATURAL", "SEMI", "ANTI"}
    | {"ASOF", "POSITIONAL", "GLOBAL", ","}
)  # the words that may open a join, before its table

# Clauses of SELECT outside the subset: (construct, keyword that introduces it, reason).
_CLAUSES: dict[str, tuple[str, frozenset[TokenType], str]] = {
    "with": (
        "WITH (a common table expression)",
        frozenset({TokenType.WITH}),
        "write one SELECT over the datasets",
    ),
    "distinct": (
        "SELECT DISTINCT",
        frozenset({TokenType.DISTINCT}),
        "a release already has one row per group; use GROUP BY",
    ),
    "having": (
        "HAVING",
        frozenset({TokenType.HAVING}),
        "conditions on aggregates would read exact values; filter dimensions in WHERE",
    ),
    "order": (
        "ORDER BY",
        frozenset({TokenType.ORDER_BY}),
        "a release lists its groups in the order of their keys",
    ),
    "limit": (
        "LIMIT",
        frozenset({TokenType.LIMIT, TokenType.FETCH}),
        "a release holds every group",
    ),
    "offset": ("OFFSET", frozenset({TokenType.OFFSET}), "a release holds every group"),
    "qualify": ("QUALIFY", frozenset({TokenType.QUALIFY}), ""),
    "windows": ("WINDOW", frozenset({TokenType.WINDOW}), ""),
    "laterals": ("LATERAL", frozenset({TokenType.LATERAL}), ""),
    "into": ("SELECT INTO", frozenset({TokenType.INTO}), "queries only read"),
    "pivots": ("PIVOT", frozenset({TokenType.PIVOT}), ""),
}
_SELECT_ARGS = frozenset({"expressions", "from", "joins", "where", "group"})


def parse_sql(text: str) -> QueryPlan:
    """Compile one SQL query to the canonical plan (see the module docstring for the subset).

    Example:
        >>> parse_sql("SELECT AVG(spend_90d) FROM bigmart.loyalty").aggregates[0].alias
        'mean_spend_90d'

    Raises:
        InvalidRequest: the SQL does not parse, or is wrong (naming line and column).
        UnsupportedQuery: valid SQL outside the subset (naming the construct, line and column).
    """
    return parse_sql_query(text)[0]


def parse_sql_query(text: str) -> tuple[QueryPlan, list[JoinColumn]]:
    """Like :func:`parse_sql`, also returning the columns each ``JOIN ... ON`` compares.

    For ``FROM a JOIN b ON a.k = b.id`` the list is ``[("<a>", "k"), ("<b>", "id")]``: per join,
    the earlier dataset's column, then the joined one's. The plan joins on customer keys only,
    so the caller must check that each is its dataset's customer key.

    Example:
        >>> plan, on = parse_sql_query(
        ...     "SELECT COUNT(*) FROM bigmart.loyalty l JOIN acme.survey s"
        ...     " ON s.customer_id = l.customer_key")
        >>> plan.join, on
        (('acme.survey',), [('bigmart.loyalty', 'customer_key'), ('acme.survey', 'customer_id')])
    """
    source = SqlSource.read(text)
    statement = source.statement
    if isinstance(statement, exp.Union | exp.Intersect | exp.Except):
        word = type(statement).__name__.upper()
        offset = source.keyword_offset(frozenset({getattr(TokenType, word)}))
        raise source.unsupported(word, None, "send one SELECT query", offset)
    if not isinstance(statement, exp.Select):
        raise source.unsupported(
            "a query in parentheses" if isinstance(statement, exp.Subquery) else "this statement",
            statement,
            "send one SELECT query",
        )
    return _Compiler(source, statement).compile()


@dataclass(frozen=True)
class _Output:
    """One SELECT item: a group key (column or bucket) or an aggregate, under its output name."""

    node: exp.Expr
    name: str
    group: GroupItem | None = None
    aggregate: Aggregate | None = None


class _Compiler:
    def __init__(self, source: SqlSource, select: exp.Select) -> None:
        self.src = source
        self.select = select
        self.datasets: list[str] = []
        # alias, table name or dataset id -> dataset id (None: it names several tables)
        self.qualifiers: dict[str, str | None] = {}
        self.join_columns: list[JoinColumn] = []
        self.terms = TermReader(source, self._column)

    def compile(self) -> tuple[QueryPlan, list[JoinColumn]]:
        self._refuse_clauses()
        self._read_from()
        outputs = [self._output(item) for item in self.select.expressions]
        self._check_names(outputs)
        where_clause = self.select.args.get("where")
        where = (
            tuple(self.terms.predicate(term, 0) for term in flatten(where_clause.this, exp.And))
            if where_clause is not None
            else ()
        )
        group_by = self._group_by(outputs)
        aggregates = tuple(o.aggregate for o in outputs if o.aggregate is not None)
        if not aggregates:
            raise self.src.unsupported(
                "a query without an aggregate",
                self.select.expressions[0] if outputs else None,
                f"select at least one of {SUPPORTED_AGGREGATES}",
            )
        plan = QueryPlan(
            from_=self.datasets[0],
            join=tuple(self.datasets[1:]),
            where=where,
            group_by=group_by,
            aggregates=aggregates,
        )
        try:  # the JSON parser's rules, so that SQL can express no plan JSON could not
            parse_plan(plan.canonical())
        except InvalidRequest as err:
            raise InvalidRequest(f"sql: {err.message}") from None
        return plan, self.join_columns

    # ---- clauses, FROM and JOIN -----------------------------------------------------------

    def _refuse_clauses(self) -> None:
        refusals: list[tuple[int, str, exp.Expr | None, str, int | None]] = []
        for key, value in self.select.args.items():
            name = key.rstrip("_")
            if name in _SELECT_ARGS or not value:
                continue
            construct, keywords, reason = _CLAUSES.get(name, (name.upper(), frozenset(), ""))
            node: exp.Expr | None = value if isinstance(value, exp.Expression) else None
            offset = self.src.keyword_offset(keywords, node) if keywords else self.src.start(node)
            order = offset if offset is not None else len(self.src.text)
            refusals.append((order, construct, node, reason, offset))
        if refusals:  # the first in the text
            _, construct, first, reason, offset = min(refusals, key=lambda r: r[0])
            raise self.src.unsupported(construct, first, reason, offset)

    def _read_from(self) -> None:
        from_ = self.select.args.get("from_") or self.select.args.get("from")
        if from_ is None:
            raise self.src.invalid("a query needs FROM <owner.dataset>", None)
        self._add_table(from_.this)
        for join in self.select.args.get("joins") or []:
            self._join(join)

    def _add_table(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Subquery | exp.Select):
            raise self.src.unsupported("a subquery in FROM", node, "name datasets directly")
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            raise self.src.unsupported(
                "this FROM item", node, "FROM and JOIN name datasets as owner.name"
            )
        for key, value in node.args.items():
            if key not in ("this", "db", "catalog", "alias") and value:
                construct = {"sample": "TABLESAMPLE", "joins": "a parenthesised join"}.get(key)
                raise self.src.unsupported(construct or f"{key.upper()} on a table", node)
        alias = node.args.get("alias")
        if alias is not None and alias.columns:
            raise self.src.unsupported(
                "column aliases on a table", node, "name columns as they are"
            )
        catalog, db, name = node.text("catalog"), node.text("db"), node.name
        dataset = f"{db}.{name}" if db else name
        parts = dataset.split(".")
        if catalog or len(parts) != 2 or not all(is_name(p) for p in parts):
            raise self.src.invalid(
                "a dataset is named owner.name",
                node,
                'write bigmart.loyalty, "probe-retail".insights or "bigmart.loyalty"',
            )
        if dataset in self.datasets:
            raise self.src.invalid(
                "a dataset appears twice", node, "a dataset may appear only once"
            )
        self.datasets.append(dataset)
        for qualifier in {alias.name if alias is not None else name, dataset}:
            known = self.qualifiers.get(qualifier, dataset)
            self.qualifiers[qualifier] = dataset if known == dataset else None
        return dataset

    def _join(self, join: exp.Join) -> None:
        table = join.this
        offset = self.src.leading_words_offset(table, _JOIN_WORDS)
        side, kind = join.text("side").upper(), join.text("kind").upper()
        method = join.text("method").upper()
        only = "only [INNER] JOIN ... ON a.<customer key> = b.<customer key> is supported"
        if side or method or kind not in ("", "INNER"):
            words = " ".join(w for w in (method, side, kind) if w)
            raise self.src.unsupported(f"{words} JOIN", join, only, offset)
        if join.args.get("using"):
            raise self.src.unsupported("JOIN ... USING", join, only, offset)
        for key, value in join.args.items():
            if key not in ("this", "on", "side", "kind", "method", "using") and value:
                raise self.src.unsupported(
                    f"{key.rstrip('_').upper()} in a join", join, only, offset
                )
        on = join.args.get("on")
        if on is None:
            raise self.src.unsupported(
                "a join without ON (a comma-separated FROM list or CROSS JOIN)", join, only, offset
            )
        joined = self._add_table(table)
        condition = unparen(on)
        if isinstance(condition, exp.And):
            raise self.src.unsupported("a join on more than one condition", condition, only)
        if not (
            isinstance(condition, exp.EQ)
            and isinstance(condition.this, exp.Column)
            and isinstance(condition.expression, exp.Column)
        ):
            raise self.src.unsupported("this join condition", condition, only)
        left, right = self._column(condition.this), self._column(condition.expression)
        if left.dataset is None or right.dataset is None:
            raise self.src.invalid(
                "each side of a join condition needs its table",
                condition,
                "write ON a.<key> = b.<key>",
            )
        if joined not in (left.dataset, right.dataset) or left.dataset == right.dataset:
            raise self.src.invalid(
                "the join condition must compare a column of the joined table with one of an "
                "earlier table",
                condition,
            )
        earlier, new = (left, right) if right.dataset == joined else (right, left)
        assert earlier.dataset is not None and new.dataset is not None
        self.join_columns += [(earlier.dataset, earlier.name), (new.dataset, new.name)]

    def _column(self, node: exp.Column) -> ColumnRef:
        if not isinstance(node.this, exp.Identifier):
            raise self.src.unsupported(
                "* (all columns)", node, "select dimensions and aggregates by name"
            )
        name, table, db = node.name, node.text("table"), node.text("db")
        if node.text("catalog") or "." in name or not name:
            raise self.src.invalid("a column is name, table.name or owner.dataset.name", node)
        if not table:
            return ColumnRef(name)
        qualifier = f"{db}.{table}" if db else table
        if qualifier not in self.qualifiers:
            raise self.src.invalid(
                "unknown table or alias",
                node,
                "qualify columns by a table of FROM or JOIN",
            )
        dataset = self.qualifiers[qualifier]
        if dataset is None:
            raise self.src.invalid(
                "the table qualifier names more than one table",
                node,
                "give each table its own alias",
            )
        return ColumnRef(name, dataset)

    # ---- SELECT and GROUP BY --------------------------------------------------------------

    def _output(self, item: exp.Expr) -> _Output:
        node, alias = item, None
        if isinstance(item, exp.Alias):
            node, alias = item.this, self._alias(item)
        node = unparen(node)
        if isinstance(node, exp.Column):
            column = self._column(node)
            if alias is not None and alias != column.name:
                raise self.src.unsupported(
                    "renaming a dimension (AS)", item, "a dimension is released under its own name"
                )
            return _Output(item, column.name, group=column)
        if isinstance(node, exp.Case):
            if alias is None:
                raise self.src.unsupported(
                    "a CASE bucket without a name", item, "name it: CASE ... END AS <name>"
                )
            cases, default = self.terms.bucket(node)
            return _Output(item, alias, group=Bucket(alias, cases, default))
        if isinstance(node, exp.AggFunc | exp.WithinGroup) or is_histogram(node):
            aggregate = self.terms.aggregate(node, alias)
            return _Output(item, aggregate.alias, aggregate=aggregate)
        if isinstance(node, exp.Filter):
            raise self.src.unsupported(
                "FILTER (WHERE ...) on an aggregate", item, "put the condition in WHERE"
            )
        if isinstance(node, exp.Star):
            raise self.src.unsupported("SELECT *", item, "select dimensions and aggregates by name")
        if isinstance(node, exp.Literal | exp.Null | exp.Boolean):
            raise self.src.unsupported(
                "a literal in SELECT", item, "select dimensions, CASE buckets and aggregates"
            )
        raise self.src.unsupported(
            f"{describe(node)} in SELECT",
            item,
            f"select dimensions, CASE buckets and the aggregates {SUPPORTED_AGGREGATES}",
        )

    def _alias(self, item: exp.Alias) -> str:
        name = item.alias
        if not is_name(name):
            raise self.src.invalid(
                "an output name (AS) may hold only letters, digits, _ and -, at most 128",
                item.args.get("alias"),
            )
        return name

    def _group_by(self, outputs: list[_Output]) -> tuple[GroupItem, ...]:
        group = self.select.args.get("group")
        selected = [o for o in outputs if o.group is not None]
        keys = [o.group for o in selected if o.group is not None]
        for key, value in group.args.items() if group is not None else ():
            if key != "expressions" and value:
                construct = {"all": "GROUP BY ALL", "grouping_sets": "GROUPING SETS"}.get(key)
                offset = self.src.keyword_offset(frozenset({TokenType.GROUP_BY}))
                raise self.src.unsupported(construct or key.upper(), group, "", offset)
        order: list[int] = []
        for node in group.expressions if group is not None else []:
            item = self._group_item(node, outputs)
            hits = [i for i, key in enumerate(keys) if _same(key, item)]
            if not hits:
                raise self.src.unsupported(
                    "grouping by something not selected",
                    node,
                    "the release shows every group key: select it",
                )
            if isinstance(item, ColumnRef) and item.dataset is not None:
                keys[hits[0]] = item  # the most qualified mention names the column
            if hits[0] not in order:
                order.append(hits[0])
        for i, output in enumerate(selected):
            if i not in order:
                raise self.src.invalid(
                    "a selected column is not grouped", output.node, "add it to GROUP BY"
                )
        return tuple(keys[i] for i in order)

    def _group_item(self, node: exp.Expr, outputs: list[_Output]) -> GroupItem:
        node = unparen(node)
        if isinstance(node, exp.Literal) and not node.is_string and node.name.isdigit():
            k = int(node.name)
            if 1 <= k <= len(outputs):
                target = outputs[k - 1].group
                if target is None:
                    raise self.src.invalid(f"GROUP BY {k} refers to an aggregate", node)
                return target
            raise self.src.invalid(f"GROUP BY {k}: the SELECT list has {len(outputs)} items", node)
        if isinstance(node, exp.Column):
            if not node.text("table") and isinstance(node.this, exp.Identifier):
                for output in outputs:
                    if output.name == node.name and isinstance(output.group, Bucket):
                        return output.group
                    if output.name == node.name and output.aggregate is not None:
                        raise self.src.invalid("GROUP BY names an aggregate's output", node)
            return self._column(node)
        if isinstance(node, exp.Case):
            cases, default = self.terms.bucket(node)
            for output in outputs:
                bucket = output.group
                if isinstance(bucket, Bucket) and (bucket.cases, bucket.default) == (
                    cases,
                    default,
                ):
                    return bucket
            raise self.src.unsupported(
                "a CASE in GROUP BY that is not selected",
                node,
                "select it as CASE ... END AS <name>",
            )
        raise self.src.unsupported(
            f"{describe(node)} in GROUP BY",
            node,
            "group by dimensions, bucket names or positions",
        )

    def _check_names(self, outputs: list[_Output]) -> None:
        seen: set[str] = set()
        for output in outputs:
            if output.name in _RESERVED:
                raise self.src.invalid(f"{output.name} is a reserved output name", output.node)
            if output.name in seen:
                raise self.src.invalid(
                    "an output name appears twice",
                    output.node,
                    "name each output with AS",
                )
            seen.add(output.name)


def _same(selected: GroupItem, grouped: GroupItem) -> bool:
    if isinstance(selected, ColumnRef) and isinstance(grouped, ColumnRef):
        return selected.name == grouped.name and (
            selected.dataset == grouped.dataset or None in (selected.dataset, grouped.dataset)
        )
    return selected == grouped
