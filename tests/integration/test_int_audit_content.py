"""What the audit trail records, and who may read it.

Every upload, policy event, key event and query is one chained event saying who (organisation
and role), when (UTC), what (plan, SQL text, ε, datasets), under which policy version, and with
which outcome. ``GET …/audit`` shows a compliance officer the events on their organisation's
data and the collaboration-wide ones (policy, membership), never another owner's private events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
BASE = f"/v1/collaborations/{DEMO}"
JOINT_SQL = (
    "SELECT region, COUNT(*) AS customers, AVG(spend_90d) AS avg_spend "
    "FROM bigmart.loyalty AS l JOIN acme.survey AS s ON l.customer_key = s.customer_id "
    "GROUP BY region"
)


def _events(api: Any, key: str) -> list[dict[str, Any]]:
    response = api.get(f"{BASE}/audit", key=key)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _only(events: list[dict[str, Any]], action: str, **details: Any) -> dict[str, Any]:
    found = [
        e
        for e in events
        if e["action"] == action and all(e["details"].get(k) == v for k, v in details.items())
    ]
    assert len(found) == 1, (action, details, [e["action"] for e in events])
    return found[0]


def _recent(at: str, since: datetime) -> None:
    stamp = datetime.fromisoformat(at)
    assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0), at
    assert since - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)


def _visible_to(services: Services, event: dict[str, Any]) -> list[str]:
    """Who may read the chain entry behind ``event`` (found by its fingerprint: the API's
    ``seq`` is the caller's own numbering, not the chain position)."""
    (entry,) = [
        e
        for e in services.audit.events(DEMO, None, limit=1_000_000)
        if e.fingerprint == event["hash"]
    ]
    return list(entry.visible_to)


# Uploads -----------------------------------------------------------------------------------


def test_uploads_record_who_when_which_dataset_and_outcome(
    api: Any, demo_keys: dict[str, Any], upload: Any, encode: Any, demo_tables: Any
) -> None:
    since = datetime.now(UTC)
    assert upload("acme", "survey", encode.parquet(demo_tables.survey)).status_code == 201
    bad = upload("acme", "survey", encode.parquet(demo_tables.survey.drop_columns(["segment"])))
    assert bad.status_code == 422

    acme = _events(api, demo_keys["acme"]["compliance"])
    stored = _only(acme, "dataset.uploaded", version=2)
    assert stored["actor"] == {"org": "acme", "role": "contributor"}
    assert stored["collaboration"] == DEMO
    _recent(stored["at"], since)
    assert stored["details"] == {
        "dataset": "acme.survey",
        "datasets": ["acme.survey"],
        "version": 2,
        "rows": 2_000,
        "policy_version": 1,
        "dropped_columns": ["phone"],
        "outcome": "stored",
    }
    rejected = _only(acme, "dataset.rejected")
    assert rejected["actor"] == {"org": "acme", "role": "contributor"}
    _recent(rejected["at"], since)
    assert rejected["details"]["datasets"] == ["acme.survey"]
    assert rejected["details"]["policy_version"] == 1
    assert rejected["details"]["outcome"] == "invalid_dataset"
    assert "segment" in rejected["details"]["message"]

    # The other owner sees neither: an upload (and its exact row count) is the owner's business.
    bigmart = _events(api, demo_keys["bigmart"]["compliance"])
    assert not [
        e
        for e in bigmart
        if e["action"].startswith("dataset.") and e["details"]["dataset"].startswith("acme.")
    ]


# Queries -----------------------------------------------------------------------------------


def test_a_released_query_records_plan_sql_epsilon_datasets_policy_and_outcome(
    api: Any, demo_keys: dict[str, Any]
) -> None:
    since = datetime.now(UTC)
    body = {"sql": JOINT_SQL, "epsilon": 0.4}
    first = api.post(f"{BASE}/queries", key=demo_keys["acme"]["analyst"], json=body)
    assert first.status_code == 200, first.text
    again = api.post(f"{BASE}/queries", key=demo_keys["acme"]["analyst"], json=body)
    assert again.json()["replay"] is True
    query_id = first.json()["query_id"]

    for org in ("acme", "bigmart"):  # a joint query touches both owners' data
        events = _events(api, demo_keys[org]["compliance"])
        released = _only(events, "query.released", query_id=query_id)
        assert released["actor"] == {"org": "acme", "role": "analyst"}
        _recent(released["at"], since)
        details = released["details"]
        assert details["sql"] == JOINT_SQL
        assert details["plan"]["from"] == "bigmart.loyalty"
        assert details["plan"]["join"] == ["acme.survey"]
        assert details["plan"]["group_by"] == ["region"]
        assert details["epsilon"] == 0.4 and details["epsilon_spent"] == 0.4
        assert sorted(details["datasets"]) == ["acme.survey", "bigmart.loyalty"]
        assert details["policy_version"] == 1
        assert details["outcome"] == "released"

        replayed = _only(events, "query.replayed", query_id=query_id)
        assert replayed["details"]["outcome"] == "replay"
        assert replayed["details"]["sql"] == JOINT_SQL
        assert "epsilon_spent" not in replayed["details"]
        assert replayed["seq"] > released["seq"]


def test_refused_queries_are_recorded_with_the_reason(
    api: Any, demo_keys: dict[str, Any], services: Services
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    forbidden = {
        "plan": {"from": "bigmart.loyalty", "group_by": ["email"], "aggregates": [{"fn": "count"}]},
        "epsilon": 0.3,
    }
    assert api.post(f"{BASE}/queries", key=analyst, json=forbidden).status_code == 403
    too_much = {"plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]}, "epsilon": 5}
    assert api.post(f"{BASE}/queries", key=analyst, json=too_much).status_code == 403
    garbled = {"plan": {"from": "bigmart.loyalty"}, "epsilon": "lots"}
    assert api.post(f"{BASE}/queries", key=analyst, json=garbled).status_code in (400, 422)

    bigmart = _events(api, demo_keys["bigmart"]["compliance"])
    refused = [e for e in bigmart if e["action"] == "query.refused"]
    assert [e["details"]["epsilon"] for e in refused] == [0.3, 5]
    for event in refused:
        assert event["actor"] == {"org": "acme", "role": "analyst"}
        assert event["details"]["outcome"] == "policy_violation"
        assert event["details"]["datasets"] == ["bigmart.loyalty"]
        assert event["details"]["policy_version"] == 1
        assert event["details"]["plan"]["from"] == "bigmart.loyalty"
    assert "datasets.bigmart.loyalty.columns.email" in refused[0]["details"]["message"]
    assert "max_epsilon_per_query" in refused[1]["details"]["message"]

    # A request that names no dataset the gateway could read stays with the analyst's org.
    acme = _events(api, demo_keys["acme"]["compliance"])
    unparsed = [e for e in acme if e["action"] == "query.refused" and e["details"]["plan"] is None]
    assert len(unparsed) == 1
    assert unparsed[0]["details"]["outcome"] in ("invalid_request", "unsupported_query")
    assert _visible_to(services, unparsed[0]) == ["acme"]


def test_a_partys_own_queries_on_its_own_data_stay_private(
    api: Any, demo_keys: dict[str, Any]
) -> None:
    own = {"plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]}, "epsilon": 0.2}
    answer = api.post(f"{BASE}/queries", key=demo_keys["bigmart"]["analyst"], json=own)
    assert answer.status_code == 200, answer.text
    query_id = answer.json()["query_id"]
    bigmart = _events(api, demo_keys["bigmart"]["compliance"])
    assert _only(bigmart, "query.released", query_id=query_id)["details"]["datasets"] == [
        "bigmart.loyalty"
    ]
    acme = _events(api, demo_keys["acme"]["compliance"])
    assert query_id not in json.dumps(acme)


# Policy events -----------------------------------------------------------------------------


def _propose(api: Any, key: str, document: dict[str, Any]) -> dict[str, Any]:
    response = api.put(
        f"{BASE}/policy",
        key=key,
        content=yaml.safe_dump(document, sort_keys=False).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_policy_events_record_version_who_and_when_for_every_member(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    since = datetime.now(UTC)
    acme_key, bigmart_key = demo_keys["acme"]["compliance"], demo_keys["bigmart"]["compliance"]
    columns = demo_policy["datasets"]["bigmart.loyalty"]["columns"]
    columns["visits_90d"]["aggregates"] = ["sum"]
    pending = _propose(api, acme_key, demo_policy)
    assert pending["status"] == "pending"
    v = pending["version"]
    assert api.post(f"{BASE}/policy/versions/{v}/approve", key=bigmart_key).status_code == 200

    columns["visits_90d"]["aggregates"] = []
    rejected = _propose(api, acme_key, demo_policy)["version"]
    assert api.post(f"{BASE}/policy/versions/{rejected}/reject", key=bigmart_key).status_code == 200
    withdrawn = _propose(api, acme_key, demo_policy)["version"]
    response = api.post(f"{BASE}/policy/versions/{withdrawn}/withdraw", key=acme_key)
    assert response.status_code == 200, response.text

    expected = [
        ("policy.proposed", v, "acme"),
        ("policy.approved", v, "bigmart"),
        ("policy.activated", v, "bigmart"),
        ("policy.proposed", rejected, "acme"),
        ("policy.rejected", rejected, "bigmart"),
        ("policy.proposed", withdrawn, "acme"),
        ("policy.withdrawn", withdrawn, "acme"),
    ]
    for key in (acme_key, bigmart_key):  # the rules of the collaboration concern every member
        events = [e for e in _events(api, key) if e["action"].startswith("policy.")]
        recent = [e for e in events if datetime.fromisoformat(e["at"]) >= since]
        assert [
            (e["action"], e["details"]["version"], e["actor"]["org"]) for e in recent
        ] == expected
        for event in recent:
            assert event["actor"]["role"] == "compliance"
            _recent(event["at"], since)
        activated = _only(recent, "policy.activated", version=v)
        assert activated["details"]["previous"] == 1


# Key events --------------------------------------------------------------------------------


def test_key_events_are_chained_with_who_which_key_and_role_but_never_the_secret(
    api: Any, demo_keys: dict[str, Any], services: Services
) -> None:
    issued = api.post("/v1/orgs/acme/keys", key=demo_keys["admin"], json={"role": "analyst"})
    assert issued.status_code == 201, issued.text
    key = issued.json()
    rows = services.db.execute(
        "SELECT seq, actor_org, actor_role, visible_to, details_json FROM audit_events "
        "WHERE action = 'key.issued' ORDER BY seq DESC LIMIT 1"
    )
    seq, org, role, visible, details = rows[0]
    assert (org, role, list(visible)) == ("operator", "admin", ["acme"])
    assert json.loads(details) == {"key_id": key["key_id"], "org": "acme", "role": "analyst"}
    secret_part = key["secret"].split(".", 1)[-1]
    everything = services.db.execute("SELECT details_json FROM audit_events")
    assert not [d for (d,) in everything if secret_part in d]
    assert services.audit.verify() == (True, seq, None)
    # Another organisation's keys are never shown to a member.
    bigmart = _events(api, demo_keys["bigmart"]["compliance"])
    assert key["key_id"] not in json.dumps(bigmart)


# Visibility, all together ------------------------------------------------------------------


def test_no_compliance_officer_sees_another_owners_private_events(
    api: Any,
    demo_keys: dict[str, Any],
    services: Services,
    upload: Any,
    encode: Any,
    demo_tables: Any,
) -> None:
    assert upload("bigmart", "loyalty", encode.parquet(demo_tables.loyalty)).status_code == 201
    assert upload("acme", "survey", encode.parquet(demo_tables.survey)).status_code == 201
    for org, dataset in (("acme", "acme.survey"), ("bigmart", "bigmart.loyalty")):
        own = {"plan": {"from": dataset, "aggregates": [{"fn": "count"}]}, "epsilon": 0.1}
        assert (
            api.post(f"{BASE}/queries", key=demo_keys[org]["analyst"], json=own).status_code == 200
        )
    joint = {"sql": JOINT_SQL, "epsilon": 0.2}
    assert (
        api.post(f"{BASE}/queries", key=demo_keys["bigmart"]["analyst"], json=joint).status_code
        == 200
    )

    for org, other in (("acme", "bigmart"), ("bigmart", "acme")):
        events = _events(api, demo_keys[org]["compliance"])
        assert events, org
        for event in events:
            assert org in _visible_to(services, event), event
            datasets = event["details"].get("datasets") or []
            assert (
                not datasets
                or any(d.startswith(f"{org}.") for d in datasets)
                or (event["actor"]["org"] == org)
            ), event
            if event["action"].startswith("dataset."):
                assert event["details"]["dataset"].startswith(f"{org}."), event
            if event["action"].startswith("query."):
                # Shown because it read this org's data, or because this org's analyst asked.
                assert event["actor"]["org"] == org or any(
                    d.startswith(f"{org}.") for d in datasets
                ), event
        own_only = [
            e
            for e in events
            if e["action"] == "query.released"
            and e["actor"]["org"] == other
            and e["details"]["datasets"]
            == [f"{other}.{'survey' if other == 'acme' else 'loyalty'}"]
        ]
        assert own_only == [], org
