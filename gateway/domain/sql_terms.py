"""The terms of a SQL query: conditions on dimensions, CASE buckets and aggregates.

:class:`TermReader` turns sqlglot nodes into the plan's :class:`Filter` / :class:`BoolOp`,
``CASE`` cases and :class:`Aggregate` values, and refuses anything else through
:class:`SqlSource`, naming the construct and where it is. Columns are resolved by the caller,
which knows the query's tables and aliases.

Example:
    >>> from gateway.domain.plan import ColumnRef
    >>> source = SqlSource.read("SELECT MEDIAN(spend_90d) FROM bigmart.loyalty")
    >>> reader = TermReader(source, lambda column: ColumnRef(column.name))
    >>> reader.aggregate(source.statement.expressions[0], None).alias
    'median_spend_90d'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal

from sqlglot import exp

from gateway.domain.plan import Aggregate, AggregateFn, BoolOp, ColumnRef, Filter, Predicate
from gateway.domain.sql_source import SqlSource, describe, flatten, function_name, unparen

SUPPORTED_AGGREGATES = (
    "COUNT(*), SUM, AVG, MEDIAN, QUANTILE_CONT (or QUANTILE) and PERCENTILE_CONT ... WITHIN GROUP"
)
_MAX_DEPTH = 16  # as the JSON plan: conditions nested deeper are refused
_MAX_VALUES = 10_000
_MAX_CASES = 1000
_MAX_LABEL = 200
_I64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"[0-9]+")
_DIMENSION_CONDITION = "a condition compares a dimension with a string or whole number"
_SIMPLE_AGGREGATES: dict[type[exp.Expr], tuple[AggregateFn, str]] = {
    exp.Sum: ("sum", "sum"),
    exp.Avg: ("mean", "mean"),
    exp.Median: ("quantile", "median"),
    exp.Anonymous: ("histogram", "histogram"),
}  # (plan fn, the JSON fn whose default output name this aggregate takes)


class TermReader:
    """Reads conditions, buckets and aggregates of one query; ``column`` resolves a column."""

    def __init__(self, source: SqlSource, column: Callable[[exp.Column], ColumnRef]) -> None:
        self.src = source
        self.column = column

    def predicate(self, node: exp.Expr, depth: int = 0) -> Predicate:
        """A condition on dimensions; ``depth`` counts the enclosing AND / OR / NOT."""
        node = unparen(node)
        if depth > _MAX_DEPTH:
            raise self.src.invalid(f"conditions are nested more than {_MAX_DEPTH} levels", node)
        if isinstance(node, exp.And | exp.Or):
            op: Literal["and", "or"] = "and" if isinstance(node, exp.And) else "or"
            items = flatten(node, type(node))
            return BoolOp(op, tuple(self.predicate(i, depth + 1) for i in items))
        if isinstance(node, exp.Not):
            inner = unparen(node.this)
            if isinstance(inner, exp.In):
                found = self._in(inner)
                return Filter(found.column, "not_in", found.values)
            return BoolOp("not", (self.predicate(inner, depth + 1),))
        if isinstance(node, exp.EQ | exp.NEQ):
            return self._comparison(node)
        if isinstance(node, exp.In):
            return self._in(node)
        if isinstance(node, exp.Between):
            if node.args.get("symmetric"):
                raise self.src.unsupported("BETWEEN SYMMETRIC", node, _DIMENSION_CONDITION)
            column = self._dimension(node.this, node)
            low, high = self._value(node.args["low"]), self._value(node.args["high"])
            if type(low) is not type(high):
                raise self.src.invalid(
                    "BETWEEN bounds must be of one type", node, "two strings or two whole numbers"
                )
            return Filter(column, "between", (low, high))
        construct = "a column on its own" if isinstance(node, exp.Column) else describe(node)
        raise self.src.unsupported(
            construct, node, "conditions use =, <>, IN, NOT IN, BETWEEN, AND, OR and NOT"
        )

    def _comparison(self, node: exp.EQ | exp.NEQ) -> Filter:
        left, right = unparen(node.this), unparen(node.expression)
        if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
            left, right = right, left
        if isinstance(right, exp.Column):
            raise self.src.unsupported(
                "a comparison of two columns",
                node,
                "compare a dimension with a literal; strings take single quotes ('north')",
            )
        column = self._dimension(left, node)
        return Filter(column, "eq" if isinstance(node, exp.EQ) else "ne", (self._value(right),))

    def _in(self, node: exp.In) -> Filter:
        for key in ("query", "unnest", "field"):
            if node.args.get(key):
                construct = "a subquery" if key == "query" else f"IN {key.upper()}"
                raise self.src.unsupported(construct, node, "IN takes a list of literals")
        column = self._dimension(node.this, node)
        if not 1 <= len(node.expressions) <= _MAX_VALUES:
            raise self.src.invalid(f"IN lists 1 to {_MAX_VALUES:,} values", node)
        return Filter(column, "in", tuple(self._value(v) for v in node.expressions))

    def _dimension(self, node: exp.Expr, condition: exp.Expr) -> ColumnRef:
        node = unparen(node)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal | exp.Neg | exp.Null | exp.Boolean):
            raise self.src.unsupported(
                "a condition without a column", condition, _DIMENSION_CONDITION
            )
        raise self.src.unsupported(describe(node), node, _DIMENSION_CONDITION)

    def _value(self, node: exp.Expr) -> str | int:
        node = unparen(node)
        digits, sign = node, 1
        if isinstance(node, exp.Neg):
            digits, sign = unparen(node.this), -1
        if isinstance(digits, exp.Literal):
            if digits.is_string and sign == 1:
                return str(digits.this)
            if not digits.is_string and _INTEGER.fullmatch(str(digits.this)):
                value = sign * int(str(digits.this))
                if not _I64[0] <= value <= _I64[1]:
                    raise self.src.invalid("integer values must fit in 64 bits", node)
                return value
            if not digits.is_string:
                raise self.src.unsupported(
                    "a number that is not whole", node, "values are strings or whole numbers"
                )
        raise self.src.unsupported(
            describe(node), node, "values are string literals ('north') or whole numbers"
        )

    def bucket(self, node: exp.Case) -> tuple[tuple[tuple[Predicate, str], ...], str | None]:
        """The ``(condition, label)`` cases and the ELSE label (None without one) of a CASE."""
        subject = node.this
        ifs = node.args.get("ifs") or []
        if len(ifs) > _MAX_CASES:
            raise self.src.invalid(f"a CASE bucket has at most {_MAX_CASES} WHEN", node)
        cases: list[tuple[Predicate, str]] = []
        for case in ifs:
            when: Predicate
            if subject is not None:  # CASE column WHEN 'value' THEN ...
                when = Filter(self._dimension(subject, node), "eq", (self._value(case.this),))
            else:
                when = self.predicate(case.this, 0)
            cases.append((when, self._label(case.args.get("true"), node)))
        default = node.args.get("default")
        label = (
            None if default is None or isinstance(default, exp.Null) else self._label(default, node)
        )
        return tuple(cases), label

    def _label(self, node: exp.Expr | None, case: exp.Case) -> str:
        if not isinstance(node, exp.Literal) or not node.is_string:
            raise self.src.unsupported(
                "a bucket label that is not a string", node or case, "THEN and ELSE take 'labels'"
            )
        label = str(node.this)
        if not 1 <= len(label) <= _MAX_LABEL:
            raise self.src.invalid(f"a bucket label has 1 to {_MAX_LABEL} characters", node)
        return label

    def aggregate(self, node: exp.Expr, alias: str | None) -> Aggregate:
        """One aggregate; without ``alias`` it is named as the JSON plan names it."""
        fn: AggregateFn
        q: float | None = None
        column: ColumnRef | None = None
        if isinstance(node, exp.Count):
            if isinstance(node.this, exp.Distinct):
                raise self.src.unsupported(
                    "COUNT(DISTINCT ...)",
                    node,
                    "the gateway counts customers' rows, and each customer contributes at most "
                    "the policy's max_rows_per_unit rows, so COUNT(*) over one-row-per-customer "
                    "data already counts customers",
                )
            if not isinstance(node.this, exp.Star) or node.expressions:
                raise self.src.unsupported(
                    f"COUNT of {'a column or value' if node.this else 'nothing'}",
                    node,
                    "the gateway counts customers' rows: write COUNT(*)",
                )
            fn, name = "count", "count"
        elif isinstance(node, exp.Sum | exp.Avg | exp.Median) or is_histogram(node):
            fn, name = _SIMPLE_AGGREGATES[type(node)]
            argument = node.expressions[0] if is_histogram(node) else node.this
            if is_histogram(node) and len(node.expressions) != 1:
                raise self.src.unsupported("HISTOGRAM with bins", node, "bins come from the policy")
            column = self._measure(argument, node)
            q = 0.5 if name == "median" else None
        elif isinstance(node, exp.Quantile | exp.PercentileCont):
            fn, name = "quantile", "quantile"
            quantile = node.args.get("quantile") or node.expression
            if quantile is None:
                raise self.src.unsupported(
                    "PERCENTILE_CONT(q) without WITHIN GROUP",
                    node,
                    "write PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY c)",
                )
            column, q = self._measure(node.this, node), self._quantile(quantile)
        elif isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
            fn, name = "quantile", "quantile"
            order = node.expression
            keys = order.expressions if isinstance(order, exp.Order) else []
            if node.this.expression is not None or len(keys) != 1 or keys[0].args.get("desc"):
                raise self.src.unsupported(
                    "this WITHIN GROUP", node, "write PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY c)"
                )
            column, q = self._measure(keys[0].this, node), self._quantile(node.this.this)
        else:
            inner = node.this if isinstance(node, exp.WithinGroup) else node
            discrete = isinstance(inner, exp.PercentileDisc | exp.ApproxQuantile)
            raise self.src.unsupported(
                f"the aggregate {function_name(inner)}()",
                node,
                ("discrete and approximate quantiles are not; " if discrete else "")
                + f"supported are {SUPPORTED_AGGREGATES}",
            )
        if alias is None:
            alias = name if column is None else f"{name}_{column.name}"
            if not is_name(alias):
                raise self.src.invalid(
                    "the output name made from the column is not a valid name",
                    node,
                    "name it with AS",
                )
        return Aggregate(fn=fn, alias=alias, column=column, q=q)

    def _measure(self, node: exp.Expr | None, aggregate: exp.Expr) -> ColumnRef:
        node = unparen(node) if node is not None else None
        if isinstance(node, exp.Distinct):
            raise self.src.unsupported(
                f"{function_name(aggregate)}(DISTINCT ...)",
                aggregate,
                "aggregates read every bounded row",
            )
        if not isinstance(node, exp.Column):
            raise self.src.unsupported(
                f"{describe(node) if node is not None else 'nothing'} inside an aggregate",
                node or aggregate,
                "an aggregate takes one column",
            )
        return self.column(node)

    def _quantile(self, node: exp.Expr) -> float:
        node = unparen(node)
        if isinstance(node, exp.Array | exp.Tuple):
            raise self.src.unsupported("several quantiles in one call", node, "one q per call")
        if isinstance(node, exp.Literal) and not node.is_string:
            q = float(str(node.this))
            if math.isfinite(q) and 0 < q < 1:
                return q
        raise self.src.invalid("a quantile needs q strictly between 0 and 1", node)


def is_histogram(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.upper() == "HISTOGRAM"


def is_name(value: str) -> bool:
    """The JSON plan's rule for output names: 1..128 letters, digits, ``_`` and ``-``."""
    return 0 < len(value) <= 128 and all(ch.isalnum() or ch in "_-" for ch in value)
