"""The canonical query plan: what an analyst asks, as frozen data.

Parsing (JSON today, SQL later) yields a :class:`QueryPlan`; the policy checker, the cost model,
the SQL compiler and the noise step each read it. A plan says nothing about noise or budget
beyond the requested ``epsilon`` carried by :class:`QueryRequest`.

Example:
    >>> request = parse_query_request({"plan": {"from": "bigmart.loyalty",
    ...     "aggregates": [{"fn": "count", "as": "n"}]}, "epsilon": 0.5})
    >>> request.plan.aggregates[0].fn
    'count'
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.domain.errors import InvalidRequest

AggregateFn = Literal["count", "sum", "mean"]
FilterOp = Literal["eq", "ne", "in", "not_in"]

_FNS = ("count", "sum", "mean")
_OPS: dict[str, FilterOp] = {
    "eq": "eq",
    "=": "eq",
    "==": "eq",
    "ne": "ne",
    "!=": "ne",
    "<>": "ne",
    "in": "in",
    "not_in": "not_in",
    "not in": "not_in",
}
_MAX_VALUES = 10_000
_I64 = (-(2**63), 2**63 - 1)  # int dimensions are stored as 64-bit integers
# Release rows use this key to flag a withheld group; an output of that name would hide the flag.
_RESERVED_NAMES = frozenset({"suppressed"})


@dataclass(frozen=True)
class ColumnRef:
    """A column, optionally qualified by its dataset (``owner.name.column``)."""

    name: str
    dataset: str | None = None

    def __str__(self) -> str:
        return f"{self.dataset}.{self.name}" if self.dataset else self.name

    @staticmethod
    def parse(text: object, field: str) -> ColumnRef:
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(f"{field}: must be a column name")
        parts = text.split(".")
        if len(parts) == 1:
            return ColumnRef(parts[0])
        if len(parts) == 3 and all(parts):
            return ColumnRef(parts[2], f"{parts[0]}.{parts[1]}")
        raise InvalidRequest(f"{field}: a column is 'name' or 'owner.dataset.name'")


@dataclass(frozen=True)
class Filter:
    """A predicate on a dimension column; values are literals from the analyst, not data."""

    column: ColumnRef
    op: FilterOp
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class Aggregate:
    fn: AggregateFn
    alias: str
    column: ColumnRef | None = None


@dataclass(frozen=True)
class QueryPlan:
    """Datasets joined on the customer key, filtered, grouped and aggregated."""

    from_: str
    join: tuple[str, ...]
    where: tuple[Filter, ...]
    group_by: tuple[ColumnRef, ...]
    aggregates: tuple[Aggregate, ...]

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.from_, *self.join)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form used for hashing (replays) and for the audit trail."""
        return {
            "from": self.from_,
            "join": list(self.join),
            "where": [
                {"column": str(f.column), "op": f.op, "values": list(f.values)} for f in self.where
            ],
            "group_by": [str(c) for c in self.group_by],
            "aggregates": [
                {"fn": a.fn, "as": a.alias, **({"column": str(a.column)} if a.column else {})}
                for a in self.aggregates
            ],
        }


@dataclass(frozen=True)
class QueryRequest:
    plan: QueryPlan
    epsilon: float
    sql: str | None = None

    def fingerprint(self) -> str:
        """Stable hash of what was asked: the same question asked again is a replay."""
        body = json.dumps({"plan": self.plan.canonical(), "epsilon": self.epsilon}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def _identifier(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise InvalidRequest(f"{field}: must be a non-empty name of at most 128 characters")
    if not all(ch.isalnum() or ch in "_-" for ch in value):
        raise InvalidRequest(f"{field}: may hold only letters, digits, '_' and '-'")
    return value


def _dataset_name(value: object, field: str) -> str:
    if not isinstance(value, str) or value.count(".") != 1:
        raise InvalidRequest(f"{field}: a dataset is named 'owner.name'")
    owner, name = value.split(".")
    _identifier(owner, field)
    _identifier(name, field)
    return value


def _literal(value: object, field: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest(f"{field}: filter values must be strings or integers")
    if isinstance(value, int) and not _I64[0] <= value <= _I64[1]:
        raise InvalidRequest(f"{field}: integer filter values must fit in 64 bits")
    return value


def _parse_filter(raw: object, i: int) -> Filter:
    field = f"plan.where[{i}]"
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{field}: must be an object {{column, op, value(s)}}")
    op = _OPS.get(str(raw.get("op", "")).lower())
    if op is None:
        raise InvalidRequest(f"{field}.op: must be one of eq, ne, in, not_in")
    column = ColumnRef.parse(raw.get("column"), f"{field}.column")
    if op in ("eq", "ne"):
        if "value" in raw:
            values: tuple[str | int, ...] = (_literal(raw["value"], f"{field}.value"),)
        else:
            vals = raw.get("values")
            if not isinstance(vals, list) or len(vals) != 1:
                raise InvalidRequest(f"{field}.value: '{op}' needs one value")
            values = (_literal(vals[0], f"{field}.values"),)
    else:
        vals = raw.get("values")
        if not isinstance(vals, list) or not vals or len(vals) > _MAX_VALUES:
            raise InvalidRequest(f"{field}.values: '{op}' needs a list of 1..{_MAX_VALUES} values")
        values = tuple(_literal(v, f"{field}.values") for v in vals)
    return Filter(column=column, op=op, values=values)


def _parse_aggregate(raw: object, i: int) -> Aggregate:
    field = f"plan.aggregates[{i}]"
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{field}: must be an object {{fn, column, as}}")
    fn = raw.get("fn")
    if fn not in _FNS:
        raise InvalidRequest(f"{field}.fn: must be one of {', '.join(_FNS)}")
    column = None
    if fn == "count":
        if raw.get("column") not in (None, "*"):
            raise InvalidRequest(f"{field}.column: count counts customers' rows; give no column")
    else:
        column = ColumnRef.parse(raw.get("column"), f"{field}.column")
    default_alias = fn if column is None else f"{fn}_{column.name}"
    alias = _identifier(raw.get("as", default_alias), f"{field}.as")
    return Aggregate(fn=fn, alias=alias, column=column)


def parse_plan(raw: object) -> QueryPlan:
    """Parse the JSON plan of DESIGN.md into a :class:`QueryPlan`.

    Raises:
        InvalidRequest: naming the field at fault.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("plan: must be an object")
    allowed = {"from", "join", "where", "group_by", "aggregates"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidRequest(
            f"plan.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})"
        )
    from_ = _dataset_name(raw.get("from"), "plan.from")
    join_raw = raw.get("join", [])
    if isinstance(join_raw, str):
        join_raw = [join_raw]
    if not isinstance(join_raw, list):
        raise InvalidRequest("plan.join: must be a list of dataset names")
    join = tuple(_dataset_name(j, f"plan.join[{i}]") for i, j in enumerate(join_raw))
    if len(set((from_, *join))) != len(join) + 1:
        raise InvalidRequest("plan.join: a dataset may appear only once")
    where_raw = raw.get("where", [])
    if not isinstance(where_raw, list):
        raise InvalidRequest("plan.where: must be a list of filters")
    where = tuple(_parse_filter(f, i) for i, f in enumerate(where_raw))
    group_raw = raw.get("group_by", [])
    if not isinstance(group_raw, list):
        raise InvalidRequest("plan.group_by: must be a list of column names")
    group_by = tuple(ColumnRef.parse(g, f"plan.group_by[{i}]") for i, g in enumerate(group_raw))
    if len(set(group_by)) != len(group_by):
        raise InvalidRequest("plan.group_by: a column may appear only once")
    aggs_raw = raw.get("aggregates")
    if not isinstance(aggs_raw, list) or not aggs_raw:
        raise InvalidRequest("plan.aggregates: must list at least one aggregate")
    aggregates = tuple(_parse_aggregate(a, i) for i, a in enumerate(aggs_raw))
    names = [a.alias for a in aggregates] + [g.name for g in group_by]
    if len(set(names)) != len(names):
        raise InvalidRequest("plan.aggregates: every output name ('as') must be unique")
    if _RESERVED_NAMES & set(names):
        raise InvalidRequest(
            f"plan.aggregates: {', '.join(sorted(_RESERVED_NAMES))} is a reserved output name"
        )
    return QueryPlan(from_=from_, join=join, where=where, group_by=group_by, aggregates=aggregates)


MIN_EPSILON = 1e-6  # below this the noise scale is astronomically large and useless


def parse_epsilon(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidRequest("epsilon: must be a number")
    try:
        value = float(raw)  # an int beyond float range raises OverflowError
    except OverflowError:
        raise InvalidRequest("epsilon: must be a finite number > 0") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest("epsilon: must be a finite number > 0")
    if value < MIN_EPSILON:
        raise InvalidRequest(f"epsilon: must be at least {MIN_EPSILON:g}")
    return value


def parse_query_request(raw: object) -> QueryRequest:
    """Parse ``{"plan": {...}, "epsilon": e}`` (the SQL front end is a later issue)."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("body: must be a JSON object with 'plan' and 'epsilon'")
    if "sql" in raw and "plan" not in raw:
        raise InvalidRequest("sql: the SQL front end is not available yet; send a 'plan'")
    if "plan" not in raw:
        raise InvalidRequest("plan: required")
    unknown = sorted(set(raw) - {"plan", "epsilon"})
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field (allowed: epsilon, plan)")
    return QueryRequest(plan=parse_plan(raw["plan"]), epsilon=parse_epsilon(raw.get("epsilon")))
