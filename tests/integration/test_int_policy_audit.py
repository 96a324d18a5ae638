"""Policy versions through the API, and the audit trail: who sees what, and tamper detection."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

DEMO = "acme-bigmart-cx"
POLICY = f"/v1/collaborations/{DEMO}/policy"
AUDIT = f"/v1/collaborations/{DEMO}/audit"
VERIFY = f"/v1/collaborations/{DEMO}/audit/verify"
QUERIES = f"/v1/collaborations/{DEMO}/queries"


def put_yaml(api: Any, key: str, text: str, media: str = "application/yaml") -> Any:
    return api.put(POLICY, key=key, content=text.encode(), headers={"Content-Type": media})


def test_put_policy_yaml_and_json(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    compliance = demo_keys["acme"]["compliance"]
    # A change to acme's own dataset needs only acme: active at once.
    demo_policy["datasets"]["acme.survey"]["columns"]["tenure_months"]["aggregates"] = ["mean"]
    text = yaml.safe_dump(demo_policy, sort_keys=False)
    response = put_yaml(api, compliance, text)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"status", "version", "approvals", "diff"}
    assert answer["status"] == "active" and answer["version"] == 2
    assert answer["approvals"] == {"acme": True}
    assert isinstance(answer["diff"], str)
    assert "tenure_months" in answer["diff"]

    as_yaml = api.get(
        POLICY, key=demo_keys["bigmart"]["analyst"], headers={"Accept": "application/yaml"}
    )
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert as_yaml.headers["x-policy-version"] == "2"
    assert as_yaml.text == text

    # The other owner's compliance officer sends JSON; budgets govern every dataset, so acme
    # must approve too.
    demo_policy["budgets"]["acme"]["epsilon"] = 6.0
    demo_policy["budgets"]["bigmart"]["epsilon"] = 2.0
    response = api.put(POLICY, key=demo_keys["bigmart"]["compliance"], json=demo_policy)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "pending" and answer["version"] == 3
    assert answer["approvals"] == {"acme": False, "bigmart": True}
    assert api.get(POLICY, key=demo_keys["acme"]["contributor"]).json()["version"] == 2
    approved = api.post(f"{POLICY}/versions/3/approve", key=compliance)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["approvals"] == {"acme": True, "bigmart": True}
    as_json = api.get(POLICY, key=demo_keys["acme"]["contributor"]).json()
    assert as_json["version"] == 3 and as_json["status"] == "active"
    assert as_json["proposed_by"] == "bigmart"
    assert as_json["policy"] == demo_policy
    budgets = api.get(f"/v1/collaborations/{DEMO}/budget", key=demo_keys["acme"]["compliance"])
    assert {b["org"]: b["epsilon_total"] for b in budgets.json()["budgets"]} == {
        "acme": 6.0,
        "bigmart": 2.0,
    }
    # Queries now run under the new version.
    release = api.post(
        QUERIES,
        key=demo_keys["acme"]["analyst"],
        json={"plan": {"from": "acme.survey", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1},
    )
    assert release.json()["policy_version"] == 3


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for part in parents:
        doc = doc[part]
    doc[last] = value


BAD_POLICIES: list[tuple[str, str, Any, str]] = [
    # (case, '/'-separated location in the document, new value, path named in the message)
    (
        "unknown use",
        "datasets/bigmart.loyalty/columns/email/use",
        "frobnicate",
        "datasets.bigmart.loyalty.columns.email.use",
    ),
    (
        "bounds reversed",
        "datasets/bigmart.loyalty/columns/spend_90d/bounds",
        [10, 0],
        "datasets.bigmart.loyalty.columns.spend_90d.bounds",
    ),
    (
        "unknown aggregate",
        "datasets/acme.survey/columns/satisfaction/aggregates",
        ["median"],
        "datasets.acme.survey.columns.satisfaction.aggregates[0]",
    ),
    (
        "keys on a measure",
        "datasets/bigmart.loyalty/columns/nps_score/keys",
        [1, 2],
        "datasets.bigmart.loyalty.columns.nps_score.keys",
    ),
    ("negative budget", "budgets/acme/epsilon", -1, "budgets.acme.epsilon"),
    ("budget for a non-member", "budgets/probe", {"epsilon": 1.0}, "budgets.probe"),
    (
        "owner not a member",
        "datasets/probe.sales",
        {"owner": "probe", "customer_key": "k", "columns": {"x": {"use": "dimension"}}},
        "datasets.probe.sales.owner",
    ),
    ("wrong collaboration", "collaboration", "another-collab", "collaboration"),
    ("join of an unknown dataset", "joins", [["bigmart.loyalty", "acme.crm"]], "joins[0]"),
    ("unknown rule", "rules/min_group", 3, "rules"),
    ("negative group size", "rules/min_group_size", -1, "rules.min_group_size"),
    ("zero epsilon cap", "privacy/max_epsilon_per_query", 0, "privacy.max_epsilon_per_query"),
]


@pytest.mark.parametrize("media", ["application/yaml", "application/json"])
@pytest.mark.parametrize("case", BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES])
def test_invalid_policies_are_422_naming_the_path(
    case: tuple[str, str, Any, str],
    media: str,
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, where, value, path = case
    _set(demo_policy, where, value)
    text = json.dumps(demo_policy) if media == "application/json" else yaml.safe_dump(demo_policy)
    before = snapshot()
    error = assert_error(
        put_yaml(api, demo_keys["acme"]["compliance"], text, media), 422, "invalid_policy"
    )
    assert error["message"].startswith(f"{path}:"), error["message"]
    assert snapshot() == before
    assert api.get(POLICY, key=demo_keys["acme"]["analyst"]).json()["version"] == 1


def test_unparsable_policy_documents(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    compliance = demo_keys["acme"]["compliance"]
    before = snapshot()
    error = assert_error(
        put_yaml(api, compliance, "collaboration: [x\n  y: :\n"), 422, "invalid_policy"
    )
    assert "line" in error["message"]
    assert_error(
        put_yaml(api, compliance, '{"collaboration": ', "application/json"), 422, "invalid_policy"
    )
    assert_error(put_yaml(api, compliance, "just a string"), 422, "invalid_policy")
    assert_error(put_yaml(api, compliance, ""), 422, "invalid_policy")
    bad_utf8 = api.put(
        POLICY, key=compliance, content=b"\xff\xfe", headers={"Content-Type": "application/yaml"}
    )
    assert_error(bad_utf8, 400, "invalid_request")
    assert_error(
        put_yaml(api, compliance, "collaboration: x", "text/plain"), 415, "unsupported_media_type"
    )
    assert snapshot() == before


def test_only_an_owner_may_set_the_policy(
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    admin = demo_keys["admin"]
    assert (
        api.post(
            "/v1/orgs", key=admin, json={"id": "agency", "name": "Agency", "kind": "partner"}
        ).status_code
        == 201
    )
    key = api.post("/v1/orgs/agency/keys", key=admin, json={"role": "compliance"}).json()
    created = api.post(
        "/v1/collaborations",
        key=admin,
        json={"id": "three-way", "name": "Three", "members": ["acme", "bigmart", "agency"]},
    )
    assert created.status_code == 201, created.text
    demo_policy["collaboration"] = "three-way"
    before = snapshot()
    response = api.put("/v1/collaborations/three-way/policy", key=key["secret"], json=demo_policy)
    assert_error(response, 403, "forbidden")
    assert snapshot() == before


# --- audit ---------------------------------------------------------------------------------


def _events(api: Any, key: str) -> list[dict[str, Any]]:
    response = api.get(AUDIT, key=key)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_audit_shows_each_party_the_events_on_its_data(
    api: Any, demo_keys: dict[str, Any], upload: Any, demo_tables: Any, encode: Any
) -> None:
    joint = api.post(
        QUERIES,
        key=demo_keys["acme"]["analyst"],
        json={
            "plan": {
                "from": "bigmart.loyalty",
                "join": ["acme.survey"],
                "aggregates": [{"fn": "count"}],
            },
            "epsilon": 0.2,
        },
    ).json()
    bigmart_only = api.post(
        QUERIES,
        key=demo_keys["bigmart"]["analyst"],
        json={"plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]}, "epsilon": 0.2},
    ).json()
    acme_on_bigmart = api.post(
        QUERIES,
        key=demo_keys["acme"]["analyst"],
        json={
            "plan": {
                "from": "bigmart.loyalty",
                "group_by": ["region"],
                "aggregates": [{"fn": "count"}],
            },
            "epsilon": 0.2,
        },
    ).json()
    refused = api.post(
        QUERIES,
        key=demo_keys["acme"]["analyst"],
        json={
            "plan": {
                "from": "bigmart.loyalty",
                "group_by": ["email"],
                "aggregates": [{"fn": "count"}],
            },
            "epsilon": 0.2,
        },
    )
    assert refused.status_code == 403
    assert upload("acme", "survey", encode.parquet(demo_tables.survey)).status_code == 201

    acme = _events(api, demo_keys["acme"]["compliance"])
    bigmart = _events(api, demo_keys["bigmart"]["compliance"])

    def query_ids(events: list[dict[str, Any]]) -> set[str]:
        return {e["details"].get("query_id") for e in events if e["action"] == "query.released"}

    assert query_ids(acme) == {joint["query_id"], acme_on_bigmart["query_id"]}
    assert query_ids(bigmart) == {
        joint["query_id"],
        bigmart_only["query_id"],
        acme_on_bigmart["query_id"],
    }
    # A refused query is audited for the data owner it tried to use, and the analyst's org.
    for events in (acme, bigmart):
        (event,) = [e for e in events if e["action"] == "query.refused"]
        assert event["details"]["outcome"] == "policy_violation"
        assert event["actor"] == {"org": "acme", "role": "analyst"}

    def uploads(events: list[dict[str, Any]]) -> list[str]:
        return [e["details"]["dataset"] for e in events if e["action"] == "dataset.uploaded"]

    assert uploads(acme) == ["acme.survey", "acme.survey"]
    assert uploads(bigmart) == ["bigmart.loyalty"]
    for event in acme + bigmart:
        assert event["collaboration"] == DEMO
        assert set(event) == {
            "seq",
            "at",
            "collaboration",
            "actor",
            "action",
            "details",
            "hash",
        }
    # `seq` numbers the events this caller may read: 1, 2, 3 … with no gaps.
    for events in (acme, bigmart):
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # Paging: `after` skips what was read.
    last = acme[-2]["seq"]
    page = api.get(AUDIT, key=demo_keys["acme"]["compliance"], params={"after": last})
    assert [e["seq"] for e in page.json()["events"]] == [acme[-1]["seq"]]


def _visible(services: Any, org: str, from_seq: int = 0) -> tuple[int, int | None]:
    """How many events ``org`` reads, and the ``seq`` it reads (its own numbering) for the
    first of them at or after the chain position ``from_seq``."""
    row = services.db.one(
        "SELECT count(*), count(*) FILTER (WHERE seq < ?), count(*) FILTER (WHERE seq >= ?)"
        " FROM audit_events WHERE collaboration = ? AND list_contains(visible_to, ?)",
        (from_seq, from_seq, DEMO, org),
    )
    count, before, from_there = (int(v) for v in row)
    return count, before + 1 if from_there else None


def test_audit_verify_detects_tampering_and_truncation(
    api: Any, demo_keys: dict[str, Any], services: Any
) -> None:
    for org in ("acme", "bigmart"):
        response = api.get(VERIFY, key=demo_keys[org]["compliance"])
        assert response.status_code == 200
        assert response.json() == {
            "ok": True,
            "events": _visible(services, org)[0],
            "first_bad": None,
        }

    services.db.execute(
        "UPDATE audit_events SET details_json = ? WHERE seq = 3", ('{"org":"someone-else"}',)
    )
    events, first_bad = _visible(services, "acme", 3)
    assert first_bad is not None
    assert api.get(VERIFY, key=demo_keys["acme"]["compliance"]).json() == {
        "ok": False,
        "events": events,
        "first_bad": first_bad,
    }


def test_audit_verify_detects_a_removed_tail(
    api: Any, demo_keys: dict[str, Any], services: Any
) -> None:
    total = services.db.one("SELECT COUNT(*) FROM audit_events")[0]
    services.db.execute("DELETE FROM audit_events WHERE seq = ?", (total,))
    answer = api.get(VERIFY, key=demo_keys["acme"]["compliance"]).json()
    # The break lies after every event the caller may read: the verdict says so without naming
    # a position in other organisations' part of the chain.
    events, first_bad = _visible(services, "acme", total)
    assert answer == {"ok": False, "events": events, "first_bad": first_bad}


def test_a_change_to_another_owners_rules_waits_for_their_approval(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    demo_policy["datasets"]["bigmart.loyalty"]["columns"]["email"] = {"use": "dimension"}
    response = api.put(POLICY, key=demo_keys["acme"]["compliance"], json=demo_policy)
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert api.get(POLICY, key=demo_keys["acme"]["analyst"]).json()["version"] == 1
    approve = f"{POLICY}/versions/{response.json()['version']}/approve"
    assert api.post(approve, key=demo_keys["bigmart"]["compliance"]).status_code == 200
    assert api.post(approve, key=demo_keys["bigmart"]["compliance"]).status_code == 409
