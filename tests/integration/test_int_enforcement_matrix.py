"""The enforcement matrix: every rule the policy language can express, broken once.

Each case names the rule's path in the policy, an optional policy change (activated with every
affected owner's approval), and a query that breaks the rule. Every case must answer 403 with
code ``policy_violation`` and the rule's path in the message, through both ``/queries`` and
``/queries/explain``, and leave budgets, ledger, releases and stored data untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
Edit = Callable[[dict[str, Any]], None] | None


def plan(epsilon: float = 0.2, **fields: Any) -> dict[str, Any]:
    body = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}], **fields}
    return {"plan": body, "epsilon": epsilon}


def loyalty(**changes: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"].update(changes)

    return edit


def drop_budget(doc: dict[str, Any]) -> None:
    del doc["budgets"]["acme"]


def no_joins(doc: dict[str, Any]) -> None:
    doc["joins"] = []


def few_groups(doc: dict[str, Any]) -> None:
    doc["rules"]["max_groups_per_query"] = 3


LOYALTY = "datasets.bigmart.loyalty"
MATRIX: list[tuple[str, Edit, dict[str, Any]]] = [
    # column uses
    (f"{LOYALTY}.columns.email.use", None, plan(group_by=["email"])),
    (
        f"{LOYALTY}.columns.email.use",
        None,
        plan(where=[{"column": "email", "op": "eq", "value": "x"}]),
    ),
    (f"{LOYALTY}.columns.email.use", None, plan(aggregates=[{"fn": "sum", "column": "email"}])),
    (f"{LOYALTY}.columns.spend_90d.use", None, plan(group_by=["spend_90d"])),
    (
        f"{LOYALTY}.columns.spend_90d.use",
        None,
        plan(where=[{"column": "spend_90d", "op": "eq", "value": 1}]),
    ),
    (f"{LOYALTY}.columns.region.use", None, plan(aggregates=[{"fn": "sum", "column": "region"}])),
    (
        f"{LOYALTY}.columns.email.use",
        None,
        plan(
            group_by=[
                {
                    "bucket": [
                        {"when": {"column": "email", "op": "eq", "value": "x"}, "then": "a"}
                    ],
                    "as": "b",
                }
            ]
        ),
    ),
    # allowed aggregates per measure
    (
        f"{LOYALTY}.columns.nps_score.aggregates",
        None,
        plan(aggregates=[{"fn": "sum", "column": "nps_score"}]),
    ),
    (
        f"{LOYALTY}.columns.visits_90d.aggregates",
        None,
        plan(aggregates=[{"fn": "median", "column": "visits_90d"}]),
    ),
    (
        f"{LOYALTY}.columns.visits_90d.aggregates",
        None,
        plan(aggregates=[{"fn": "histogram", "column": "visits_90d"}]),
    ),
    # columns the policy does not describe, and the customer key
    (f"{LOYALTY}.columns", None, plan(group_by=["loyalty_tier"])),
    (f"{LOYALTY}.customer_key", None, plan(group_by=["customer_key"])),
    # datasets and joins
    (
        "datasets",
        None,
        {"plan": {"from": "bigmart.returns", "aggregates": [{"fn": "count"}]}, "epsilon": 0.2},
    ),
    ("joins", no_joins, plan(join=["acme.survey"])),
    # budgets and per-query caps
    ("budgets.acme", drop_budget, plan()),
    ("privacy.max_epsilon_per_query", None, plan(epsilon=1.5)),
    (
        f"{LOYALTY}.rules.max_epsilon_per_query",
        loyalty(rules={"max_epsilon_per_query": 0.1}),
        plan(),
    ),
    ("privacy.max_epsilon_per_query", None, {"plan": plan()["plan"], "accuracy": {"abs": 0.01}}),
    # group limits
    ("rules.max_groups_per_query", few_groups, plan(group_by=["region"])),
    (
        f"{LOYALTY}.rules.max_groups_per_query",
        loyalty(rules={"max_groups_per_query": 2}),
        plan(group_by=["channel"]),
    ),
]


@pytest.mark.parametrize(
    ("path", "edit", "body"), MATRIX, ids=[f"{i}:{case[0]}" for i, case in enumerate(MATRIX)]
)
@pytest.mark.parametrize("endpoint", ["", "/explain"])
def test_each_rule_refuses_with_its_path_and_spends_nothing(
    path: str,
    edit: Edit,
    body: dict[str, Any],
    endpoint: str,
    api: Any,
    demo_keys: dict[str, Any],
    put_policy: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    if edit is not None:
        put_policy(edit)
    before = snapshot()
    response = api.post(QUERIES + endpoint, key=demo_keys["acme"]["analyst"], json=body)
    error = assert_error(response, 403, "policy_violation")
    assert f"(policy rule: {path})" in error["message"], error["message"]
    assert snapshot() == before


def test_the_sql_join_is_on_customer_keys_only(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    before = snapshot()
    sql = "SELECT COUNT(*) FROM bigmart.loyalty l JOIN acme.survey s ON l.region = s.segment"
    response = api.post(
        QUERIES, key=demo_keys["acme"]["analyst"], json={"sql": sql, "epsilon": 0.2}
    )
    error = assert_error(response, 403, "policy_violation")
    assert "customer_key" in error["message"]
    assert snapshot() == before
