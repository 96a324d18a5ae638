"""What the checker needs to know about aggregate datasets and benchmark networks.

Privacy unit: one customer. In an aggregate dataset a customer appears in at most ``k =
max_rows_per_unit`` rows (the owner's declaration), adds exactly 1 to each of those rows'
count and at most ``b = max(|lo|, |hi|)`` of ``per_unit_bounds`` to each of their measure
values. Removing the customer therefore moves

* a sum of the count column by at most ``k`` (L1, over any grouping: its rows touch at most
  ``k`` groups, and at worst all fall in one group, so L2 ≤ L∞ ≤ ``k`` too);
* a sum of a measure by at most ``k · b`` (L1 and L2 alike: the worst case is all ``k`` rows
  in one group), plus ``k`` fixed-point units when float values are rounded to cents (a row's
  rounded value can move one unit more than its exact value);
* a centred sum ``Σ (value - mid · count)`` (a mean's numerator) by ``k · max(hi - mid, mid -
  lo)``, plus the same rounding.

Those are the sensitivities the statistics carry; the DP layer noises them exactly as it noises
a customer table's counts and sums. A benchmark network stacks its members' rows, and one
customer may be in every member's rows: its ``k`` is the sum of the members'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.domain.errors import PolicyViolation
from gateway.domain.policy import ColumnRule, DatasetPolicy, DatasetRules, Policy
from gateway.domain.policy_network import NetworkPolicy

if TYPE_CHECKING:
    from gateway.domain.checker import ResolvedGroup, ResolvedPredicate

__all__ = [
    "Comparison",
    "check_direct_access",
    "check_network_use",
    "network_dataset",
    "per_unit_extent",
]


@dataclass(frozen=True)
class Comparison:
    """A benchmark split: group ``group`` has label ``of`` (one member) and ``against`` (the rest).

    The release then also holds ``of − against`` for every mean, with its interval.
    """

    group: str
    of: str
    against: str


def network_dataset(policy: Policy, network: NetworkPolicy) -> DatasetPolicy:
    """The network as one (virtual) aggregate dataset: the members' rows, stacked.

    Its columns are the members' (identical by policy validation) plus ``member_column``, a
    dimension whose public keys are the members' organisations; its ``max_rows_per_unit`` is
    the members' sum, since one customer may be counted by every member.
    """
    members = [policy.datasets[d] for d in network.datasets]
    first = members[0]
    columns = {
        network.member_column: ColumnRule(
            name=network.member_column, use="dimension", keys=network.members
        ),
        **first.columns,
    }
    return DatasetPolicy(
        id=network.id,
        owner=network.id.split(".", 1)[0],
        customer_key="",
        columns=columns,
        kind="aggregate",
        max_rows_per_unit=sum(d.max_rows_per_unit for d in members),
        rules=DatasetRules(),
        count_column=first.count_column,
        min_row_count=max(d.min_row_count for d in members),
    )


def check_direct_access(policy: Policy, dataset: DatasetPolicy, org: str) -> None:
    """A network member's dataset is queried by name only by its owner and the named orgs.

    Raises:
        PolicyViolation: naming ``networks.<id>.named``.
    """
    network = policy.network_of(dataset.id)
    if network is None or org == dataset.owner or network.sees_names(org):
        return
    raise PolicyViolation(
        f"networks.{network.id}.named",
        f"{dataset.id} is a member of network {network.id}; query the network instead "
        "(your organisation may not see another member's figures by name)",
    )


def per_unit_extent(rule: ColumnRule) -> tuple[int, int, int]:
    """``(lo, hi, rounding)`` of one customer's contribution, in fixed-point units.

    ``lo`` and ``hi`` are rounded outwards, so the sensitivity is never understated; rounding is
    1 for float measures (a row's value is rounded to cents once, after summing its customers)
    and 0 for integers.
    """
    assert rule.per_unit_bounds is not None
    scale = rule.scale
    lo = math.floor(rule.per_unit_bounds[0] * scale)
    hi = math.ceil(rule.per_unit_bounds[1] * scale)
    return lo, hi, 1 if rule.type == "float" else 0


def check_network_use(
    network: NetworkPolicy,
    org: str,
    group_by: tuple[ResolvedGroup, ...],
    filters: tuple[ResolvedPredicate, ...],
) -> Comparison | None:
    """Enforce who may see members by name; find the benchmark split, if the query has one.

    An organisation in ``network.named`` may use the member column like any dimension. Any
    other may use it only in one bucket, ``CASE WHEN <member_column> = '<its own org>' THEN a
    ELSE b END``, may group and filter by the ``compare_by`` dimensions only (a store id would
    single out the member that owns the store), and only when at least ``min_peers`` other
    members stand behind the network.

    Returns:
        The split (bucket name, own label, rest label) when the query groups by such a bucket.

    Raises:
        PolicyViolation: naming ``networks.<id>.named``, ``.compare_by`` or ``.min_peers``.
    """
    from gateway.domain.checker import ResolvedFilter

    named = f"networks.{network.id}.named"
    member = network.member_column

    def reads_member(p: ResolvedPredicate) -> bool:
        if isinstance(p, ResolvedFilter):
            return p.column.name == member
        return any(reads_member(item) for item in p.items)

    def dimensions(p: ResolvedPredicate) -> list[str]:
        if isinstance(p, ResolvedFilter):
            return [p.column.name]
        return [name for item in p.items for name in dimensions(item)]

    def split(group: ResolvedGroup) -> Comparison | None:
        if group.default is None or len(group.cases) != 1:
            return None
        when, label = group.cases[0]
        if not isinstance(when, ResolvedFilter) or when.column.name != member:
            return None
        if when.op != "eq" or label == group.default:
            return None
        if not network.sees_names(org) and when.values != (org,):
            return None
        return Comparison(group.name, label, group.default)

    comparison: Comparison | None = None
    for group in group_by:
        found = split(group)
        comparison = comparison or found
        uses_member = (group.column is not None and group.column.name == member) or any(
            reads_member(when) for when, _ in group.cases
        )
        if uses_member and found is None and not network.sees_names(org):
            raise PolicyViolation(
                named,
                f"your organisation may group by {member} only to split its own rows from the "
                f"rest: CASE WHEN {member} = '{org}' THEN ... ELSE ... END",
            )
    if not network.sees_names(org):
        if any(reads_member(p) for p in filters):
            raise PolicyViolation(named, f"your organisation may not filter on {member}")
        read = [name for p in filters for name in dimensions(p)]
        for group in group_by:
            read += [group.column.name] if group.column is not None else []
            read += [name for when, _ in group.cases for name in dimensions(when)]
        outside = sorted({name for name in read if name not in (member, *network.compare_by)})
        if outside:
            allowed = ", ".join(network.compare_by) or "none"
            raise PolicyViolation(
                f"networks.{network.id}.compare_by",
                f"your organisation may group and filter the network by the shared dimensions "
                f"only ({allowed}); {outside[0]} is not one of them",
            )
        if comparison is not None and org not in network.members:
            raise PolicyViolation(named, f"only a member of {network.id} can split its own rows")
        if network.peers_of(org) < network.min_peers:
            raise PolicyViolation(
                f"networks.{network.id}.min_peers",
                f"fewer than {network.min_peers} other members stand behind the network's figures",
            )
    return comparison
