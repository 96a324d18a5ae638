"""The sharing policy: what each column may do, who may query, with how much budget.

A policy is parsed from the YAML document of DESIGN.md into frozen dataclasses whose
constructors reject nonsense (negative ε, ``lo > hi``, keys on a measure). Anything a column is
not explicitly allowed to do, it may not do; ``count`` is always allowed.

Two kinds of dataset: ``customer`` (one or more rows per customer, with the customer key) and
``aggregate`` (rows that each aggregate at least ``min_row_count`` customers, counted in
``count_column``). An aggregate dataset's measures carry ``per_unit_bounds``, what one customer
can contribute to one row's value, instead of clamping ``bounds``; its owner declares them and
``max_rows_per_unit`` (how many rows one customer can appear in) and is accountable for them.
Aggregate datasets of several owners can be stacked into a benchmark network
(:mod:`gateway.domain.policy_network`).

Example:
    >>> policy = parse_policy(yaml.safe_load(text))
    >>> policy.dataset("bigmart.loyalty").column("region").use
    'dimension'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.domain.budget import epsilon_to_rho, rho_to_epsilon
from gateway.domain.errors import InvalidPolicy
from gateway.domain.policy_network import NetworkPolicy, parse_networks

Use = Literal["dimension", "measure", "hidden"]
MeasureAggregate = Literal["sum", "mean", "quantile"]
Period = Literal["month", "none"]

_USES = ("dimension", "measure", "hidden")
_MEASURE_AGGREGATES = ("sum", "mean", "quantile", "histogram")
AGGREGATE_MEASURE_AGGREGATES = ("sum", "mean")  # what a per-customer bound makes private
_MEASURE_TYPES = ("int", "float")
_DIMENSION_TYPES = ("string", "int")
_MECHANISMS = ("laplace", "gaussian")
_PERIODS = ("month", "none")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
_I64 = (-(2**63), 2**63 - 1)  # int dimensions are stored as 64-bit integers


def _check_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _NAME_CHARS:
        raise InvalidPolicy(path, "must be a lower-case name of letters, digits, '_' or '-'")
    return value


def _number(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPolicy(path, "must be a finite number")
    try:
        number = float(value)  # an int beyond float range raises OverflowError
    except OverflowError:
        raise InvalidPolicy(path, "must be a finite number") from None
    if not math.isfinite(number):
        raise InvalidPolicy(path, "must be a finite number")
    return number


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidPolicy(path, "must be a mapping")
    return value


def _no_unknown(obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(str(k) for k in set(obj) - allowed)  # YAML keys need not be strings
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise InvalidPolicy(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")


@dataclass(frozen=True)
class PrivacySettings:
    """Collaboration-wide DP settings."""

    mechanism: str = "laplace"
    max_epsilon_per_query: float = 1.0
    delta: float = 1e-7

    def __post_init__(self) -> None:
        if self.mechanism not in _MECHANISMS:
            raise InvalidPolicy("privacy.mechanism", f"must be one of {list(_MECHANISMS)}")
        if not self.max_epsilon_per_query > 0:
            raise InvalidPolicy("privacy.max_epsilon_per_query", "must be > 0")
        if not 0 <= self.delta < 1:
            raise InvalidPolicy("privacy.delta", "must be in [0, 1)")
        if self.mechanism == "gaussian" and self.delta <= 0:
            raise InvalidPolicy("privacy.delta", "mechanism gaussian (zCDP) needs delta > 0")


@dataclass(frozen=True)
class Budget:
    """Privacy loss available to one analyst organisation per period.

    ``epsilon`` always holds the ε (or, in zCDP mode, the (ε, δ) equivalent); ``rho`` is the
    zCDP budget, set when the policy gives it (``mechanism: gaussian``).
    """

    epsilon: float
    period: Period = "month"
    rho: float | None = None

    def __post_init__(self) -> None:
        if not self.epsilon >= 0 or not math.isfinite(self.epsilon):
            raise InvalidPolicy("budgets", "epsilon must be a finite number >= 0")
        if self.period not in _PERIODS:
            raise InvalidPolicy("budgets", f"period must be one of {list(_PERIODS)}")


@dataclass(frozen=True)
class ColumnRule:
    """What one column may be used for.

    Dimensions may be filtered on and grouped by; with ``keys`` they are released on exactly those
    keys. Measures may be aggregated with the listed aggregates, clamped to ``bounds`` (customer
    datasets), or, in an aggregate dataset, within ``per_unit_bounds`` per customer behind a row.
    """

    name: str
    use: Use
    type: str = "string"
    keys: tuple[str | int, ...] | None = None
    bounds: tuple[float, float] | None = None
    aggregates: tuple[str, ...] = ()
    nullable: bool = False
    bins: tuple[float, ...] | None = None
    per_unit_bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.use == "measure":
            if self.type not in _MEASURE_TYPES:
                raise InvalidPolicy(
                    "type", f"a measure's type must be one of {list(_MEASURE_TYPES)}"
                )
            if self.bounds is not None and self.per_unit_bounds is not None:
                raise InvalidPolicy(
                    "per_unit_bounds", "a measure has bounds or per_unit_bounds, not both"
                )
            if self.per_unit_bounds is not None:
                self._check_per_unit()
                return
            if self.bounds is None:
                raise InvalidPolicy("bounds", "a measure needs bounds [lo, hi]")
            lo, hi = self.bounds
            if not lo <= hi:
                raise InvalidPolicy("bounds", "lo must be <= hi")
            if self.keys is not None:
                raise InvalidPolicy("keys", "only dimensions have keys")
            for fn in self.aggregates:
                if fn not in _MEASURE_AGGREGATES:
                    raise InvalidPolicy("aggregates", f"must be among {list(_MEASURE_AGGREGATES)}")
            if self.bins is not None:
                edges = self.bins
                if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                    raise InvalidPolicy("bins", "must be at least two strictly increasing edges")
                if edges[0] < lo or edges[-1] > hi:
                    raise InvalidPolicy("bins", "edges must lie within the bounds")
            if "histogram" in self.aggregates and self.bins is None:
                raise InvalidPolicy("bins", "a histogram needs bins [edge, edge, ...]")
        elif self.use == "dimension":
            if self.type not in _DIMENSION_TYPES:
                raise InvalidPolicy(
                    "type", f"a dimension's type must be one of {list(_DIMENSION_TYPES)}"
                )
            if self.bounds is not None or self.aggregates or self.per_unit_bounds is not None:
                raise InvalidPolicy("use", "a dimension has no bounds or aggregates")
            if self.keys is not None:
                if not self.keys:
                    raise InvalidPolicy("keys", "must list at least one key")
                want = int if self.type == "int" else str
                if any(isinstance(k, bool) or not isinstance(k, want) for k in self.keys):
                    raise InvalidPolicy("keys", f"every key must be of type {self.type}")
                if any(isinstance(k, int) and not _I64[0] <= k <= _I64[1] for k in self.keys):
                    raise InvalidPolicy("keys", "integer keys must fit in 64 bits")
                if len(set(self.keys)) != len(self.keys):
                    raise InvalidPolicy("keys", "must not repeat a key")
        elif self.use != "hidden":
            raise InvalidPolicy("use", f"must be one of {list(_USES)}")

    def _check_per_unit(self) -> None:
        assert self.per_unit_bounds is not None
        lo, hi = self.per_unit_bounds
        if not lo <= hi:
            raise InvalidPolicy("per_unit_bounds", "lo must be <= hi")
        if self.keys is not None:
            raise InvalidPolicy("keys", "only dimensions have keys")
        for fn in self.aggregates:
            if fn not in AGGREGATE_MEASURE_AGGREGATES:
                raise InvalidPolicy(
                    "aggregates",
                    f"an aggregate dataset's measure allows {list(AGGREGATE_MEASURE_AGGREGATES)}",
                )
        if self.bins is not None:
            raise InvalidPolicy("bins", "an aggregate dataset's measure has no histogram bins")

    @property
    def scale(self) -> int:
        """Fixed-point scale for exact integer sums: cents for floats, units for ints."""
        return 100 if self.type == "float" else 1

    @property
    def limits(self) -> tuple[float, float] | None:
        """The measure's ``bounds`` (per row) or ``per_unit_bounds`` (per customer of a row)."""
        return self.bounds if self.bounds is not None else self.per_unit_bounds

    @property
    def magnitude(self) -> float:
        """Largest absolute value a clamped value (or one customer's contribution) can take."""
        limits = self.limits
        assert limits is not None
        return max(abs(limits[0]), abs(limits[1]))


@dataclass(frozen=True)
class DatasetRules:
    """A data owner's own limits for queries touching its dataset (None: the global rule).

    Where several owners' rules meet in one query, the strictest applies.
    """

    min_group_size: int | None = None
    max_groups_per_query: int | None = None
    max_epsilon_per_query: float | None = None


@dataclass(frozen=True)
class DatasetPolicy:
    """The rules for one dataset, named ``<owner>.<name>``.

    An aggregate dataset (``kind == "aggregate"``) has no customer key (``customer_key`` is
    empty); its ``count_column`` (customers behind each row) is among ``columns`` as an integer
    measure whose only aggregate is ``sum`` and whose per-customer contribution is exactly 1.
    """

    id: str
    owner: str
    customer_key: str
    columns: Mapping[str, ColumnRule]
    kind: Literal["customer", "aggregate"] = "customer"
    max_rows_per_unit: int = 1
    max_groups_per_unit: int = 1
    rules: DatasetRules = field(default_factory=DatasetRules)
    count_column: str | None = None
    min_row_count: int = 1

    @property
    def name(self) -> str:
        return self.id.split(".", 1)[1]

    @property
    def is_aggregate(self) -> bool:
        return self.kind == "aggregate"

    def column(self, name: str) -> ColumnRule | None:
        return self.columns.get(name)


@dataclass(frozen=True)
class Rules:
    min_group_size: int = 0
    max_groups_per_query: int = 10_000


@dataclass(frozen=True)
class Policy:
    """A parsed, validated policy document (one version)."""

    collaboration: str
    privacy: PrivacySettings
    budgets: Mapping[str, Budget]
    datasets: Mapping[str, DatasetPolicy]
    joins: frozenset[frozenset[str]]
    rules: Rules = field(default_factory=Rules)
    networks: Mapping[str, NetworkPolicy] = field(default_factory=dict)

    @property
    def measure(self) -> str:
        """What the ledger composes: ``epsilon`` (pure DP) or ``rho`` (zCDP, gaussian)."""
        return "rho" if self.privacy.mechanism == "gaussian" else "epsilon"

    def budget_total(self, org: str) -> float:
        """The organisation's budget in the policy's measure."""
        budget = self.budgets[org]
        if self.measure == "epsilon":
            return budget.epsilon
        if budget.rho is not None:
            return budget.rho
        return epsilon_to_rho(budget.epsilon, self.privacy.delta)

    @property
    def owners(self) -> frozenset[str]:
        return frozenset(d.owner for d in self.datasets.values())

    def dataset(self, dataset_id: str) -> DatasetPolicy | None:
        return self.datasets.get(dataset_id)

    def may_join(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.joins

    def network(self, network_id: str) -> NetworkPolicy | None:
        return self.networks.get(network_id)

    def network_of(self, dataset_id: str) -> NetworkPolicy | None:
        """The benchmark network ``dataset_id`` belongs to (a dataset is in at most one)."""
        return next((n for n in self.networks.values() if dataset_id in n.datasets), None)

    def datasets_behind(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """``names`` with every network followed by its member datasets (for audit and access)."""
        result: list[str] = []
        for name in names:
            found = self.network(name)
            for dataset_id in (name, *(found.datasets if found else ())):
                if dataset_id not in result:
                    result.append(dataset_id)
        return result


def _pair(raw: object, path: str) -> tuple[float, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        raise InvalidPolicy(path, "must be a list [lo, hi]")
    return (_number(raw[0], path), _number(raw[1], path))


def _parse_column(name: str, raw: object, path: str) -> ColumnRule:
    obj = _mapping(raw, path)
    _no_unknown(
        obj,
        {"use", "type", "keys", "bounds", "aggregates", "nullable", "bins", "per_unit_bounds"},
        path,
    )
    use = obj.get("use")
    if use not in _USES:
        raise InvalidPolicy(f"{path}.use", f"must be one of {list(_USES)}")
    default_type = "float" if use == "measure" else "string"
    keys = obj.get("keys")
    if keys is not None and not isinstance(keys, list):
        raise InvalidPolicy(f"{path}.keys", "must be a list")
    bounds = _pair(obj.get("bounds"), f"{path}.bounds")
    per_unit_bounds = _pair(obj.get("per_unit_bounds"), f"{path}.per_unit_bounds")
    aggregates = obj.get("aggregates", [])
    if not isinstance(aggregates, list):
        raise InvalidPolicy(f"{path}.aggregates", "must be a list")
    nullable = obj.get("nullable", False)
    if not isinstance(nullable, bool):
        raise InvalidPolicy(f"{path}.nullable", "must be true or false")
    bins = obj.get("bins")
    if bins is not None:
        if not isinstance(bins, list) or len(bins) > 1000:
            raise InvalidPolicy(f"{path}.bins", "must be a list of at most 1000 edges")
        bins = tuple(_number(b, f"{path}.bins") for b in bins)
    try:
        return ColumnRule(
            name=name,
            use=use,
            type=str(obj.get("type", default_type)),
            keys=tuple(keys) if keys is not None else None,
            bounds=bounds,
            aggregates=tuple(aggregates),
            nullable=nullable,
            bins=bins,
            per_unit_bounds=per_unit_bounds,
        )
    except InvalidPolicy as exc:
        raise InvalidPolicy(f"{path}.{exc.path}", exc.message.split(": ", 1)[-1]) from None


def _parse_dataset(dataset_id: str, raw: object, path: str) -> DatasetPolicy:
    obj = _mapping(raw, path)
    _no_unknown(
        obj,
        {
            "owner",
            "customer_key",
            "columns",
            "kind",
            "max_rows_per_unit",
            "max_groups_per_unit",
            "rules",
            "count_column",
            "min_row_count",
        },
        path,
    )
    if dataset_id.count(".") != 1:
        raise InvalidPolicy(path, "a dataset is named <owner>.<name>")
    owner_part, name_part = dataset_id.split(".")
    _check_name(owner_part, path)
    _check_name(name_part, path)
    owner = _check_name(obj.get("owner", owner_part), f"{path}.owner")
    if owner != owner_part:
        raise InvalidPolicy(f"{path}.owner", "must equal the <owner> part of the dataset name")
    kind = obj.get("kind", "customer")
    if kind not in ("customer", "aggregate"):
        raise InvalidPolicy(f"{path}.kind", "must be customer or aggregate")
    customer_key = obj.get("customer_key")
    if kind == "customer" and (not isinstance(customer_key, str) or not customer_key):
        raise InvalidPolicy(f"{path}.customer_key", "names the customer-key column; required")
    _check_kind_fields(obj, kind, path)
    max_rows = obj.get("max_rows_per_unit", 1)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= 1000:
        raise InvalidPolicy(f"{path}.max_rows_per_unit", "must be an integer in [1, 1000]")
    max_groups = obj.get("max_groups_per_unit", 1)
    if (
        isinstance(max_groups, bool)
        or not isinstance(max_groups, int)
        or not 1 <= max_groups <= 1000
    ):
        raise InvalidPolicy(f"{path}.max_groups_per_unit", "must be an integer in [1, 1000]")
    raw_columns = _mapping(obj.get("columns"), f"{path}.columns")
    if not raw_columns:
        raise InvalidPolicy(f"{path}.columns", "must describe at least one column")
    columns: dict[str, ColumnRule] = {}
    for col, rule in raw_columns.items():
        if not isinstance(col, str) or not col:
            raise InvalidPolicy(f"{path}.columns", "column names must be non-empty strings")
        if col.startswith("_"):
            raise InvalidPolicy(f"{path}.columns.{col}", "names starting with '_' are reserved")
        if col == customer_key:
            raise InvalidPolicy(f"{path}.columns.{col}", "the customer key is not a column rule")
        if col == obj.get("count_column"):
            raise InvalidPolicy(f"{path}.columns.{col}", "the count column is not a column rule")
        columns[col] = _parse_column(col, rule, f"{path}.columns.{col}")
        measured = columns[col].use == "measure"
        if measured and kind == "aggregate" and columns[col].per_unit_bounds is None:
            raise InvalidPolicy(
                f"{path}.columns.{col}.per_unit_bounds",
                "a measure of an aggregate dataset needs per_unit_bounds [lo, hi]",
            )
        if kind == "customer" and columns[col].per_unit_bounds is not None:
            raise InvalidPolicy(
                f"{path}.columns.{col}.per_unit_bounds",
                "only measures of aggregate datasets have per_unit_bounds",
            )
    count_column, min_row_count = None, 1
    if kind == "aggregate":
        count_column = str(obj["count_column"])
        min_row_count = int(obj["min_row_count"])
        # Each customer behind a row adds exactly 1 to its count: a measure bounded per unit.
        columns[count_column] = ColumnRule(
            name=count_column,
            use="measure",
            type="int",
            aggregates=("sum",),
            per_unit_bounds=(1.0, 1.0),
        )
    return DatasetPolicy(
        id=dataset_id,
        owner=owner,
        customer_key=str(customer_key or ""),
        columns=columns,
        kind=kind,
        max_rows_per_unit=max_rows,
        max_groups_per_unit=max_groups,
        rules=_parse_dataset_rules(obj.get("rules", {}), f"{path}.rules"),
        count_column=count_column,
        min_row_count=min_row_count,
    )


def _check_kind_fields(obj: Mapping[str, Any], kind: str, path: str) -> None:
    """The fields only one kind of dataset has: a customer key, or a count column."""
    if kind == "customer":
        for key in ("count_column", "min_row_count"):
            if key in obj:
                raise InvalidPolicy(f"{path}.{key}", "only aggregate datasets have this field")
        return
    if obj.get("customer_key") is not None:
        raise InvalidPolicy(
            f"{path}.customer_key", "an aggregate dataset has no customer key (rows aggregate)"
        )
    if "max_groups_per_unit" in obj:
        raise InvalidPolicy(
            f"{path}.max_groups_per_unit",
            "an aggregate dataset's rows of one customer may fall in up to max_rows_per_unit "
            "groups; it cannot be bounded further",
        )
    count_column = obj.get("count_column")
    if not isinstance(count_column, str) or not count_column or count_column.startswith("_"):
        raise InvalidPolicy(
            f"{path}.count_column", "names the column counting the customers behind each row"
        )
    min_rows = obj.get("min_row_count")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise InvalidPolicy(f"{path}.min_row_count", "must be an integer >= 1; required")


def _parse_dataset_rules(raw: object, path: str) -> DatasetRules:
    rules = _mapping(raw, path)
    _no_unknown(rules, {"min_group_size", "max_groups_per_query", "max_epsilon_per_query"}, path)
    counts: dict[str, int | None] = {}
    for key in ("min_group_size", "max_groups_per_query"):
        value = rules.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidPolicy(f"{path}.{key}", "must be an integer >= 0")
        counts[key] = value
    cap = rules.get("max_epsilon_per_query")
    if cap is not None:
        cap = _number(cap, f"{path}.max_epsilon_per_query")
        if cap <= 0:
            raise InvalidPolicy(f"{path}.max_epsilon_per_query", "must be > 0")
    return DatasetRules(counts["min_group_size"], counts["max_groups_per_query"], cap)


def parse_policy(raw: object) -> Policy:
    """Validate a policy document (already parsed from YAML or JSON) into a :class:`Policy`.

    Raises:
        InvalidPolicy: naming the path of the first offending entry and the rule it breaks.
    """
    doc = _mapping(raw, "")
    _no_unknown(
        doc, {"collaboration", "privacy", "budgets", "datasets", "joins", "rules", "networks"}, ""
    )
    collaboration = _check_name(doc.get("collaboration"), "collaboration")

    privacy_raw = _mapping(doc.get("privacy", {}), "privacy")
    _no_unknown(privacy_raw, {"mechanism", "max_epsilon_per_query", "delta"}, "privacy")
    privacy = PrivacySettings(
        mechanism=str(privacy_raw.get("mechanism", "laplace")),
        max_epsilon_per_query=_number(
            privacy_raw.get("max_epsilon_per_query", 1.0), "privacy.max_epsilon_per_query"
        ),
        delta=_number(privacy_raw.get("delta", 1e-7), "privacy.delta"),
    )

    budgets: dict[str, Budget] = {}
    for org, raw_budget in _mapping(doc.get("budgets", {}), "budgets").items():
        path = f"budgets.{org}"
        _check_name(org, path)
        b = _mapping(raw_budget, path)
        _no_unknown(b, {"epsilon", "rho", "period"}, path)
        if ("epsilon" in b) == ("rho" in b):
            raise InvalidPolicy(path, "give exactly one of epsilon or rho")
        rho = None
        if "rho" in b:
            if privacy.mechanism != "gaussian":
                raise InvalidPolicy(f"{path}.rho", "a rho budget needs mechanism: gaussian")
            rho = _number(b["rho"], f"{path}.rho")
            if rho < 0:
                raise InvalidPolicy(f"{path}.rho", "must be >= 0")
            if privacy.delta <= 0:
                raise InvalidPolicy("privacy.delta", "zCDP budgets need delta > 0")
            epsilon = rho_to_epsilon(rho, privacy.delta)
        else:
            epsilon = _number(b.get("epsilon"), f"{path}.epsilon")
        try:
            budgets[org] = Budget(epsilon=epsilon, period=b.get("period", "month"), rho=rho)
        except InvalidPolicy as exc:
            raise InvalidPolicy(path, exc.message.split(": ", 1)[-1]) from None

    datasets: dict[str, DatasetPolicy] = {}
    for dataset_id, raw_ds in _mapping(doc.get("datasets"), "datasets").items():
        datasets[str(dataset_id)] = _parse_dataset(
            str(dataset_id), raw_ds, f"datasets.{dataset_id}"
        )
    if not datasets:
        raise InvalidPolicy("datasets", "must describe at least one dataset")

    joins: set[frozenset[str]] = set()
    raw_joins = doc.get("joins", [])
    if not isinstance(raw_joins, list):
        raise InvalidPolicy("joins", "must be a list of [dataset, dataset] pairs")
    for i, pair in enumerate(raw_joins):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(ds, str) for ds in pair)
            or pair[0] == pair[1]
        ):
            raise InvalidPolicy(f"joins[{i}]", "must be a pair of two different datasets")
        for which, ds in zip(("first", "second"), pair, strict=True):
            if ds not in datasets:  # an undescribed name is not echoed: it may be data
                raise InvalidPolicy(
                    f"joins[{i}]", f"the {which} dataset is not one the policy describes"
                )
            if datasets[ds].is_aggregate:
                raise InvalidPolicy(
                    f"joins[{i}]",
                    f"names aggregate dataset {ds!r}: aggregate rows cannot be joined",
                )
        joins.add(frozenset(pair))

    rules_raw = _mapping(doc.get("rules", {}), "rules")
    _no_unknown(rules_raw, {"min_group_size", "max_groups_per_query"}, "rules")
    min_group = rules_raw.get("min_group_size", 0)
    max_groups = rules_raw.get("max_groups_per_query", 10_000)
    for key, value in (("min_group_size", min_group), ("max_groups_per_query", max_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidPolicy(f"rules.{key}", "must be an integer >= 0")
    return Policy(
        collaboration=collaboration,
        privacy=privacy,
        budgets=budgets,
        datasets=datasets,
        joins=frozenset(joins),
        rules=Rules(min_group_size=min_group, max_groups_per_query=max_groups),
        networks=parse_networks(_mapping(doc.get("networks", {}), "networks"), datasets),
    )
