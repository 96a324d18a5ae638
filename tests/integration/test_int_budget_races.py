"""Budget under races: 50 concurrent queries against a budget for exactly 10 (issue 5, point 4).

Each round raises acme's budget by exactly ten queries' worth (ε 1.0 at ε 0.1 a query, through
an approved policy version), then 50 threads call :func:`run_query` at once, each with its own
plan so that none is a replay. The ledger's single transaction must let exactly 10 through,
refuse the other 40 with ``budget_exceeded``, and leave the ledger at exactly the budget.
``bench/budget_races.py`` runs the same check for 100 rounds and records the overspend.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.domain.errors import BudgetExceeded
from gateway.domain.model import Principal
from gateway.service.access import authenticate
from gateway.service.context import Services
from gateway.service.queries import run_query

DEMO = "acme-bigmart-cx"
ROUNDS = 10
THREADS = 50
FIT = 10  # queries of EPSILON that each round's budget increase holds
EPSILON = 0.1
CHANNELS = ("store", "online", "app")
REGIONS = ("north", "south", "east", "west")


def _subsets(values: tuple[str, ...]) -> list[list[str]]:
    return [list(c) for n in range(1, len(values) + 1) for c in itertools.combinations(values, n)]


def race_bodies(count: int = THREADS) -> list[dict[str, Any]]:
    """``count`` distinct plans, all at ε 0.1: a count over different channel × region filters."""
    filters = list(itertools.product(_subsets(CHANNELS), _subsets(REGIONS)))
    assert len(filters) >= count
    return [
        {
            "plan": {
                "from": "bigmart.loyalty",
                "where": [
                    {"column": "channel", "op": "in", "values": channels},
                    {"column": "region", "op": "in", "values": regions},
                ],
                "group_by": ["region"],
                "aggregates": [{"fn": "count", "as": "customers"}],
            },
            "epsilon": EPSILON,
        }
        for channels, regions in filters[:count]
    ]


def race(
    services: Services, principal: Principal, bodies: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every body in its own thread, released together; the releases and refusal codes."""
    start = threading.Barrier(len(bodies))

    def ask(body: dict[str, Any]) -> dict[str, Any] | str:
        start.wait()
        try:
            return run_query(services, principal, DEMO, body)
        except BudgetExceeded as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        outcomes = list(pool.map(ask, bodies))
    releases = [o for o in outcomes if isinstance(o, dict)]
    refusals = [o for o in outcomes if isinstance(o, str)]
    return releases, refusals


def _one(services: Services, sql: str, params: tuple[Any, ...]) -> Any:
    row = services.db.one(sql, params)
    assert row is not None
    return row[0]


def test_concurrent_queries_never_overspend(
    services: Services, demo_keys: dict[str, Any], put_policy: Callable[..., Any]
) -> None:
    principal = authenticate(services, f"Bearer {demo_keys['acme']['analyst']}")
    bodies = race_bodies()
    seen: set[str] = set()
    for round_ in range(1, ROUNDS + 1):
        total = round_ * FIT * EPSILON

        def set_budget(doc: dict[str, Any], total: float = total) -> None:
            doc["budgets"]["acme"]["epsilon"] = total

        put_policy(set_budget)  # a new policy version: last round's plans are not replays
        releases, refusals = race(services, principal, bodies)

        assert len(releases) == FIT, (round_, len(releases))
        assert refusals == ["budget_exceeded"] * (THREADS - FIT), round_
        assert all(r["replay"] is False and r["epsilon_spent"] == EPSILON for r in releases)
        ids = {r["query_id"] for r in releases}
        assert len(ids) == FIT and not ids & seen
        seen |= ids
        spent = _one(
            services,
            "SELECT SUM(epsilon) FROM ledger WHERE collaboration = ? AND org = ?",
            (DEMO, "acme"),
        )
        assert abs(spent - total) < 1e-9, (round_, spent, total)
        assert (
            _one(
                services,
                "SELECT COUNT(*) FROM ledger WHERE collaboration = ? AND org = ?",
                (DEMO, "acme"),
            )
            == round_ * FIT
        )
        assert (
            _one(
                services,
                "SELECT COUNT(*) FROM releases WHERE collaboration = ? AND org = ?",
                (DEMO, "acme"),
            )
            == round_ * FIT
        )
    ledger_ids = services.db.execute(
        "SELECT query_id FROM ledger WHERE collaboration = ? AND org = ? AND status = 'released'",
        (DEMO, "acme"),
    )
    assert {q for (q,) in ledger_ids} == seen
    # Every outcome was audited once, and concurrent appends kept the hash chain intact.
    outcomes = dict(
        services.db.execute(
            "SELECT action, COUNT(*) FROM audit_events WHERE action LIKE 'query.%' GROUP BY action"
        )
    )
    assert outcomes == {
        "query.released": ROUNDS * FIT,
        "query.refused": ROUNDS * (THREADS - FIT),
    }
    assert services.audit.verify()[0]
