"""Where several owners' rules meet in one query, the strictest applies, and explain says which."""

from __future__ import annotations

from typing import Any

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
JOINT = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "group_by": ["region"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
    "epsilon": 0.4,
}
BIGMART_ONLY = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["region"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
    "epsilon": 0.4,
}


def _bigmart_rules(**rules: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"]["rules"] = rules

    return edit


def test_an_owners_lower_epsilon_cap_binds_queries_on_its_data(
    api: Any, demo_keys: dict[str, Any], put_policy: Any, snapshot: Any, assert_error: Any
) -> None:
    put_policy(_bigmart_rules(max_epsilon_per_query=0.3), org="bigmart")
    analyst = demo_keys["acme"]["analyst"]
    before = snapshot()
    error = assert_error(api.post(QUERIES, key=analyst, json=JOINT), 403, "policy_violation")
    assert "datasets.bigmart.loyalty.rules.max_epsilon_per_query" in error["message"]
    assert snapshot() == before
    # A query on acme's data alone is not bound by bigmart's cap.
    acme_only = {"plan": {"from": "acme.survey", "aggregates": [{"fn": "count"}]}, "epsilon": 0.4}
    assert api.post(QUERIES, key=analyst, json=acme_only).status_code == 200
    explained = api.post(f"{QUERIES}/explain", key=analyst, json={**JOINT, "epsilon": 0.3}).json()
    assert explained["binding_rules"]["max_epsilon_per_query"] == {
        "value": 0.3,
        "path": "datasets.bigmart.loyalty.rules.max_epsilon_per_query",
    }
    assert explained["binding_rules"]["min_group_size"]["path"] == "rules.min_group_size"


def test_the_higher_minimum_group_size_and_lower_group_cap_win(
    api: Any, demo_keys: dict[str, Any], put_policy: Any, snapshot: Any, assert_error: Any
) -> None:
    put_policy(_bigmart_rules(min_group_size=1_000_000, max_groups_per_query=3), org="bigmart")
    analyst = demo_keys["acme"]["analyst"]
    before = snapshot()
    error = assert_error(api.post(QUERIES, key=analyst, json=BIGMART_ONLY), 403, "policy_violation")
    assert "datasets.bigmart.loyalty.rules.max_groups_per_query" in error["message"]
    assert snapshot() == before
    by_channel = {**BIGMART_ONLY, "plan": {**BIGMART_ONLY["plan"], "group_by": ["channel"]}}
    release = api.post(QUERIES, key=analyst, json=by_channel)
    assert release.status_code == 200, release.text
    # No group of 2,000 customers clears a minimum of a million, even with noise.
    assert all(row.get("suppressed") for row in release.json()["rows"])
    explained = api.post(f"{QUERIES}/explain", key=analyst, json=by_channel).json()
    assert explained["min_group_size"] == 1_000_000
    assert explained["binding_rules"]["min_group_size"]["path"] == (
        "datasets.bigmart.loyalty.rules.min_group_size"
    )


def test_a_looser_dataset_rule_does_not_relax_the_collaboration_rule(
    api: Any, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    put_policy(_bigmart_rules(max_epsilon_per_query=5.0, min_group_size=0), org="bigmart")
    analyst = demo_keys["acme"]["analyst"]
    refused = api.post(QUERIES, key=analyst, json={**BIGMART_ONLY, "epsilon": 2.0})
    assert refused.status_code == 403
    assert "privacy.max_epsilon_per_query" in refused.json()["error"]["message"]
    explained = api.post(f"{QUERIES}/explain", key=analyst, json=BIGMART_ONLY).json()
    assert explained["binding_rules"]["min_group_size"] == {
        "value": 25,
        "path": "rules.min_group_size",
    }
