"""``GET …/budget/history``: spend over time per analyst organisation, from the ledger.

The console used to build this chart from the audit trail, which holds only the queries that
touch the officer's own data. The history reads the ledger instead, so every charge counts;
who sees which organisation follows ``GET …/budget`` (an analyst its own, a compliance officer
every analyst organisation of the collaboration). Periods are UTC months; a period with many
charges is summed per day (then month) so the answer stays small.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from clients import AsyncGatewayClient
from gateway.domain.budget import Period, QueryCost, rho_to_epsilon
from gateway.service import budget as budget_service
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
HISTORY = f"/v1/collaborations/{DEMO}/budget/history"
BUDGET = f"/v1/collaborations/{DEMO}/budget"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)

JOINT = {
    "from": "bigmart.loyalty",
    "join": ["acme.survey"],
    "group_by": ["region"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}
FORBIDDEN = {"from": "bigmart.loyalty", "group_by": ["email"], "aggregates": [{"fn": "count"}]}


def _count(dataset: str) -> dict[str, Any]:
    return {"from": dataset, "aggregates": [{"fn": "count", "as": "n"}]}


@pytest.fixture
def clock(services: Services) -> Callable[[datetime], None]:
    """``clock(t)`` sets the gateway's clock to ``t`` (starts at :data:`NOW`)."""

    def set_to(at: datetime) -> None:
        services.clock = lambda: at

    set_to(NOW)
    return set_to


def _history(api: Any, key: str) -> list[dict[str, Any]]:
    answer = api.get(HISTORY, key=key)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"series"}
    series: list[dict[str, Any]] = answer.json()["series"]
    return series


def _budgets(api: Any, key: str) -> dict[str, dict[str, Any]]:
    answer = api.get(BUDGET, key=key)
    assert answer.status_code == 200, answer.text
    return {b["org"]: b for b in answer.json()["budgets"]}


def _query(api: Any, key: str, plan: dict[str, Any], epsilon: float, status: int = 200) -> Any:
    answer = api.post(QUERIES, key=key, json={"plan": plan, "epsilon": epsilon})
    assert answer.status_code == status, answer.text
    return answer.json()


def test_every_charge_is_a_point_whoever_the_query_touched(
    api: Any, demo_keys: dict[str, Any], services: Services, clock: Any
) -> None:
    acme, bigmart = demo_keys["acme"], demo_keys["bigmart"]
    assert _history(api, acme["analyst"]) == [
        {"org": "acme", "period": "2026-11", "bucket": "query", "points": []}
    ]
    times = [NOW + timedelta(minutes=m) for m in (1, 2, 3, 4, 5)]
    clock(times[0])
    _query(api, acme["analyst"], _count("acme.survey"), 0.1)  # not on bigmart's data
    clock(times[1])
    _query(api, acme["analyst"], JOINT, 0.2)
    clock(times[2])
    assert _query(api, acme["analyst"], JOINT, 0.2)["replay"] is True  # no charge
    _query(api, acme["analyst"], FORBIDDEN, 0.3, status=403)  # no charge
    clock(times[3])
    _query(api, bigmart["analyst"], _count("bigmart.loyalty"), 0.25)
    clock(times[4])
    _query(api, acme["analyst"], _count("acme.survey"), 0.4)  # not on bigmart's data

    def points(*spent: tuple[datetime, float]) -> list[dict[str, Any]]:
        total = 8.0 if len(spent) != 1 else 4.0
        return [
            {"at": at.isoformat(), "epsilon_spent": eps, "epsilon_total": total}
            for at, eps in spent
        ]

    acme_series = {
        "org": "acme",
        "period": "2026-11",
        "bucket": "query",
        "points": points((times[0], 0.1), (times[1], 0.3), (times[4], 0.7)),
    }
    bigmart_series = {
        "org": "bigmart",
        "period": "2026-11",
        "bucket": "query",
        "points": points((times[3], 0.25)),
    }
    # An analyst sees its own organisation; a compliance officer every analyst organisation.
    assert _history(api, acme["analyst"]) == [acme_series]
    assert _history(api, bigmart["analyst"]) == [bigmart_series]
    for officer in (acme["compliance"], bigmart["compliance"]):
        assert _history(api, officer) == [acme_series, bigmart_series]

    # The last point is what GET …/budget says is spent.
    budgets = _budgets(api, acme["compliance"])
    for series in (acme_series, bigmart_series):
        last = series["points"][-1]
        assert last["epsilon_spent"] == budgets[series["org"]]["epsilon_spent"]
        assert last["epsilon_total"] == budgets[series["org"]]["epsilon_total"]

    # bigmart's audit trail holds only one of acme's three charged queries: the chart the
    # console drew from it missed the other two; the history has them all.
    trail = api.get(f"/v1/collaborations/{DEMO}/audit", key=bigmart["compliance"]).json()
    acme_charged = [
        e
        for e in trail["events"]
        if e["actor"]["org"] == "acme" and e["details"].get("epsilon_spent")
    ]
    assert [e["details"]["epsilon_spent"] for e in acme_charged] == [0.2]


def test_periods_reset_and_old_periods_are_capped(
    api: Any, demo_keys: dict[str, Any], services: Services, clock: Any
) -> None:
    acme = demo_keys["acme"]
    clock(datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    _query(api, acme["analyst"], _count("acme.survey"), 0.5)
    clock(NOW)
    _query(api, acme["analyst"], _count("acme.survey"), 0.25)
    series = _history(api, acme["analyst"])
    assert [(s["period"], [p["epsilon_spent"] for p in s["points"]]) for s in series] == [
        ("2026-10", [0.5]),
        ("2026-11", [0.25]),  # cumulative within its own period
    ]
    assert _budgets(api, acme["analyst"])["acme"]["epsilon_spent"] == 0.25

    # Charges in fourteen earlier months: the current period and the 11 newest earlier ones.
    for months_back in range(2, 16):
        at = datetime(2026 - (months_back > 10), (10 - months_back) % 12 + 1, 15, tzinfo=UTC)
        _reserve(services, "acme", at, 0.125)
    series = _history(api, acme["analyst"])
    periods = [s["period"] for s in series]
    assert len(series) == budget_service.MAX_PERIODS == 12
    assert periods == sorted(periods) and periods[-1] == "2026-11"
    assert periods[0] == "2025-12" and "2025-11" not in periods  # oldest three left out
    assert all(len(s["points"]) == 1 for s in series)


def _reserve(services: Services, org: str, at: datetime, epsilon: float) -> None:
    """A charge written as a query writes it (the ledger's one writing function)."""
    period = Period.current("month", at)
    services.ledger.reserve(
        DEMO, org, period.key, QueryCost.pure(epsilon), "epsilon", 8.0, f"q-{at.isoformat()}", at
    )


def test_many_charges_are_summed_per_day(
    api: Any,
    demo_keys: dict[str, Any],
    services: Services,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert budget_service.MAX_POINTS == 400
    monkeypatch.setattr(budget_service, "MAX_POINTS", 12)  # the same path, with fewer charges
    days = [datetime(2026, 11, d, 9, tzinfo=UTC) for d in (3, 4, 17)]
    per_day = 5  # 15 charges in the period: more than MAX_POINTS
    for day in days:
        for i in range(per_day):
            _reserve(services, "acme", day + timedelta(seconds=37 * i), 0.25)
    (series,) = _history(api, demo_keys["acme"]["analyst"])
    assert series["bucket"] == "day" and series["period"] == "2026-11"
    last_of_day = [day + timedelta(seconds=37 * (per_day - 1)) for day in days]
    assert [p["at"] for p in series["points"]] == [t.isoformat() for t in last_of_day]
    assert [p["epsilon_spent"] for p in series["points"]] == [1.25, 2.5, 3.75]
    budgets = _budgets(api, demo_keys["acme"]["analyst"])
    assert series["points"][-1]["epsilon_spent"] == budgets["acme"]["epsilon_spent"] == 3.75


def test_a_period_that_never_resets_is_summed_per_month_past_as_many_days(
    api: Any,
    demo_keys: dict[str, Any],
    services: Services,
    clock: Any,
    put_policy: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put_policy(lambda d: d["budgets"]["acme"].update(period="none"))
    monkeypatch.setattr(budget_service, "MAX_POINTS", 12)
    first = datetime(2026, 6, 1, 12, tzinfo=UTC)
    weeks = 20  # a charge a week, each on its own day: more charges and days than MAX_POINTS
    for w in range(weeks):
        at = first + timedelta(days=7 * w)
        services.ledger.reserve(
            DEMO, "acme", "all", QueryCost.pure(0.125), "epsilon", 8.0, f"q{w}", at
        )
    (series,) = _history(api, demo_keys["acme"]["analyst"])
    assert (series["period"], series["bucket"]) == ("all", "month")
    # one a week from 1 June: 5, 4, 5, 4 and 2 charges in June .. October
    assert [p["at"][:7] for p in series["points"]] == [f"2026-{m:02d}" for m in range(6, 11)]
    assert [p["epsilon_spent"] for p in series["points"]] == [0.625, 1.125, 1.75, 2.25, 2.5]
    last = first + timedelta(days=7 * (weeks - 1))
    assert series["points"][-1]["at"] == last.isoformat()
    assert _budgets(api, demo_keys["acme"]["analyst"])["acme"]["epsilon_spent"] == 2.5


def test_zcdp_series_compose_rho_and_give_epsilon_equivalents(
    api: Any, demo_keys: dict[str, Any], clock: Any, put_policy: Any
) -> None:
    def gaussian(document: dict[str, Any]) -> None:
        document["privacy"]["mechanism"] = "gaussian"
        document["budgets"]["acme"] = {"rho": 1.0, "period": "month"}

    put_policy(gaussian)
    acme = demo_keys["acme"]
    first = _query(api, acme["analyst"], _count("acme.survey"), 0.5)
    second = _query(api, acme["analyst"], JOINT, 0.8)
    (series,) = _history(api, acme["analyst"])
    rho = [first["rho_spent"], first["rho_spent"] + second["rho_spent"]]
    assert [p["rho_spent"] for p in series["points"]] == pytest.approx(rho)
    for point, spent in zip(series["points"], rho, strict=True):
        assert set(point) == {"at", "epsilon_spent", "epsilon_total", "rho_spent", "rho_total"}
        assert point["rho_total"] == 1.0
        assert point["epsilon_spent"] == pytest.approx(rho_to_epsilon(spent, 1e-7))
    budget = _budgets(api, acme["analyst"])["acme"]
    last = series["points"][-1]
    for name in ("epsilon_spent", "epsilon_total", "rho_spent", "rho_total"):
        assert last[name] == budget[name], name


def test_refusals_spend_store_and_audit_nothing(
    api: Any,
    demo_keys: dict[str, Any],
    services: Services,
    snapshot: Any,
    assert_error: Any,
) -> None:
    _query(api, demo_keys["acme"]["analyst"], _count("acme.survey"), 0.1)
    before = snapshot()
    events = services.audit.verify()[1]
    outsider = demo_keys["shopco"]["analyst"]  # a member of the other demo collaboration only
    cases = [
        (HISTORY, None, 401, "unauthenticated"),
        (HISTORY, "igw_0123456789abcdef.not-a-real-secret", 401, "unauthenticated"),
        (HISTORY, demo_keys["acme"]["contributor"], 403, "forbidden"),
        (HISTORY, demo_keys["admin"], 403, "forbidden"),
        (HISTORY, outsider, 404, "not_found"),
        ("/v1/collaborations/no-such-collab/budget/history", outsider, 404, "not_found"),
    ]
    messages = []
    for path, key, status, code in cases:
        answer = api.get(path, key=key)
        error = assert_error(answer, status, code)
        assert "0.1" not in answer.text and "acme" not in error["message"]
        messages.append(error["message"])
    assert messages[-2] == messages[-1].replace("no-such-collab", DEMO)  # existence is private
    assert snapshot() == before
    assert services.audit.verify()[1] == events


def test_the_sdk_reads_the_history(api: Any, demo_keys: dict[str, Any]) -> None:
    key = demo_keys["bigmart"]["compliance"]
    _query(api, demo_keys["acme"]["analyst"], _count("acme.survey"), 0.1)

    async def read() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=api.app)
        async with AsyncGatewayClient("http://gateway", key, transport=transport) as gw:
            return await gw.budget_history(DEMO)

    assert anyio.run(read) == _history(api, key)
