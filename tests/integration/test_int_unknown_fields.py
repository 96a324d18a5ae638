"""A field the API does not define, anywhere in a JSON body, is refused: 422 ``unknown_field``.

Nobody can set ``epsilon_spent``, ``owner``, ``replay`` or ``org`` by adding it to a body: every
body-taking endpoint answers 422 naming the object that holds it and what that object allows
(``body.plan: unknown field (allowed: …)``; the unknown name itself is never repeated),
never its value, and nothing is created or spent. Other malformed input stays a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
BASE = f"/v1/collaborations/{DEMO}"
QUERY: dict[str, Any] = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [{"column": "region", "op": "in", "values": ["north", "south"]}],
        "group_by": ["region"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        ],
    },
    "epsilon": 0.5,
}


def _count(services: Services, table: str) -> int:
    row = services.db.one(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


@pytest.fixture
def state(services: Services, snapshot: Callable[[], dict[str, Any]]) -> Callable[[], Any]:
    """The refusal snapshot (budgets, ledger, versions, releases, files) plus the audit length."""
    return lambda: {**snapshot(), "audit": _count(services, "audit_events")}


def _refused_at(message: str, parent: str, unknown: str) -> bool:
    """The message names ``parent`` and the allowed fields, and never the unknown name."""
    return message.startswith(f"{parent}: unknown field (allowed: ") and unknown not in message


ORG = {"id": "x-org", "name": "X", "kind": "partner"}
COLLAB = {"id": "c2", "name": "C", "members": ["acme", "bigmart"]}
ADMIN_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/orgs", {**ORG, "epsilon_spent": 0}, "epsilon_spent"),
    ("/v1/orgs", {**ORG, "owner": "acme"}, "owner"),
    ("/v1/orgs/acme/keys", {"role": "analyst", "org": "bigmart"}, "org"),
    ("/v1/orgs/acme/keys", {"role": "analyst", "replay": True}, "replay"),
    ("/v1/collaborations", {**COLLAB, "owner": "acme"}, "owner"),
    ("/v1/collaborations", {**COLLAB, "epsilon_spent": 0}, "epsilon_spent"),
    # an unknown field wins over a missing or mistyped one: it is what the caller meant to set
    ("/v1/orgs", {"id": "x-org", "epsilon_spent": 0}, "epsilon_spent"),
    ("/v1/collaborations", {"id": 7, "members": "acme", "org": "acme"}, "org"),
]


def test_unknown_admin_fields_are_refused(
    api: Any, demo_keys: dict[str, Any], state: Any, assert_error: Any
) -> None:
    before = state()
    for path, body, field in ADMIN_BODIES:
        response = api.post(path, key=demo_keys["admin"], json=body)
        error = assert_error(response, 422, "unknown_field")
        assert _refused_at(error["message"], "body", field), (path, body, error)
    assert state() == before
    # the controls: without the unknown field, the same bodies are accepted
    for path, body in [
        ("/v1/orgs", ORG),
        ("/v1/orgs/acme/keys", {"role": "analyst"}),
        ("/v1/collaborations", COLLAB),
    ]:
        response = api.post(path, key=demo_keys["admin"], json=body)
        assert response.status_code == 201, response.text


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(QUERY))
    change(body)
    return body


def _bucket(body: dict[str, Any]) -> None:
    case = {"when": {"column": "region", "op": "eq", "value": "north"}, "then": "N", "replay": 1}
    body["plan"]["group_by"] = [{"bucket": [case], "as": "area"}]


def _nested(body: dict[str, Any]) -> None:
    inner = {"column": "region", "op": "eq", "value": "x", "org": "bigmart"}
    body["plan"]["where"] = [{"not": {"or": [inner]}}]


QUERY_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("epsilon_spent", _edit(lambda b: b.update(epsilon_spent=0)), "body.epsilon_spent"),
    ("replay", _edit(lambda b: b.update(replay=True)), "body.replay"),
    ("org", _edit(lambda b: b.update(org="bigmart")), "body.org"),
    ("owner in the plan", _edit(lambda b: b["plan"].update(owner="acme")), "body.plan.owner"),
    (
        "epsilon_spent in an aggregate",
        _edit(lambda b: b["plan"]["aggregates"][1].update(epsilon_spent=0)),
        "body.plan.aggregates[1].epsilon_spent",
    ),
    (
        "owner in a filter",
        _edit(lambda b: b["plan"]["where"][0].update(owner="bigmart")),
        "body.plan.where[0].owner",
    ),
    ("in a nested predicate", _edit(_nested), "body.plan.where[0].not.or[0].org"),
    ("in a bucket case", _edit(_bucket), "body.plan.group_by[0].bucket[0].replay"),
    (
        "in an accuracy target",
        {"plan": QUERY["plan"], "accuracy": {"abs": 50, "epsilon_spent": 0}},
        "body.accuracy.epsilon_spent",
    ),
    (
        "next to SQL",
        {"sql": "SELECT COUNT(*) FROM bigmart.loyalty", "epsilon": 0.1, "owner": "acme"},
        "body.owner",
    ),
    # an unknown field wins over a malformed sibling
    ("next to a bad epsilon", _edit(lambda b: b.update(epsilon=-1, replay=True)), "body.replay"),
]


@pytest.mark.parametrize("suffix", ["queries", "queries/explain"])
def test_unknown_query_fields_are_refused(
    suffix: str, api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    before = snapshot()  # budgets, ledger and releases: nothing spent, nothing stored
    for name, body, field in QUERY_BODIES:
        response = api.post(f"{BASE}/{suffix}", key=analyst, json=body)
        error = assert_error(response, 422, "unknown_field")
        parent, unknown = field.rsplit(".", 1)
        assert _refused_at(error["message"], parent, unknown), (name, error)
    assert snapshot() == before
    # the control: without the unknown field the body is answered
    response = api.post(f"{BASE}/queries/explain", key=analyst, json=QUERY)
    assert response.status_code == 200, response.text


def test_a_refused_query_is_audited_but_charges_nothing(
    api: Any, demo_keys: dict[str, Any], services: Services, snapshot: Any
) -> None:
    """Every query outcome is audited, refusals included; the entry names the field only."""
    before, audit_before = snapshot(), _count(services, "audit_events")
    body = _edit(lambda b: b.update(epsilon_spent=0))
    response = api.post(f"{BASE}/queries", key=demo_keys["acme"]["analyst"], json=body)
    assert response.status_code == 422
    assert snapshot() == before
    assert _count(services, "audit_events") == audit_before + 1
    events = api.get(f"{BASE}/audit", key=demo_keys["acme"]["compliance"]).json()["events"]
    assert events[-1]["action"] == "query.refused"
    assert events[-1]["details"]["outcome"] == "unknown_field"


DECISION_BODIES: list[tuple[dict[str, Any], int, str]] = [
    ({"json": {"org": "bigmart"}}, 422, "unknown_field"),
    ({"json": {"approvals": {"bigmart": True}}}, 422, "unknown_field"),
    ({"json": [1, 2]}, 400, "invalid_request"),
    ({"content": b"approve it", "headers": {"Content-Type": "text/plain"}}, 400, "invalid_request"),
    (
        {"content": b"[" * 3000, "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_request",
    ),
    ({"content": b"{}" + b" " * 5000}, 400, "invalid_request"),
]


def test_decisions_take_no_body(
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    state: Any,
    assert_error: Any,
) -> None:
    """A decision acts for the caller's own organisation; a body that tries to say more is
    refused, not ignored. An empty body, or ``{}``, is what the endpoints take."""
    acme, bigmart = demo_keys["acme"]["compliance"], demo_keys["bigmart"]["compliance"]

    def propose(min_group_size: int) -> int:
        demo_policy["rules"]["min_group_size"] = min_group_size
        proposed = api.put(
            f"{BASE}/policy",
            key=acme,
            content=yaml.safe_dump(demo_policy).encode(),
            headers={"Content-Type": "application/yaml"},
        )
        assert proposed.status_code == 200 and proposed.json()["status"] == "pending"
        return int(proposed.json()["version"])

    version = propose(30)
    before = state()
    for decision, key in [("approve", bigmart), ("reject", bigmart), ("withdraw", acme)]:
        path = f"{BASE}/policy/versions/{version}/{decision}"
        for kwargs, status, code in DECISION_BODIES:
            error = assert_error(api.post(path, key=key, **kwargs), status, code)
            if code == "unknown_field":
                unknown = next(iter(kwargs["json"]))
                assert error["message"] == "body: unknown field", error
                assert unknown not in error["message"]
    assert state() == before
    read = api.get(f"{BASE}/policy/versions/{version}", key=acme).json()
    assert (read["status"], read["approvals"]) == ("pending", {"acme": True, "bigmart": False})

    withdrawn = api.post(f"{BASE}/policy/versions/{version}/withdraw", key=acme)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    version = propose(31)
    rejected = api.post(f"{BASE}/policy/versions/{version}/reject", key=bigmart, json={})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    version = propose(32)
    approved = api.post(f"{BASE}/policy/versions/{version}/approve", key=bigmart, content=b" ")
    assert approved.status_code == 200 and approved.json()["status"] == "active"


def test_a_long_unknown_name_is_never_shown(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    name = "x" * 10_000
    before = snapshot()
    for path, key, body in [
        ("/v1/orgs", demo_keys["admin"], {"id": "y", "name": "Y", "kind": "brand", name: 1}),
        (f"{BASE}/queries", demo_keys["acme"]["analyst"], {**QUERY, name: 1}),
    ]:
        error = assert_error(api.post(path, key=key, json=body), 422, "unknown_field")
        assert _refused_at(error["message"], "body", "xxxx"), error
    assert snapshot() == before


def test_policy_documents_refuse_unknown_fields_through_their_schema(
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    state: Any,
    assert_error: Any,
) -> None:
    """A policy body is a document with its own JSON Schema: 422 ``invalid_policy`` at its path."""
    edits: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda d: d.update(epsilon_spent=0), "unknown field (allowed: budgets, "),
        (lambda d: d["budgets"]["acme"].update(spent=0), "budgets.acme: unknown field"),
        (
            lambda d: d["datasets"]["bigmart.loyalty"].update(owner_org="acme"),
            "datasets.bigmart.loyalty: unknown field",
        ),
    ]
    before = state()
    for edit, path in edits:
        document = json.loads(json.dumps(demo_policy))
        edit(document)
        response = api.put(
            f"{BASE}/policy",
            key=demo_keys["acme"]["compliance"],
            content=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
        )
        error = assert_error(response, 422, "invalid_policy")
        assert path in error["message"], error["message"]
        assert "spent" not in error["message"] and "owner_org" not in error["message"]
    assert state() == before


def test_other_malformed_bodies_stay_400(
    api: Any, demo_keys: dict[str, Any], state: Any, assert_error: Any
) -> None:
    admin, analyst = demo_keys["admin"], demo_keys["acme"]["analyst"]
    before = state()
    for path, key, body in [
        ("/v1/orgs", admin, {"id": "x-org"}),
        ("/v1/orgs", admin, {"id": "x-org", "name": "X", "kind": ["partner"]}),
        ("/v1/orgs/acme/keys", admin, {}),
        ("/v1/collaborations", admin, [{"id": "c2"}]),
        (f"{BASE}/queries/explain", analyst, {**QUERY, "epsilon": -1}),
        (f"{BASE}/queries/explain", analyst, _edit(lambda b: b["plan"].update({"from": 3}))),
    ]:
        assert_error(api.post(path, key=key, json=body), 400, "invalid_request")
    assert state() == before


def test_an_oversized_json_body_is_refused_before_it_is_buffered(
    api: Any, demo_keys: dict[str, Any], state: Any, assert_error: Any
) -> None:
    """JSON bodies are bounded (4 MiB): refused whether the size is declared or streamed, with
    or without a key, before FastAPI would buffer and parse them."""
    filler = b'{"plan": {"from": "bigmart.loyalty", "where": [' + b'{"column": "r"},' * 300_000

    async def chunks() -> Any:
        for start in range(0, len(filler), 1024**2):
            yield filler[start : start + 1024**2]

    before = state()
    for key in (None, demo_keys["acme"]["analyst"]):
        for content in (filler, chunks()):
            response = api.post(
                f"{BASE}/queries",
                key=key,
                content=content,
                headers={"Content-Type": "application/json"},
            )
            error = assert_error(response, 413, "payload_too_large")
            assert error["message"] == "body: larger than the limit of 4194304 bytes"
    response = api.post(
        "/v1/orgs",
        key=demo_keys["admin"],
        content=filler,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
    assert state() == before
