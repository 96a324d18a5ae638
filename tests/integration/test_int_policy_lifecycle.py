"""Policy lifecycle: proposals, approvals by every affected owner, rejection, withdrawal."""

from __future__ import annotations

import copy
from typing import Any

import yaml

DEMO = "acme-bigmart-cx"
POLICY = f"/v1/collaborations/{DEMO}/policy"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
COUNT = {"plan": {"from": "acme.survey", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1}


def _propose(api: Any, key: str, doc: dict[str, Any]) -> dict[str, Any]:
    response = api.put(POLICY, key=key, json=doc)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _hide_email_off(doc: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    changed["datasets"]["bigmart.loyalty"]["columns"]["email"] = {"use": "dimension"}
    return changed


def test_another_owners_change_waits_and_the_active_version_keeps_governing(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    proposal = _propose(api, demo_keys["acme"]["compliance"], _hide_email_off(demo_policy))
    assert proposal["status"] == "pending"
    assert proposal["approvals"] == {"acme": True, "bigmart": False}
    assert "email" in proposal["diff"]
    # Until bigmart approves, email is still hidden: grouping by it is refused.
    by_email = {
        "plan": {"from": "bigmart.loyalty", "group_by": ["email"], "aggregates": [{"fn": "count"}]},
        "epsilon": 0.1,
    }
    refused = api.post(QUERIES, key=demo_keys["acme"]["analyst"], json=by_email)
    assert refused.status_code == 403
    assert "columns.email.use" in refused.json()["error"]["message"]
    release = api.post(QUERIES, key=demo_keys["acme"]["analyst"], json=COUNT).json()
    assert release["policy_version"] == 1


def test_an_owner_who_is_not_affected_cannot_approve(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any], put_policy: Any
) -> None:
    # bigmart changes only its own dataset: active at once, nobody else asked.
    def own_change(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"]["columns"]["visits_90d"]["aggregates"] = ["sum"]

    answer = put_policy(own_change, org="bigmart", approve=False)
    assert answer["status"] == "active" and answer["approvals"] == {"bigmart": True}
    # acme proposes a change to bigmart's dataset; acme cannot approve it for bigmart.
    proposal = _propose(api, demo_keys["acme"]["compliance"], _hide_email_off(demo_policy))
    again = api.post(
        f"{POLICY}/versions/{proposal['version']}/approve", key=demo_keys["acme"]["compliance"]
    )
    assert again.status_code == 409  # acme's own approval is already counted


def test_rejection_and_withdrawal_end_a_proposal(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any], snapshot: Any
) -> None:
    acme, bigmart = demo_keys["acme"]["compliance"], demo_keys["bigmart"]["compliance"]
    first = _propose(api, acme, _hide_email_off(demo_policy))
    # Only one proposal may be pending.
    second = api.put(POLICY, key=bigmart, json=demo_policy)
    assert second.status_code == 409
    # The proposer cannot reject on bigmart's behalf, bigmart cannot withdraw acme's proposal.
    assert (
        api.post(f"{POLICY}/versions/{first['version']}/withdraw", key=bigmart).status_code == 403
    )
    rejected = api.post(f"{POLICY}/versions/{first['version']}/reject", key=bigmart)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert api.post(f"{POLICY}/versions/{first['version']}/approve", key=bigmart).status_code == 409
    withdrawn_one = _propose(api, acme, _hide_email_off(demo_policy))
    withdrawn = api.post(f"{POLICY}/versions/{withdrawn_one['version']}/withdraw", key=acme)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    versions = api.get(f"{POLICY}/versions", key=demo_keys["acme"]["analyst"]).json()
    assert [(v["version"], v["status"]) for v in versions["versions"]] == [
        (1, "active"),
        (2, "rejected"),
        (3, "withdrawn"),
    ]
    # Older versions stay readable, with their diff against the active one.
    old = api.get(f"{POLICY}/versions/2", key=demo_keys["bigmart"]["analyst"]).json()
    assert old["status"] == "rejected" and "email" in old["diff"]
    assert api.get(POLICY, key=acme).json()["version"] == 1


def test_analysts_and_contributors_cannot_propose_or_decide(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any], assert_error: Any
) -> None:
    proposal = _propose(api, demo_keys["acme"]["compliance"], _hide_email_off(demo_policy))
    for role in ("analyst", "contributor"):
        key = demo_keys["bigmart"][role]
        assert_error(api.put(POLICY, key=key, json=demo_policy), 403, "forbidden")
        decided = api.post(f"{POLICY}/versions/{proposal['version']}/approve", key=key)
        assert_error(decided, 403, "forbidden")
    missing = api.post(f"{POLICY}/versions/99/approve", key=demo_keys["bigmart"]["compliance"])
    assert_error(missing, 404, "not_found")


def test_a_formatting_only_change_needs_no_other_owner(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    text = "# reformatted by acme's compliance officer\n" + yaml.safe_dump(demo_policy)
    response = api.put(
        POLICY,
        key=demo_keys["acme"]["compliance"],
        content=text.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 200 and response.json()["status"] == "active"


def test_budget_spent_survives_policy_changes(
    api: Any, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    assert api.post(QUERIES, key=analyst, json={**COUNT, "epsilon": 0.7}).status_code == 200

    def lower(doc: dict[str, Any]) -> None:
        doc["budgets"]["acme"]["epsilon"] = 0.5

    put_policy(lower)
    budget = api.get(f"/v1/collaborations/{DEMO}/budget", key=analyst).json()["budgets"][0]
    assert budget["epsilon_spent"] == 0.7 and budget["epsilon_left"] == 0.0
    refused = api.post(QUERIES, key=analyst, json={**COUNT, "epsilon": 0.01})
    assert refused.status_code == 429
