"""Check a query plan against the active policy and derive what noise it needs.

The checker is the single place where a plan meets the policy. It refuses any use the policy does
not allow (naming the rule's path), resolves every column to its dataset and rule, fixes the
group-key domain (public keys, bucket labels, or DP partition selection for private keys), and
derives the *statistics* the release needs with their sensitivities. Sensitivities follow from
the policy's bounds alone, never from the data.

Neighbouring inputs differ in one customer, who contributes at most ``rows_per_customer`` joined
rows (the product of the datasets' ``max_rows_per_unit``) to at most ``groups_per_customer``
groups. For a vector over groups that gives L1 ≤ rows, L∞ ≤ rows and L0 ≤ groups.

An aggregate dataset (or a benchmark network of them) is queried alone, never joined: its
count is the sum of its count column and its sums' sensitivities follow from the owner's
``per_unit_bounds`` (:mod:`gateway.domain.aggregate_rules`). A side-by-side plan is checked
part by part (:mod:`gateway.domain.side_by_side`).

Example:
    >>> checked = check_query(request, policy, analyst_org="acme")
    >>> [s.kind for s in checked.statistics]
    ['count', 'sum']
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction

from gateway.domain.aggregate_rules import (
    Comparison,
    check_direct_access,
    check_network_use,
    network_dataset,
    per_unit_extent,
)
from gateway.domain.budget import epsilon_to_rho
from gateway.domain.errors import InvalidRequest, PolicyViolation
from gateway.domain.plan import (
    Bucket,
    ColumnRef,
    Filter,
    FilterOp,
    Predicate,
    QueryRequest,
)
from gateway.domain.policy import ColumnRule, DatasetPolicy, Policy
from gateway.domain.policy_network import NetworkPolicy

GroupKey = tuple[str | int, ...]
QUANTILE_DENOMINATOR = 10_000  # q is used as a fraction a / 10000 in the integer score


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
class ResolvedBool:
    op: str  # and | or | not
    items: tuple[ResolvedPredicate, ...]


ResolvedPredicate = ResolvedFilter | ResolvedBool


@dataclass(frozen=True)
class ResolvedGroup:
    """A group-by item: a dimension column, or a bucket (``CASE WHEN``) with its labels.

    ``keys`` is the public key list, or None for a dimension released by partition selection.
    """

    name: str
    keys: tuple[str | int, ...] | None
    column: ResolvedColumn | None = None
    cases: tuple[tuple[ResolvedPredicate, str], ...] = ()
    default: str | None = None


@dataclass(frozen=True)
class Statistic:
    """One noisy quantity per group.

    * ``count``: rows per group (released by partition selection when groups are private);
    * ``sum``: a measure clamped to ``[lo, hi]`` in fixed point (``round(value * scale)``);
    * ``csum``: the same, centred on ``mid`` (a mean's lower-sensitivity numerator);
    * ``histogram``: rows per group and bin (``edges``);
    * ``quantile``: per group, the rank scores of ``candidates`` grid points (report noisy min).

    ``sensitivity`` is the L1 sensitivity of the whole vector in integer units (for quantiles:
    the L∞ sensitivity of one group's score vector); ``epsilon`` the share of the query's ε.
    """

    key: str
    kind: str
    column: ResolvedColumn | None
    sensitivity: int
    epsilon: float
    lo: int = 0
    hi: int = 0
    scale: int = 1
    mid: int = 0
    edges: tuple[float, ...] = ()
    q: float | None = None
    candidates: int = 0
    step: int = 1  # quantile grid step in fixed-point units: the grid sits on the data's lattice

    @property
    def grid_width(self) -> float:
        """Step of a quantile's candidate grid, in value units (``step`` fixed-point units)."""
        return self.step / self.scale


@dataclass(frozen=True)
class OutputColumn:
    """One aggregate of the release and the statistics it is computed from."""

    alias: str
    fn: str
    count: str | None
    sum: str | None
    bounds: tuple[float, float] | None = None
    scale: int = 1
    q: float | None = None


@dataclass(frozen=True)
class CheckedQuery:
    """A plan that passed the policy, with everything the engine and the DP layer need."""

    request: QueryRequest
    epsilon: float
    datasets: tuple[DatasetPolicy, ...]
    group_by: tuple[ResolvedGroup, ...]
    filters: tuple[ResolvedPredicate, ...]
    group_keys: tuple[GroupKey, ...]  # the public domain; empty when private_groups
    private_groups: bool
    statistics: tuple[Statistic, ...]
    outputs: tuple[OutputColumn, ...]
    rows_per_customer: int
    groups_per_customer: int
    min_group_size: int
    delta: float
    measure: str = "epsilon"  # what the ledger composes: ε, or ρ under zCDP
    binding: dict[str, BindingRule] = field(default_factory=dict)
    loss: float = 0.0  # the query's privacy loss in that measure (ε itself in pure mode)
    network: NetworkPolicy | None = None  # set when the query reads a benchmark network
    comparison: Comparison | None = None  # a network benchmark split: one member vs the rest
    parts: tuple[CheckedQuery, ...] = ()  # a side-by-side query: each part noised on its own

    @property
    def aggregate(self) -> bool:
        """Does the query read an aggregate dataset (or a network of them)?"""
        return any(ds.is_aggregate for ds in self.datasets)

    def columns_read(self) -> list[ResolvedColumn]:
        """Every stored column the query reads: groups, filters, bucket conditions, measures.

        A network's columns are read from every member; its member column is not stored.
        """
        if self.parts:
            return [c for part in self.parts for c in part.columns_read()]
        columns = self._columns()
        network = self.network
        if network is not None:
            columns = [
                ResolvedColumn(member, c.rule)
                for c in columns
                if c.name != network.member_column
                for member in network.datasets
            ]
        for ds in self.datasets:  # an aggregate dataset's counts are sums of its count column
            if ds.count_column is not None:
                columns.append(ResolvedColumn(ds.id, ds.columns[ds.count_column]))
        return columns

    def _columns(self) -> list[ResolvedColumn]:
        def of(p: ResolvedPredicate) -> list[ResolvedColumn]:
            if isinstance(p, ResolvedFilter):
                return [p.column]
            return [c for item in p.items for c in of(item)]

        columns = [c for p in self.filters for c in of(p)]
        for g in self.group_by:
            if g.column is not None:
                columns.append(g.column)
            columns += [c for when, _ in g.cases for c in of(when)]
        columns += [s.column for s in self.statistics if s.column is not None]
        return columns

    @property
    def l0(self) -> int:
        """Most groups one customer can touch."""
        return min(self.rows_per_customer, self.groups_per_customer) if self.group_by else 1


def _resolve(ref: ColumnRef, datasets: tuple[DatasetPolicy, ...], field: str) -> ResolvedColumn:
    if ref.dataset is not None:
        candidates = [d for d in datasets if d.id == ref.dataset]
        if not candidates:
            raise InvalidRequest(f"{field}: names a dataset that is not part of this query")
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
            f"{field}: the column is not described by the policy for {where}",
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


@dataclass(frozen=True)
class BindingRule:
    """The value of a limit for one query and the policy path of the rule that set it."""

    value: float
    path: str


def effective_rules(policy: Policy, datasets: tuple[DatasetPolicy, ...]) -> dict[str, BindingRule]:
    """Where several owners' rules meet in one query, the strictest applies.

    Returns, for ``max_epsilon_per_query``, ``min_group_size`` and ``max_groups_per_query``,
    the binding value and its path (the collaboration-wide rule wins ties).
    """
    rules = {
        "max_epsilon_per_query": BindingRule(
            policy.privacy.max_epsilon_per_query, "privacy.max_epsilon_per_query"
        ),
        "min_group_size": BindingRule(policy.rules.min_group_size, "rules.min_group_size"),
        "max_groups_per_query": BindingRule(
            policy.rules.max_groups_per_query, "rules.max_groups_per_query"
        ),
    }
    for ds in datasets:
        for name in rules:
            value = getattr(ds.rules, name)
            if value is None:
                continue
            stricter = (
                value > rules[name].value
                if name == "min_group_size"
                else (value < rules[name].value)
            )
            if stricter:
                rules[name] = BindingRule(value, f"datasets.{ds.id}.rules.{name}")
    return rules


def _resolve_predicate(
    p: Predicate, used: tuple[DatasetPolicy, ...], field: str
) -> ResolvedPredicate:
    if isinstance(p, Filter):
        col = _resolve(p.column, used, field)
        _require_use(col, "dimension", field, "filtered on")
        want = int if col.rule.type == "int" else str
        if any(not isinstance(v, want) for v in p.values):
            raise InvalidRequest(f"{field}.values: {col.name!r} holds {col.rule.type} values")
        return ResolvedFilter(column=col, op=p.op, values=p.values)
    return ResolvedBool(
        p.op, tuple(_resolve_predicate(i, used, f"{field}.{p.op}") for i in p.items)
    )


def _resolve_group(
    g: ColumnRef | Bucket, used: tuple[DatasetPolicy, ...], field: str
) -> ResolvedGroup:
    if isinstance(g, Bucket):
        cases = tuple(
            (_resolve_predicate(when, used, f"{field}.bucket[{i}].when"), label)
            for i, (when, label) in enumerate(g.cases)
        )
        return ResolvedGroup(g.alias, g.labels, None, cases, g.default)
    col = _resolve(g, used, field)
    _require_use(col, "dimension", field, "grouped by")
    return ResolvedGroup(col.name, col.rule.keys, col)


def _grid_size(groups: int) -> int:
    """Candidate grid points per group for quantiles: as fine as a total of about 2^17
    candidates allows, 2^8 to 2^15 per group.

    Report-noisy-max costs 1–2.5 µs per candidate in OpenDP (measured on 2 cores, see
    bench/README.md), so 2^17 candidates keep a quantile's selections near 0.1–0.3 s, below
    what DuckDB takes for an exact median over 10 million rows. The step stays fine next to the
    data: 7 cents over [0, 2000] with 2^15 points, a relative error of about 1e-4 at a median
    of 70 (OpenDP's Polars quantile on the same candidates has the same grid error)."""
    target = max(256, min(2**15, 2**17 // max(groups, 1)))
    return 1 << (target.bit_length() - 1)


def check_query(
    request: QueryRequest, policy: Policy, analyst_org: str, epsilon: float | None = None
) -> CheckedQuery:
    """Check ``request`` against ``policy`` for an analyst of ``analyst_org``.

    ``epsilon`` overrides the request's (accuracy-first requests have none of their own).

    Guarantees: the result only names columns the policy allows for the use made of them; a
    release's groups are the public keys or bucket labels, or pass DP partition selection, so
    its shape does not depend on the data otherwise; statistic sensitivities bound one
    customer's influence given ``max_rows_per_unit`` and ``max_groups_per_unit``.

    Raises:
        PolicyViolation: a use the policy does not allow; the message names the rule's path.
        UnsupportedQuery: a valid request this version cannot answer yet.
        InvalidRequest: an ambiguous or unknown reference.
    """
    plan = request.plan
    eps = epsilon if epsilon is not None else request.epsilon
    if eps is None:
        raise InvalidRequest("epsilon: required (or an accuracy target)")
    if analyst_org not in policy.budgets:
        raise PolicyViolation(
            f"budgets.{analyst_org}",
            f"organisation {analyst_org!r} has no query budget in this collaboration",
        )
    if plan.parts:
        from gateway.domain.side_by_side import check_side_by_side

        return check_side_by_side(request, policy, analyst_org, eps)
    datasets: list[DatasetPolicy] = []
    network: NetworkPolicy | None = None
    for i, name in enumerate(plan.datasets):
        ds = policy.dataset(name)
        if ds is None and (found := policy.network(name)) is not None:
            network, ds = found, network_dataset(policy, found)
        if ds is None:  # an unknown name is not echoed: it may be data
            field = "plan.from" if i == 0 else f"plan.join[{i - 1}]"
            raise PolicyViolation(
                "datasets", f"{field}: the dataset is not described by the policy"
            )
        check_direct_access(policy, ds, analyst_org)
        datasets.append(ds)
    aggregated = [ds for ds in datasets if ds.is_aggregate]
    if aggregated and len(datasets) > 1:
        ds = aggregated[0]
        raise PolicyViolation(
            f"networks.{ds.id}" if network and network.id == ds.id else f"datasets.{ds.id}.kind",
            f"{ds.id} holds aggregate rows, which cannot be joined; put it side by side with "
            "another query instead (its rows are merged after release by group)",
        )
    for a, b in itertools.combinations(plan.datasets, 2):
        if not policy.may_join(a, b):
            raise PolicyViolation("joins", f"the policy does not allow joining {a} with {b}")
    used = tuple(datasets)
    members = tuple(policy.datasets[d] for d in network.datasets) if network else ()
    binding = effective_rules(policy, members or used)
    cap = binding["max_epsilon_per_query"]
    if eps > cap.value:
        raise PolicyViolation(cap.path, f"epsilon {eps:g} is above the per-query cap {cap.value:g}")
    for dataset_id, column in request.join_on:
        ds = policy.dataset(dataset_id)
        if ds is None or column != ds.customer_key:
            raise PolicyViolation(
                f"datasets.{ds.id}.customer_key" if ds else "joins",
                "joins match on the customer key only; the join condition names another column"
                + (f" of {ds.id}" if ds else ""),
            )

    group_by = tuple(
        _resolve_group(g, used, f"plan.group_by[{i}]") for i, g in enumerate(plan.group_by)
    )
    filters = tuple(
        _resolve_predicate(p, used, f"plan.where[{i}]") for i, p in enumerate(plan.where)
    )
    private_groups = any(g.keys is None for g in group_by)
    group_keys: tuple[GroupKey, ...] = ()
    max_groups = int(binding["max_groups_per_query"].value)
    if not private_groups:
        size = math.prod(len(g.keys or ()) for g in group_by)
        if size > max_groups:
            raise PolicyViolation(
                binding["max_groups_per_query"].path,
                f"the query has {size} groups; the policy allows at most {max_groups}",
            )
        group_keys = tuple(itertools.product(*(g.keys or () for g in group_by)))

    comparison = check_network_use(network, analyst_org, group_by, filters) if network else None
    rows_per_customer = math.prod(d.max_rows_per_unit for d in used)
    groups_per_customer = min(d.max_groups_per_unit for d in used)
    if aggregated:  # nothing bounds the groups of a customer's rows but their number
        groups_per_customer = rows_per_customer
    l0 = min(rows_per_customer, groups_per_customer) if group_by else 1

    stat_cols: dict[str, tuple[str, ResolvedColumn | None, float | None]] = {}
    min_group_size = int(binding["min_group_size"].value)
    if min_group_size > 0 or private_groups:
        # Suppression and partition selection are decided on a noisy count.
        stat_cols["count"] = ("count", None, None)
    outputs_raw: list[tuple[str, str, ResolvedColumn | None, float | None]] = []
    for i, agg in enumerate(plan.aggregates):
        field = f"plan.aggregates[{i}]"
        if agg.fn == "count":
            stat_cols.setdefault("count", ("count", None, None))
            outputs_raw.append((agg.alias, agg.fn, None, None))
            continue
        assert agg.column is not None
        col = _resolve(agg.column, used, f"{field}.column")
        _require_use(col, "measure", field, "aggregated")
        counted = next(
            (d for d in used if d.id == col.dataset and d.count_column == col.name), None
        )
        if counted is not None:  # SUM of an aggregate dataset's count column: its customers
            if agg.fn != "sum":
                raise PolicyViolation(
                    f"datasets.{counted.id}.count_column",
                    f"{field}: the count column may only be summed",
                )
            stat_cols.setdefault("count", ("count", None, None))
            outputs_raw.append((agg.alias, "count", None, None))
            continue
        if agg.fn not in col.rule.aggregates:
            raise PolicyViolation(
                f"{col.path}.aggregates",
                f"{field}: {agg.fn} of {col.name!r} is not allowed "
                f"(allowed: {', '.join(col.rule.aggregates) or 'none'})",
            )
        ref = f"{col.dataset}.{col.name}"
        if agg.fn == "sum":
            stat_cols.setdefault(f"sum:{ref}", ("sum", col, None))
        elif agg.fn == "mean":
            stat_cols.setdefault(f"csum:{ref}", ("csum", col, None))
            stat_cols.setdefault("count", ("count", None, None))
        elif agg.fn == "histogram":
            stat_cols.setdefault(f"histogram:{ref}", ("histogram", col, None))
        else:
            stat_cols.setdefault(f"quantile:{ref}:{agg.q}", ("quantile", col, agg.q))
        outputs_raw.append((agg.alias, agg.fn, col, agg.q))

    # ``epsilon`` below is the share of the query's loss in the policy's measure (ρ in zCDP).
    loss = eps if policy.measure == "epsilon" else epsilon_to_rho(eps, policy.privacy.delta)
    share = loss / len(stat_cols)
    # Private groups: the count is unknown before selection; assume a few hundred.
    expected_groups = max(len(group_keys), 1) if not private_groups else 256
    statistics = []
    for key, (kind, measured, q) in stat_cols.items():
        if measured is None:
            statistics.append(Statistic(key, "count", None, rows_per_customer, share))
            continue
        rule = measured.rule
        scale = rule.scale
        if rule.per_unit_bounds is not None:
            statistics.append(_per_unit_statistic(key, kind, measured, rows_per_customer, share))
            continue
        assert rule.bounds is not None
        lo = math.ceil(rule.bounds[0] * scale)
        hi = math.floor(rule.bounds[1] * scale)
        if kind == "sum":
            sens = rows_per_customer * max(abs(lo), abs(hi), 1)
            statistics.append(Statistic(key, kind, measured, sens, share, lo, hi, scale))
        elif kind == "csum":
            mid = (lo + hi) // 2
            sens = rows_per_customer * max(hi - mid, mid - lo, 1)
            statistics.append(Statistic(key, kind, measured, sens, share, lo, hi, scale, mid))
        elif kind == "histogram":
            statistics.append(
                Statistic(
                    key,
                    kind,
                    measured,
                    rows_per_customer,
                    share,
                    lo,
                    hi,
                    scale,
                    edges=rule.bins or (),
                )
            )
        else:
            assert q is not None
            fraction = Fraction(q).limit_denominator(QUANTILE_DENOMINATOR)
            num, den = fraction.numerator, fraction.denominator
            sens = rows_per_customer * max(num, den - num)
            # The grid steps by whole fixed-point units (cents for floats), so a fine enough
            # grid lands on the values the data can hold.
            step = max(1, math.ceil((hi - lo) / _grid_size(expected_groups)))
            # Each group's selection is a separate mechanism; a customer touches ≤ l0 groups.
            statistics.append(
                Statistic(
                    key,
                    kind,
                    measured,
                    sens,
                    share / l0,
                    lo,
                    hi,
                    scale,
                    q=q,
                    candidates=max(1, math.ceil((hi - lo) / step)),
                    step=step,
                )
            )

    outputs = []
    for alias, fn, out_col, q in outputs_raw:
        if out_col is None:
            outputs.append(OutputColumn(alias, fn, count="count", sum=None))
            continue
        ref = f"{out_col.dataset}.{out_col.name}"
        stat = {
            "sum": f"sum:{ref}",
            "mean": f"csum:{ref}",
            "histogram": f"histogram:{ref}",
            "quantile": f"quantile:{ref}:{q}",
        }[fn]
        outputs.append(
            OutputColumn(
                alias,
                fn,
                "count" if fn == "mean" else None,
                stat,
                out_col.rule.limits,
                out_col.rule.scale,
                q,
            )
        )

    return CheckedQuery(
        request=request,
        epsilon=eps,
        datasets=members or used,
        group_by=group_by,
        filters=filters,
        group_keys=group_keys,
        private_groups=private_groups,
        statistics=tuple(statistics),
        outputs=tuple(outputs),
        rows_per_customer=rows_per_customer,
        groups_per_customer=groups_per_customer,
        min_group_size=min_group_size,
        delta=policy.privacy.delta,
        measure=policy.measure,
        loss=loss,
        binding=binding,
        network=network,
        comparison=comparison,
    )


def _per_unit_statistic(
    key: str, kind: str, column: ResolvedColumn, rows_per_customer: int, share: float
) -> Statistic:
    """A sum or centred sum over an aggregate dataset's measure (see ``aggregate_rules``)."""
    lo, hi, rounding = per_unit_extent(column.rule)
    scale = column.rule.scale
    if kind == "sum":
        sens = rows_per_customer * (max(abs(lo), abs(hi), 1) + rounding)
        return Statistic(key, kind, column, sens, share, lo, hi, scale)
    if kind != "csum":
        raise InvalidRequest(f"{column.path}: only sums and means of an aggregate dataset")
    mid = (lo + hi) // 2
    sens = rows_per_customer * (max(hi - mid, mid - lo, 1) + rounding)
    return Statistic(key, kind, column, sens, share, lo, hi, scale, mid)
