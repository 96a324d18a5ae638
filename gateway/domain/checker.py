"""Check a query plan against the active policy and derive what noise it needs.

The checker is the single place where a plan meets the policy. It refuses any use the policy does
not allow (naming the rule's path), resolves every column to its dataset and rule, fixes the
public group-key domain, and derives the *statistics* the release needs: one noisy count vector
and one noisy integer-sum vector per measured column. Sensitivities follow from the policy's
bounds alone, never from the data.

Example:
    >>> checked = check_query(request, policy, analyst_org="acme")
    >>> [s.kind for s in checked.statistics]
    ['count', 'sum']
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from gateway.domain.errors import InvalidRequest, PolicyViolation, UnsupportedQuery
from gateway.domain.plan import ColumnRef, FilterOp, QueryRequest
from gateway.domain.policy import ColumnRule, DatasetPolicy, Policy


@dataclass(frozen=True)
class ResolvedColumn:
    """A column bound to the dataset that holds it and the policy rule that governs it."""

    dataset: str
    rule: ColumnRule

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def path(self) -> str:
        return f"datasets.{self.dataset}.columns.{self.name}"


@dataclass(frozen=True)
class ResolvedFilter:
    column: ResolvedColumn
    op: FilterOp
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class Statistic:
    """One noisy vector over the group domain.

    ``kind == "count"`` counts joined rows per group; ``kind == "sum"`` sums a measure clamped to
    ``[lo, hi]`` in fixed point (``round(value * scale)``). ``sensitivity`` is the L1 sensitivity
    of the whole vector in those integer units when one customer is added or removed.
    """

    key: str
    kind: str
    column: ResolvedColumn | None
    sensitivity: int
    epsilon: float
    lo: int = 0
    hi: int = 0
    scale: int = 1


@dataclass(frozen=True)
class OutputColumn:
    """One aggregate of the release and the statistics it is computed from."""

    alias: str
    fn: str
    count: str | None
    sum: str | None
    bounds: tuple[float, float] | None = None
    scale: int = 1


@dataclass(frozen=True)
class CheckedQuery:
    """A plan that passed the policy, with everything the engine and the DP layer need."""

    request: QueryRequest
    datasets: tuple[DatasetPolicy, ...]
    group_by: tuple[ResolvedColumn, ...]
    filters: tuple[ResolvedFilter, ...]
    group_keys: tuple[tuple[str | int, ...], ...]
    statistics: tuple[Statistic, ...]
    outputs: tuple[OutputColumn, ...]
    rows_per_customer: int
    min_group_size: int

    @property
    def epsilon(self) -> float:
        return self.request.epsilon


def _resolve(ref: ColumnRef, datasets: tuple[DatasetPolicy, ...], field: str) -> ResolvedColumn:
    if ref.dataset is not None:
        candidates = [d for d in datasets if d.id == ref.dataset]
        if not candidates:
            raise InvalidRequest(f"{field}: dataset {ref.dataset!r} is not part of this query")
    else:
        candidates = list(datasets)
    found = [(d, d.column(ref.name)) for d in candidates]
    hits = [(d, rule) for d, rule in found if rule is not None]
    if not hits:
        where = ref.dataset or " or ".join(d.id for d in candidates)
        keyed = [d for d in candidates if ref.name == d.customer_key]
        if keyed:
            raise PolicyViolation(
                f"datasets.{keyed[0].id}.customer_key",
                f"{field}: the customer key may only be used to join",
            )
        raise PolicyViolation(
            f"datasets.{candidates[0].id}.columns",
            f"{field}: column {ref.name!r} is not described by the policy for {where}",
        )
    if len(hits) > 1:
        options = ", ".join(f"{d.id}.{ref.name}" for d, _ in hits)
        raise InvalidRequest(
            f"{field}: column {ref.name!r} is ambiguous; qualify it as one of {options}"
        )
    dataset, rule = hits[0]
    assert rule is not None
    return ResolvedColumn(dataset=dataset.id, rule=rule)


def _require_use(col: ResolvedColumn, use: str, field: str, doing: str) -> None:
    if col.rule.use != use:
        raise PolicyViolation(
            f"{col.path}.use",
            f"{field}: column {col.name!r} is '{col.rule.use}' and may not be {doing}",
        )


def check_query(request: QueryRequest, policy: Policy, analyst_org: str) -> CheckedQuery:
    """Check ``request`` against ``policy`` for an analyst of ``analyst_org``.

    Guarantees: the result only names columns the policy allows for the use made of them; the
    group domain is the public key list (so the release's shape does not depend on the data);
    statistic sensitivities are bounds on one customer's influence given ``max_rows_per_unit``.

    Raises:
        PolicyViolation: a use the policy does not allow; the message names the rule's path.
        UnsupportedQuery: a valid request this version cannot answer yet.
        InvalidRequest: an ambiguous or unknown reference.
    """
    plan = request.plan
    if analyst_org not in policy.budgets:
        raise PolicyViolation(
            f"budgets.{analyst_org}",
            f"organisation {analyst_org!r} has no query budget in this collaboration",
        )
    if request.epsilon > policy.privacy.max_epsilon_per_query:
        raise PolicyViolation(
            "privacy.max_epsilon_per_query",
            f"epsilon {request.epsilon:g} is above the per-query cap "
            f"{policy.privacy.max_epsilon_per_query:g}",
        )

    datasets: list[DatasetPolicy] = []
    for name in plan.datasets:
        ds = policy.dataset(name)
        if ds is None:
            raise PolicyViolation("datasets", f"dataset {name!r} is not described by the policy")
        if ds.kind != "customer":
            raise UnsupportedQuery(f"dataset {name!r}: aggregate datasets cannot be queried yet")
        datasets.append(ds)
    for a, b in itertools.combinations(plan.datasets, 2):
        if not policy.may_join(a, b):
            raise PolicyViolation("joins", f"the policy does not allow joining {a} with {b}")
    used = tuple(datasets)

    group_by = []
    for i, ref in enumerate(plan.group_by):
        field = f"plan.group_by[{i}]"
        col = _resolve(ref, used, field)
        _require_use(col, "dimension", field, "grouped by")
        if col.rule.keys is None:
            raise UnsupportedQuery(
                f"{field}: {col.name!r} has no public keys in the policy; grouping by private "
                "keys (DP partition selection) is not available yet"
            )
        group_by.append(col)

    filters = []
    for i, f in enumerate(plan.where):
        field = f"plan.where[{i}]"
        col = _resolve(f.column, used, field)
        _require_use(col, "dimension", field, "filtered on")
        want = int if col.rule.type == "int" else str
        if any(not isinstance(v, want) for v in f.values):
            raise InvalidRequest(f"{field}.values: {col.name!r} holds {col.rule.type} values")
        filters.append(ResolvedFilter(column=col, op=f.op, values=f.values))

    group_keys = tuple(itertools.product(*(c.rule.keys or () for c in group_by)))
    max_groups = policy.rules.max_groups_per_query
    if len(group_keys) > max_groups:
        raise PolicyViolation(
            "rules.max_groups_per_query",
            f"the query has {len(group_keys)} groups; the policy allows at most {max_groups}",
        )

    rows_per_customer = math.prod(d.max_rows_per_unit for d in used)
    stat_cols: dict[str, ResolvedColumn | None] = {}
    if policy.rules.min_group_size > 0:
        # Suppression is decided on a noisy count, so one is always released.
        stat_cols["count"] = None
    outputs_raw: list[tuple[str, str, ResolvedColumn | None]] = []
    for i, agg in enumerate(plan.aggregates):
        field = f"plan.aggregates[{i}]"
        if agg.fn == "count":
            stat_cols.setdefault("count", None)
            outputs_raw.append((agg.alias, agg.fn, None))
            continue
        assert agg.column is not None
        col = _resolve(agg.column, used, f"{field}.column")
        _require_use(col, "measure", field, "aggregated")
        if agg.fn not in col.rule.aggregates:
            raise PolicyViolation(
                f"{col.path}.aggregates",
                f"{field}: {agg.fn} of {col.name!r} is not allowed "
                f"(allowed: {', '.join(col.rule.aggregates) or 'none'})",
            )
        stat_cols.setdefault(f"sum:{col.dataset}.{col.name}", col)
        if agg.fn == "mean":
            stat_cols.setdefault("count", None)
        outputs_raw.append((agg.alias, agg.fn, col))

    share = request.epsilon / len(stat_cols)
    statistics = []
    for key, measured in stat_cols.items():
        if measured is None:
            statistics.append(Statistic(key, "count", None, rows_per_customer, share))
            continue
        assert measured.rule.bounds is not None
        scale = measured.rule.scale
        lo = math.ceil(measured.rule.bounds[0] * scale)
        hi = math.floor(measured.rule.bounds[1] * scale)
        sensitivity = rows_per_customer * max(abs(lo), abs(hi), 1)
        statistics.append(Statistic(key, "sum", measured, sensitivity, share, lo, hi, scale))

    outputs = []
    for alias, fn, out_col in outputs_raw:
        if out_col is None:
            outputs.append(OutputColumn(alias, fn, count="count", sum=None))
        else:
            col = out_col
            sum_key = f"sum:{col.dataset}.{col.name}"
            count_key = "count" if fn == "mean" else None
            outputs.append(
                OutputColumn(alias, fn, count_key, sum_key, col.rule.bounds, col.rule.scale)
            )

    return CheckedQuery(
        request=request,
        datasets=used,
        group_by=tuple(group_by),
        filters=tuple(filters),
        group_keys=group_keys,
        statistics=tuple(statistics),
        outputs=tuple(outputs),
        rows_per_customer=rows_per_customer,
        min_group_size=policy.rules.min_group_size,
    )
