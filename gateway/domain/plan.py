"""The canonical query plan: what an analyst asks, as frozen data.

Parsing (the JSON plan here, SQL in :mod:`gateway.domain.sql`) yields a :class:`QueryPlan`; the
policy checker, the cost model, the SQL compiler and the noise step each read it. A plan says
nothing about noise or budget beyond what :class:`QueryRequest` carries: ``epsilon``, or an
``accuracy`` target from which the smallest sufficient ε is derived.

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

from gateway.domain.errors import InvalidRequest, UnknownField

AggregateFn = Literal["count", "sum", "mean", "quantile", "histogram"]
FilterOp = Literal["eq", "ne", "in", "not_in", "between"]

_FNS = ("count", "sum", "mean", "quantile", "median", "histogram")
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
    "between": "between",
}
_TYPED_FNS: dict[str, AggregateFn] = {
    "count": "count", "sum": "sum", "mean": "mean", "quantile": "quantile",
    "histogram": "histogram",
}  # fmt: skip
_MAX_VALUES = 10_000
_I64 = (-(2**63), 2**63 - 1)  # int dimensions are stored as 64-bit integers
# Release rows use this key to flag a withheld group; an output of that name would hide the flag.
_RESERVED_NAMES = frozenset({"suppressed"})

# The fields each object of a JSON query body may hold; anything else is refused (422).
_BODY_FIELDS = frozenset({"plan", "sql", "epsilon", "accuracy"})
_PLAN_FIELDS = frozenset({"from", "join", "where", "group_by", "aggregates"})
_SIDE_BY_SIDE_FIELDS = frozenset({"side_by_side", "on"})
_MAX_PARTS = 4
_ACCURACY_FIELDS = frozenset({"abs", "rel", "at_count", "confidence"})
_PREDICATE_FIELDS = frozenset({"and", "or", "not", "column", "op", "value", "values"})
_BUCKET_FIELDS = frozenset({"bucket", "else", "as"})
_CASE_FIELDS = frozenset({"when", "then"})
_AGGREGATE_FIELDS = frozenset({"fn", "column", "as", "q"})


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
class BoolOp:
    """``and`` / ``or`` over several predicates, or ``not`` of one."""

    op: Literal["and", "or", "not"]
    items: tuple[Predicate, ...]


Predicate = Filter | BoolOp


@dataclass(frozen=True)
class Bucket:
    """``CASE WHEN`` over dimensions: the analyst's labels are the group's (public) keys.

    Rows matching no case take ``default``; with no default they are left out.
    """

    alias: str
    cases: tuple[tuple[Predicate, str], ...]
    default: str | None = None

    @property
    def name(self) -> str:
        return self.alias

    @property
    def labels(self) -> tuple[str, ...]:
        labels = list(dict.fromkeys(label for _, label in self.cases))
        if self.default is not None and self.default not in labels:
            labels.append(self.default)
        return tuple(labels)


GroupItem = ColumnRef | Bucket


@dataclass(frozen=True)
class Aggregate:
    """One output; ``q`` is the quantile for ``fn == "quantile"`` (a median is q = 0.5)."""

    fn: AggregateFn
    alias: str
    column: ColumnRef | None = None
    q: float | None = None


@dataclass(frozen=True)
class Accuracy:
    """A target instead of ε: the 95% (or ``confidence``) half-width of the outputs.

    ``abs`` bounds every count, sum and histogram bin in its own units, and every mean at a
    group of ``at_count`` customers. ``rel`` is for counts only: ``rel · at_count``.
    """

    abs: float | None = None
    rel: float | None = None
    at_count: int | None = None
    confidence: float = 0.95

    @property
    def halfwidth(self) -> float:
        if self.abs is not None:
            return self.abs
        assert self.rel is not None and self.at_count is not None
        return self.rel * self.at_count


def predicate_json(p: Predicate) -> dict[str, Any]:
    if isinstance(p, Filter):
        return {"column": str(p.column), "op": p.op, "values": list(p.values)}
    if p.op == "not":
        return {"not": predicate_json(p.items[0])}
    return {p.op: [predicate_json(i) for i in p.items]}


def group_json(g: GroupItem) -> str | dict[str, Any]:
    if isinstance(g, ColumnRef):
        return str(g)
    return {
        "bucket": [{"when": predicate_json(w), "then": label} for w, label in g.cases],
        "else": g.default,
        "as": g.alias,
    }


@dataclass(frozen=True)
class QueryPlan:
    """Datasets joined on the customer key, filtered, grouped and aggregated.

    A side-by-side plan holds its queries in ``parts`` (each a plan of its own, noised on its
    own) and the group names its rows are merged on in ``on``; its other fields repeat the
    first part's dataset, group-by and every part's aggregates, for readers that want one.
    """

    from_: str
    join: tuple[str, ...]
    where: tuple[Predicate, ...]  # all must hold
    group_by: tuple[GroupItem, ...]
    aggregates: tuple[Aggregate, ...]
    parts: tuple[QueryPlan, ...] = ()
    on: tuple[str, ...] = ()

    @property
    def datasets(self) -> tuple[str, ...]:
        if self.parts:
            return tuple(dict.fromkeys(d for part in self.parts for d in part.datasets))
        return (self.from_, *self.join)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form used for hashing (replays) and for the audit trail."""
        if self.parts:
            return {"side_by_side": [p.canonical() for p in self.parts], "on": list(self.on)}
        return {
            "from": self.from_,
            "join": list(self.join),
            "where": [predicate_json(p) for p in self.where],
            "group_by": [group_json(g) for g in self.group_by],
            "aggregates": [
                {
                    "fn": a.fn,
                    "as": a.alias,
                    **({"column": str(a.column)} if a.column else {}),
                    **({"q": a.q} if a.q is not None else {}),
                }
                for a in self.aggregates
            ],
        }


@dataclass(frozen=True)
class QueryRequest:
    """A plan with either ``epsilon`` or an ``accuracy`` target (exactly one)."""

    plan: QueryPlan
    epsilon: float | None
    sql: str | None = None
    accuracy: Accuracy | None = None
    join_on: tuple[tuple[str, str], ...] = ()  # (dataset, column) named by SQL's ON clauses

    def fingerprint(self, epsilon: float | None = None) -> str:
        """Stable hash of what was asked: the same question asked again is a replay."""
        body = json.dumps(
            {"plan": self.plan.canonical(), "epsilon": epsilon or self.epsilon}, sort_keys=True
        )
        return hashlib.sha256(body.encode()).hexdigest()


def refuse_unknown(raw: Mapping[Any, Any], allowed: frozenset[str], path: str) -> None:
    """Refuse ``raw`` if it holds a key that is not in ``allowed``.

    Raises:
        UnknownField: naming ``path`` and the allowed keys; the unknown key and its value are
            never shown.
    """
    if any(key not in allowed for key in raw):
        raise UnknownField(path, allowed)


def _refuse_unknown_in_predicate(raw: object, path: str, depth: int) -> None:
    if not isinstance(raw, Mapping) or depth > _MAX_DEPTH:
        return  # not an object, or too deep: the parser refuses it with a 400 of its own
    refuse_unknown(raw, _PREDICATE_FIELDS, path)
    for op in ("and", "or"):
        items = raw.get(op)
        if isinstance(items, list):
            for i, item in enumerate(items):
                _refuse_unknown_in_predicate(item, f"{path}.{op}[{i}]", depth + 1)
    if "not" in raw:
        _refuse_unknown_in_predicate(raw["not"], f"{path}.not", depth + 1)


def _refuse_unknown_in_group(raw: object, path: str) -> None:
    if not isinstance(raw, Mapping):
        return
    refuse_unknown(raw, _BUCKET_FIELDS, path)
    cases = raw.get("bucket")
    if isinstance(cases, list):
        for i, case in enumerate(cases):
            if isinstance(case, Mapping):
                refuse_unknown(case, _CASE_FIELDS, f"{path}.bucket[{i}]")
                _refuse_unknown_in_predicate(case.get("when"), f"{path}.bucket[{i}].when", 0)


def _items(raw: Mapping[Any, Any], key: str) -> list[tuple[int, object]]:
    value = raw.get(key)
    return list(enumerate(value)) if isinstance(value, list) else []


def refuse_unknown_fields(body: Mapping[Any, Any]) -> None:
    """Refuse a query body holding, anywhere, a field the API does not define.

    Run before any other check, so an unknown field is always a 422 ``unknown_field`` (never
    a 400 about a sibling) and nobody can believe they set ``epsilon_spent``, ``owner`` or
    ``replay``. Parts of the wrong type are skipped here: the parser refuses those with a 400.

    Raises:
        UnknownField: naming the path of the first unknown field, e.g. ``body.plan.owner``.

    Example:
        >>> refuse_unknown_fields({"plan": {"from": "a.b", "owner": "a"}, "epsilon": 1})
        Traceback (most recent call last):
        gateway.domain.errors.UnknownField: body.plan.owner: unknown field
    """
    refuse_unknown(body, _BODY_FIELDS, "body")
    accuracy = body.get("accuracy")
    if isinstance(accuracy, Mapping):
        refuse_unknown(accuracy, _ACCURACY_FIELDS, "body.accuracy")
    plan = body.get("plan")
    if isinstance(plan, Mapping):
        _refuse_unknown_in_plan(plan)


def _refuse_unknown_in_plan(plan: Mapping[Any, Any], path: str = "body.plan") -> None:
    if "side_by_side" in plan and path == "body.plan":
        refuse_unknown(plan, _SIDE_BY_SIDE_FIELDS, path)
        for i, part in _items(plan, "side_by_side"):
            if isinstance(part, Mapping):
                _refuse_unknown_in_plan(part, f"{path}.side_by_side[{i}]")
        return
    refuse_unknown(plan, _PLAN_FIELDS, path)
    for i, predicate in _items(plan, "where"):
        _refuse_unknown_in_predicate(predicate, f"{path}.where[{i}]", 0)
    for i, group in _items(plan, "group_by"):
        _refuse_unknown_in_group(group, f"{path}.group_by[{i}]")
    for i, aggregate in _items(plan, "aggregates"):
        if isinstance(aggregate, Mapping):
            refuse_unknown(aggregate, _AGGREGATE_FIELDS, f"{path}.aggregates[{i}]")


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


def _parse_filter(raw: Mapping[str, Any], field: str) -> Filter:
    op = _OPS.get(str(raw.get("op", "")).lower())
    if op is None:
        raise InvalidRequest(f"{field}.op: must be one of eq, ne, in, not_in, between")
    column = ColumnRef.parse(raw.get("column"), f"{field}.column")
    if op in ("eq", "ne"):
        if "value" in raw:
            values: tuple[str | int, ...] = (_literal(raw["value"], f"{field}.value"),)
        else:
            vals = raw.get("values")
            if not isinstance(vals, list) or len(vals) != 1:
                raise InvalidRequest(f"{field}.value: '{op}' needs one value")
            values = (_literal(vals[0], f"{field}.values"),)
    elif op == "between":
        vals = raw.get("values")
        if not isinstance(vals, list) or len(vals) != 2:
            raise InvalidRequest(f"{field}.values: 'between' needs [low, high]")
        values = tuple(_literal(v, f"{field}.values") for v in vals)
        if type(values[0]) is not type(values[1]):
            raise InvalidRequest(f"{field}.values: 'between' bounds must be of one type")
    else:
        vals = raw.get("values")
        if not isinstance(vals, list) or not vals or len(vals) > _MAX_VALUES:
            raise InvalidRequest(f"{field}.values: '{op}' needs a list of 1..{_MAX_VALUES} values")
        values = tuple(_literal(v, f"{field}.values") for v in vals)
    return Filter(column=column, op=op, values=values)


_MAX_DEPTH = 16


def parse_predicate(raw: object, field: str, depth: int = 0) -> Predicate:
    """A filter ``{column, op, value(s)}`` or ``{"and"|"or": [...]}`` or ``{"not": {...}}``."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{field}: must be an object {{column, op, value(s)}}")
    if depth > _MAX_DEPTH:
        raise InvalidRequest(f"{field}: nested more than {_MAX_DEPTH} levels")
    for op in ("and", "or"):
        if op in raw:
            items = raw[op]
            if len(raw) != 1 or not isinstance(items, list) or not items:
                raise InvalidRequest(f"{field}.{op}: must be the only key, with a non-empty list")
            return BoolOp(
                "and" if op == "and" else "or",
                tuple(
                    parse_predicate(x, f"{field}.{op}[{i}]", depth + 1) for i, x in enumerate(items)
                ),
            )
    if "not" in raw:
        if len(raw) != 1:
            raise InvalidRequest(f"{field}.not: must be the only key")
        return BoolOp("not", (parse_predicate(raw["not"], f"{field}.not", depth + 1),))
    return _parse_filter(raw, field)


def predicate_columns(p: Predicate) -> list[ColumnRef]:
    if isinstance(p, Filter):
        return [p.column]
    return [c for item in p.items for c in predicate_columns(item)]


def _parse_group(raw: object, field: str) -> GroupItem:
    if not isinstance(raw, Mapping):
        return ColumnRef.parse(raw, field)
    if "bucket" not in raw:
        raise InvalidRequest(f"{field}: a bucket is {{bucket: [{{when, then}}], else, as}}")
    cases_raw = raw["bucket"]
    if not isinstance(cases_raw, list) or not cases_raw or len(cases_raw) > 1000:
        raise InvalidRequest(f"{field}.bucket: must list 1..1000 {{when, then}} cases")
    cases = []
    for i, case in enumerate(cases_raw):
        where = f"{field}.bucket[{i}]"
        if not isinstance(case, Mapping) or set(case) != {"when", "then"}:
            raise InvalidRequest(f"{where}: must be {{when, then}}")
        label = case["then"]
        if not isinstance(label, str) or not label or len(label) > 200:
            raise InvalidRequest(f"{where}.then: must be a label of 1..200 characters")
        cases.append((parse_predicate(case["when"], f"{where}.when"), label))
    default = raw.get("else")
    if default is not None and (not isinstance(default, str) or not default):
        raise InvalidRequest(f"{field}.else: must be a non-empty label or null")
    alias = _identifier(raw.get("as"), f"{field}.as")
    return Bucket(alias=alias, cases=tuple(cases), default=default)


def _parse_aggregate(raw: object, i: int) -> Aggregate:
    field = f"plan.aggregates[{i}]"
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{field}: must be an object {{fn, column, as}}")
    fn = raw.get("fn")
    if fn not in _FNS:
        raise InvalidRequest(f"{field}.fn: must be one of {', '.join(_FNS)}")
    column = None
    q = None
    if fn == "count":
        if raw.get("column") not in (None, "*"):
            raise InvalidRequest(f"{field}.column: count counts customers' rows; give no column")
    else:
        column = ColumnRef.parse(raw.get("column"), f"{field}.column")
    if fn == "median":
        fn, q = "quantile", 0.5
    elif fn == "quantile":
        q_raw = raw.get("q")
        if isinstance(q_raw, bool) or not isinstance(q_raw, int | float) or not 0 < q_raw < 1:
            raise InvalidRequest(f"{field}.q: a quantile needs q strictly between 0 and 1")
        q = float(q_raw)
    name = str(raw.get("fn"))
    default_alias = fn if column is None else f"{name}_{column.name}"
    alias = _identifier(raw.get("as", default_alias), f"{field}.as")
    return Aggregate(fn=_TYPED_FNS[str(fn)], alias=alias, column=column, q=q)


def parse_plan(raw: object) -> QueryPlan:
    """Parse the JSON plan of DESIGN.md into a :class:`QueryPlan`.

    Raises:
        InvalidRequest: naming the field at fault.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("plan: must be an object")
    _refuse_unknown_in_plan(raw)
    if "side_by_side" in raw:
        return _parse_side_by_side(raw)
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
        raise InvalidRequest("plan.where: must be a list of filters (all must hold)")
    where = tuple(parse_predicate(f, f"plan.where[{i}]") for i, f in enumerate(where_raw))
    group_raw = raw.get("group_by", [])
    if not isinstance(group_raw, list):
        raise InvalidRequest("plan.group_by: must be a list of column names or buckets")
    group_by = tuple(_parse_group(g, f"plan.group_by[{i}]") for i, g in enumerate(group_raw))
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


def _parse_side_by_side(raw: Mapping[str, Any]) -> QueryPlan:
    """``{"side_by_side": [plan, plan, ...], "on": [group name, ...]}``: see QueryPlan.parts."""
    parts_raw = raw.get("side_by_side")
    if not isinstance(parts_raw, list) or not 2 <= len(parts_raw) <= _MAX_PARTS:
        raise InvalidRequest(f"plan.side_by_side: must list 2..{_MAX_PARTS} plans")
    on_raw = raw.get("on")
    if not isinstance(on_raw, list) or not on_raw:
        raise InvalidRequest("plan.on: must list the group names the parts' rows are merged on")
    on = tuple(_identifier(name, f"plan.on[{i}]") for i, name in enumerate(on_raw))
    if len(set(on)) != len(on):
        raise InvalidRequest("plan.on: a name may appear only once")
    parts = []
    for i, part_raw in enumerate(parts_raw):
        where = f"plan.side_by_side[{i}]"
        if isinstance(part_raw, Mapping) and "side_by_side" in part_raw:
            raise InvalidRequest(f"{where}: side-by-side plans do not nest")
        try:
            part = parse_plan(part_raw)
        except UnknownField:
            raise
        except InvalidRequest as exc:
            message = exc.message.removeprefix("plan")
            raise InvalidRequest(f"{where}{message}") from None
        if sorted(g.name for g in part.group_by) != sorted(on):
            raise InvalidRequest(f"{where}.group_by: every part groups by exactly the 'on' names")
        parts.append(part)
    aggregates = tuple(a for part in parts for a in part.aggregates)
    aliases = [a.alias for a in aggregates]
    if len(set(aliases)) != len(aliases):
        raise InvalidRequest("plan.side_by_side: every output name ('as') must be unique")
    first = parts[0]
    return QueryPlan(
        from_=first.from_,
        join=first.join,
        where=first.where,
        group_by=first.group_by,
        aggregates=aggregates,
        parts=tuple(parts),
        on=on,
    )


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


def parse_accuracy(raw: object) -> Accuracy:
    """``{"abs": 50}`` or ``{"rel": 0.05, "at_count": 1000}``, optional ``confidence``."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("accuracy: must be an object {abs} or {rel, at_count}")
    refuse_unknown(raw, _ACCURACY_FIELDS, "body.accuracy")

    def positive(key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InvalidRequest(f"accuracy.{key}: must be a number > 0")
        if not math.isfinite(value):
            raise InvalidRequest(f"accuracy.{key}: must be finite")
        return float(value)

    absolute, rel = positive("abs"), positive("rel")
    if (absolute is None) == (rel is None):
        raise InvalidRequest("accuracy: give exactly one of abs or rel")
    at_count = raw.get("at_count")
    if at_count is not None and (
        isinstance(at_count, bool) or not isinstance(at_count, int) or at_count < 1
    ):
        raise InvalidRequest("accuracy.at_count: must be a group size (an integer >= 1)")
    if rel is not None and at_count is None:
        raise InvalidRequest("accuracy.at_count: a relative target needs the group size")
    confidence = raw.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise InvalidRequest("accuracy.confidence: must be a number")
    if not 0.5 <= confidence < 1:
        raise InvalidRequest("accuracy.confidence: must be in [0.5, 1)")
    return Accuracy(absolute, rel, at_count, float(confidence))


def parse_query_request(raw: object) -> QueryRequest:
    """Parse ``{"plan": {...} | "sql": "...", "epsilon": e | "accuracy": {...}}``.

    Raises:
        InvalidRequest: naming the field at fault (for SQL: the construct and its position).
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("body: must be a JSON object with 'plan' or 'sql', and 'epsilon'")
    refuse_unknown_fields(raw)
    if ("plan" in raw) == ("sql" in raw):
        raise InvalidRequest("plan: give exactly one of 'plan' or 'sql'")
    if ("epsilon" in raw) == ("accuracy" in raw):
        raise InvalidRequest("epsilon: give exactly one of 'epsilon' or 'accuracy'")
    epsilon = parse_epsilon(raw["epsilon"]) if "epsilon" in raw else None
    accuracy = parse_accuracy(raw["accuracy"]) if "accuracy" in raw else None
    if "sql" in raw:
        from gateway.domain.sql import parse_sql_query

        sql = raw["sql"]
        if not isinstance(sql, str) or not sql.strip() or len(sql) > 100_000:
            raise InvalidRequest("sql: must be a non-empty SQL text of at most 100,000 characters")
        plan, join_on = parse_sql_query(sql)
        return QueryRequest(
            plan=plan, epsilon=epsilon, sql=sql, accuracy=accuracy, join_on=tuple(join_on)
        )
    return QueryRequest(plan=parse_plan(raw["plan"]), epsilon=epsilon, accuracy=accuracy)
