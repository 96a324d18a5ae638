"""Side-by-side queries: several plans in one release, each noised on its own.

A brand's customer-level metric and a partner's aggregate metric cannot be joined row by row
(an aggregate row is not a customer), but they can stand next to each other when they share a
dimension: NPS from the brand's survey by region beside spend per customer from the retailer's
weekly aggregates by region. The plan::

    {"side_by_side": [{"from": "acme.survey", ...}, {"from": "shopco.store_weeks", ...}],
     "on": ["region"]}

Each part is checked as a query of its own against the policy (its own sensitivities, its own
``min_group_size``), at an equal share of the query's privacy loss; the shares add up to the
loss charged, reserved once before any noise is drawn. The parts are released one by one and
their rows merged by the ``on`` keys afterwards: post-processing of released values, which
costs nothing more.

Limits: every part groups by exactly the ``on`` names, over public keys or bucket labels
(partition selection would make one part's groups depend on another's noise); quantiles are
not offered side by side; the query takes ``epsilon``, not an accuracy target.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from gateway.domain.budget import epsilon_to_rho, rho_to_epsilon
from gateway.domain.errors import PolicyViolation, UnsupportedQuery
from gateway.domain.plan import QueryRequest
from gateway.domain.policy import DatasetPolicy, Policy

if TYPE_CHECKING:
    from gateway.domain.checker import CheckedQuery

__all__ = ["check_side_by_side", "part_key"]


def part_key(index: int, key: str) -> str:
    """The composite's name of part ``index``'s statistic ``key`` (``p0:count``, …)."""
    return f"p{index}:{key}"


def check_side_by_side(
    request: QueryRequest, policy: Policy, analyst_org: str, epsilon: float
) -> CheckedQuery:
    """Check every part of a side-by-side plan; the composite carries them in ``parts``.

    The composite's statistics are the parts' statistics under :func:`part_key` names, so the
    DP layer certifies the total cost of every mechanism at once; its outputs are empty (each
    part formats its own).

    Raises:
        PolicyViolation: a part the policy refuses, or ``epsilon`` above the strictest cap of
            every dataset the parts read.
        UnsupportedQuery: an accuracy target, private group keys or a quantile in a part.
    """
    from gateway.domain.checker import CheckedQuery, check_query, effective_rules

    plan = request.plan
    if request.accuracy is not None:
        raise UnsupportedQuery(
            "accuracy: a side-by-side query takes epsilon, split equally over its parts"
        )
    # An equal share of the loss in the policy's measure (ρ under zCDP, where ε does not add).
    delta = policy.privacy.delta
    pure = policy.measure == "epsilon"
    share = (epsilon if pure else epsilon_to_rho(epsilon, delta)) / len(plan.parts)
    part_epsilon = share if pure else rho_to_epsilon(share, delta)
    parts: list[CheckedQuery] = []
    for i, part_plan in enumerate(plan.parts):
        part = check_query(QueryRequest(plan=part_plan, epsilon=part_epsilon), policy, analyst_org)
        where = f"plan.side_by_side[{i}]"
        if part.private_groups:
            raise UnsupportedQuery(
                f"{where}.group_by: side by side, groups need public keys or bucket labels"
            )
        if any(s.kind == "quantile" for s in part.statistics):
            raise UnsupportedQuery(f"{where}.aggregates: quantiles are not offered side by side")
        parts.append(part)

    datasets: dict[str, DatasetPolicy] = {}
    for part in parts:
        datasets.update((ds.id, ds) for ds in part.datasets)
    binding = effective_rules(policy, tuple(datasets.values()))
    cap = binding["max_epsilon_per_query"]
    if epsilon > cap.value:
        raise PolicyViolation(
            cap.path, f"epsilon {epsilon:g} is above the per-query cap {cap.value:g}"
        )

    names = list(plan.on)
    group_by = tuple(next(g for g in parts[0].group_by if g.name == n) for n in names)
    keys: dict[tuple[str | int, ...], None] = {}
    for part in parts:
        order = [[g.name for g in part.group_by].index(name) for name in names]
        keys.update((tuple(k[j] for j in order), None) for k in part.group_keys)
    statistics = tuple(
        dataclasses.replace(s, key=part_key(i, s.key))
        for i, part in enumerate(parts)
        for s in part.statistics
    )
    return CheckedQuery(
        request=request,
        epsilon=epsilon,
        datasets=tuple(datasets.values()),
        group_by=group_by,
        filters=(),
        group_keys=tuple(keys),
        private_groups=False,
        statistics=statistics,
        outputs=(),
        rows_per_customer=max(p.rows_per_customer for p in parts),
        groups_per_customer=max(p.groups_per_customer for p in parts),
        min_group_size=max(p.min_group_size for p in parts),
        delta=policy.privacy.delta,
        measure=policy.measure,
        binding=binding,
        loss=sum(p.loss for p in parts),
        parts=tuple(parts),
    )
