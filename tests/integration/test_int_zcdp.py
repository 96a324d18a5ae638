"""zCDP mode (``mechanism: gaussian``): the ledger composes ρ and shows (ε, δ) equivalents."""

from __future__ import annotations

from typing import Any

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
BODY = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["region"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
    "epsilon": 0.5,
}


def _gaussian(rho: float) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["privacy"]["mechanism"] = "gaussian"
        doc["budgets"]["acme"] = {"rho": rho, "period": "month"}

    return edit


def test_queries_spend_rho_and_show_the_epsilon_equivalent(
    api: Any, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    put_policy(_gaussian(0.01))
    analyst = demo_keys["acme"]["analyst"]
    explained = api.post(f"{QUERIES}/explain", key=analyst, json=BODY).json()
    release = api.post(QUERIES, key=analyst, json=BODY)
    assert release.status_code == 200, release.text
    body = release.json()
    assert body["rho_spent"] == round(explained["rho"], 12) > 0
    assert body["epsilon_spent"] == 0.5
    budget = body["budget"]
    assert budget["rho_total"] == 0.01
    assert budget["rho_spent"] == body["rho_spent"]
    assert budget["rho_left"] == round(0.01 - body["rho_spent"], 12)
    assert budget["epsilon_total"] > budget["epsilon_left"] > 0
    ledger = api.get(f"/v1/collaborations/{DEMO}/budget", key=analyst).json()["budgets"][0]
    assert ledger["rho_spent"] == body["rho_spent"]
    for row in body["rows"]:
        low, high = row["n"]["ci95"]
        assert low < row["n"]["value"] < high


def test_over_the_rho_budget_is_refused_and_nothing_spent(
    api: Any, demo_keys: dict[str, Any], put_policy: Any, snapshot: Any, assert_error: Any
) -> None:
    put_policy(_gaussian(0.001))  # ε 0.5 at δ 1e-7 costs about 0.0038 ρ
    before = snapshot()
    refused = api.post(QUERIES, key=demo_keys["acme"]["analyst"], json=BODY)
    error = assert_error(refused, 429, "budget_exceeded")
    assert "(rho)" in error["message"]
    assert snapshot() == before


def test_spend_under_pure_dp_counts_after_switching_to_zcdp(
    api: Any, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    """A pure ε query is ε²/2-zCDP: switching mechanism does not forget what was spent."""
    analyst = demo_keys["acme"]["analyst"]
    assert api.post(QUERIES, key=analyst, json={**BODY, "epsilon": 1.0}).status_code == 200
    put_policy(_gaussian(1.0))
    budget = api.get(f"/v1/collaborations/{DEMO}/budget", key=analyst).json()["budgets"][0]
    assert budget["rho_spent"] == 0.5
