"""Reading privacy budgets: spent and left per analyst organisation and period."""

from __future__ import annotations

from typing import Any

from gateway.domain.budget import Period, rho_to_epsilon
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


def read_budgets(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Analysts see their own organisation's entry; compliance officers see every entry."""
    require_role(principal, "analyst", "compliance")
    member_collaboration(services, principal, collab_id)
    _, policy = active_policy(services, collab_id)
    orgs = sorted(policy.budgets)
    if principal.role == "analyst":
        orgs = [o for o in orgs if o == principal.org]
    return {"budgets": [budget_entry(services, collab_id, org, policy) for org in orgs]}
