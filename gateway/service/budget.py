"""Reading privacy budgets: spent and left per analyst organisation and period."""

from __future__ import annotations

from typing import Any

from gateway.domain.budget import Epsilon, Period
from gateway.domain.model import Principal
from gateway.domain.policy import Policy
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services


def budget_entry(
    services: Services, collab_id: str, org: str, policy: Policy, short: bool = False
) -> dict[str, Any]:
    """One organisation's budget in the current period (zero left, never negative)."""
    budget = policy.budgets[org]
    period = Period.current(budget.period, services.clock())
    total = Epsilon(budget.epsilon)
    spent = services.ledger.spent(collab_id, org, period.key)
    entry: dict[str, Any] = {
        "epsilon_total": total.value,
        "epsilon_spent": round(spent.value, 12),
        "epsilon_left": round(spent.left_of(total).value, 12),
    }
    if not short:
        entry = {
            "org": org,
            **entry,
            "period": budget.period,
            "resets_at": period.resets_at.isoformat() if period.resets_at else None,
        }
    return entry


def read_budgets(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Analysts see their own organisation's entry; compliance officers see every entry."""
    require_role(principal, "analyst", "compliance")
    member_collaboration(services, principal, collab_id)
    _, policy = active_policy(services, collab_id)
    orgs = sorted(policy.budgets)
    if principal.role == "analyst":
        orgs = [o for o in orgs if o == principal.org]
    return {"budgets": [budget_entry(services, collab_id, org, policy) for org in orgs]}
