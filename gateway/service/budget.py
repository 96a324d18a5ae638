"""Reading privacy budgets: spent and left per analyst organisation and period, now and over
time. Everything here reads the ledger; nothing spends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.domain.budget import Period, rho_to_epsilon
from gateway.domain.model import Principal
from gateway.domain.policy import Policy
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services
from gateway.store.charges import Charge, charges

MAX_POINTS = 400
"""Points per series at most: past that, charges are summed per UTC day (then month, year)."""
MAX_PERIODS = 12
"""Periods per organisation at most: the current one and the newest earlier ones with charges."""


def budget_entry(
    services: Services, collab_id: str, org: str, policy: Policy, short: bool = False
) -> dict[str, Any]:
    """One organisation's budget in the current period (zero left, never negative)."""
    budget = policy.budgets[org]
    period = Period.current(budget.period, services.clock())
    total = policy.budget_total(org)
    spent = services.ledger.spent(collab_id, org, period.key, policy.measure)
    left = max(0.0, total - spent)
    if policy.measure == "epsilon":
        entry: dict[str, Any] = {
            "epsilon_total": total,
            "epsilon_spent": round(spent, 12),
            "epsilon_left": round(left, 12),
        }
    else:
        # zCDP composes in ρ; the ε figures are the (ε, δ) equivalents at the policy's δ.
        delta = policy.privacy.delta
        entry = {
            "epsilon_total": round(rho_to_epsilon(total, delta), 12),
            "epsilon_spent": round(rho_to_epsilon(spent, delta), 12),
            "epsilon_left": round(rho_to_epsilon(left, delta), 12),
            "rho_total": total,
            "rho_spent": round(spent, 12),
            "rho_left": round(left, 12),
            "delta": delta,
        }
    if not short:
        entry = {
            "org": org,
            **entry,
            "period": budget.period,
            "resets_at": period.resets_at.isoformat() if period.resets_at else None,
        }
    return entry


def _visible_orgs(principal: Principal, policy: Policy) -> list[str]:
    """Analysts see their own organisation; compliance officers every analyst organisation."""
    orgs = sorted(policy.budgets)
    if principal.role == "analyst":
        orgs = [o for o in orgs if o == principal.org]
    return orgs


def read_budgets(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Analysts see their own organisation's entry; compliance officers see every entry."""
    require_role(principal, "analyst", "compliance")
    member_collaboration(services, principal, collab_id)
    _, policy = active_policy(services, collab_id)
    orgs = _visible_orgs(principal, policy)
    return {"budgets": [budget_entry(services, collab_id, org, policy) for org in orgs]}


def read_budget_history(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Cumulative spend per analyst organisation and period, from the ledger's charges.

    Who sees which organisation is as for :func:`read_budgets`. Each series is one organisation
    in one period: the current period (always, with no points if nothing is spent yet) and up
    to ``MAX_PERIODS - 1`` earlier ones that have charges, oldest first. A point is one charge
    (``bucket: "query"``), or, past ``MAX_POINTS`` charges, the sum of a UTC day's (then month's,
    year's) charges at the time of its last one. ``epsilon_spent`` is cumulative within the
    period (every reservation counts, as in the budget), ``epsilon_total`` the active policy's
    budget; a zCDP policy composes ρ and gives ε as (ε, δ) equivalents, with ``rho_*`` too.

    Example:
        >>> read_budget_history(services, analyst, "acme-bigmart-cx")  # doctest: +SKIP
        {'series': [{'org': 'acme', 'period': '2026-11', 'bucket': 'query', 'points': [
            {'at': '2026-11-23T16:29:13.120000+00:00', 'epsilon_spent': 0.5,
             'epsilon_total': 8.0}]}]}
    """
    require_role(principal, "analyst", "compliance")
    member_collaboration(services, principal, collab_id)
    _, policy = active_policy(services, collab_id)
    now = services.clock()
    series: list[dict[str, Any]] = []
    for org in _visible_orgs(principal, policy):
        current = Period.current(policy.budgets[org].period, now).key
        by_period: dict[str, list[Charge]] = {}
        for charge in charges(services.db, collab_id, org):
            by_period.setdefault(charge.period, []).append(charge)
        earlier = sorted((k for k in by_period if k != current), key=lambda k: by_period[k][-1].at)
        for period in [*earlier[-(MAX_PERIODS - 1) :], current]:
            bucket, points = _points(policy, org, by_period.get(period, []))
            series.append({"org": org, "period": period, "bucket": bucket, "points": points})
    return {"series": series}


# Coarser and coarser UTC buckets for a series with too many charges to show one by one.
_BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("day", lambda at: at.strftime("%Y-%m-%d")),
    ("month", lambda at: at.strftime("%Y-%m")),
    ("year", lambda at: at.strftime("%Y")),
)


def _points(policy: Policy, org: str, charged: Sequence[Charge]) -> tuple[str, list[Any]]:
    """The cumulative points of one period's charges, and the bucket they are summed in."""
    measure = policy.measure
    cumulative: list[tuple[datetime, float]] = []
    spent = 0.0
    for charge in charged:
        spent += charge.rho if measure == "rho" else charge.epsilon
        cumulative.append((charge.at, spent))
    bucket = "query"
    for name, key in _BUCKETS:
        if len(cumulative) <= MAX_POINTS:
            break
        last_of: dict[str, tuple[datetime, float]] = {}
        for at, value in cumulative:
            last_of[key(at)] = (at, value)  # the bucket's cumulative figure is its last one's
        bucket, cumulative = name, list(last_of.values())
    total = policy.budget_total(org)
    return bucket, [
        {"at": at.isoformat(), **_figures(policy, value, total)} for at, value in cumulative
    ]


def _figures(policy: Policy, spent: float, total: float) -> dict[str, Any]:
    if policy.measure == "epsilon":
        return {"epsilon_spent": round(spent, 12), "epsilon_total": total}
    delta = policy.privacy.delta
    return {
        "epsilon_spent": round(rho_to_epsilon(spent, delta), 12),
        "epsilon_total": round(rho_to_epsilon(total, delta), 12),
        "rho_spent": round(spent, 12),
        "rho_total": total,
    }
