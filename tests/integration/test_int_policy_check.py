"""One check for a policy draft: the console's verdict and a proposal's answer always agree.

``check_policy`` (gateway/service/policies.py) is what ``PUT …/policy`` runs and what the
console's draft check runs. For each draft below the console is asked first (it must store
nothing), then the draft is proposed: a valid verdict must mean a 200 needing exactly the
approvals the verdict named, a refusal the same code and message as the proposal's error (and
the proposal stores nothing either). Real app over ASGI on a copy of the seeded demo.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from gateway.domain.errors import Conflict
from gateway.service import policies
from gateway.service.access import authenticate
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
POLICY = f"/v1/collaborations/{DEMO}/policy"
CHECK = f"/console/api/collaborations/{DEMO}/policy/check"
YAML = {"Content-Type": "application/yaml"}

Edit = Callable[[dict[str, Any]], None]


def _unchanged(doc: dict[str, Any]) -> None:
    return None


def _acme_budget(doc: dict[str, Any]) -> None:
    doc["budgets"]["acme"]["epsilon"] = 6.0


def _survey_only(doc: dict[str, Any]) -> None:
    doc["datasets"]["acme.survey"]["columns"]["extra"] = {"use": "hidden"}


def _stranger_budget(doc: dict[str, Any]) -> None:
    doc["budgets"]["stranger"] = doc["budgets"].pop("bigmart")


def _stranger_owner(doc: dict[str, Any]) -> None:
    doc["datasets"]["stranger.sales"] = {
        "owner": "stranger",
        "customer_key": "k",
        "columns": {"x": {"use": "dimension"}},
    }


def _other_collaboration(doc: dict[str, Any]) -> None:
    doc["collaboration"] = "another-collab"


def _bad_bounds(doc: dict[str, Any]) -> None:
    doc["datasets"]["bigmart.loyalty"]["columns"]["spend_90d"]["bounds"] = [10, 0]


DRAFTS: list[tuple[str, Edit, str, tuple[str, ...] | str]] = [
    ("unchanged", _unchanged, "acme", ("acme",)),
    ("a budget", _acme_budget, "acme", ("acme", "bigmart")),
    ("own dataset only", _survey_only, "acme", ("acme",)),
    ("BigMart on ACME's dataset", _survey_only, "bigmart", ("acme", "bigmart")),
    ("budget of a non-member", _stranger_budget, "acme", "invalid_policy"),
    ("owner not a member", _stranger_owner, "bigmart", "invalid_policy"),
    ("another collaboration", _other_collaboration, "acme", "invalid_policy"),
    ("bounds reversed", _bad_bounds, "acme", "invalid_policy"),
]


def _body(demo_policy: dict[str, Any], edit: Edit, media: str) -> bytes:
    document = json.loads(json.dumps(demo_policy))
    edit(document)
    if media == "application/json":
        return json.dumps(document).encode()
    return yaml.safe_dump(document, sort_keys=False).encode()


def test_the_console_check_and_the_proposal_agree(
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    snapshot: Callable[[], dict[str, Any]],
) -> None:
    """Each draft, as YAML and as JSON, from one store: a proposal that passes is withdrawn,
    or the demo document restored, before the next, so every draft meets the demo's rules."""
    for name, edit, org, expected in DRAFTS:
        for media in ("application/yaml", "application/json"):
            body = _body(demo_policy, edit, media)
            officer = demo_keys[org]["compliance"]
            headers = {"Content-Type": media}
            active = api.get(POLICY, key=officer).json()["version"]
            before = snapshot()
            checked = api.post(CHECK, key=officer, content=body, headers=headers)
            assert checked.status_code == 200, (name, media, checked.text)
            verdict = checked.json()
            assert snapshot() == before, (name, media)  # the check stores nothing

            proposed = api.put(POLICY, key=officer, content=body, headers=headers)
            if isinstance(expected, tuple):
                assert verdict == {
                    "valid": True,
                    "active_version": active,
                    "required": list(expected),
                }, (name, media)
                assert proposed.status_code == 200, (name, media, proposed.text)
                answer = proposed.json()
                assert sorted(answer["approvals"]) == verdict["required"], (name, media)
                if expected == (org,):
                    assert answer["status"] == "active", (name, media)
                    restore = _body(demo_policy, _unchanged, "application/yaml")
                    back = api.put(POLICY, key=officer, content=restore, headers=YAML).json()
                    assert back["status"] == "active", (name, media)
                else:
                    assert answer["status"] == "pending", (name, media)
                    withdraw = f"{POLICY}/versions/{answer['version']}/withdraw"
                    assert api.post(withdraw, key=officer).status_code == 200
            else:
                assert verdict["valid"] is False, (name, media)
                assert verdict["error"]["code"] == expected, (name, media)
                assert proposed.status_code == 422, (name, media)
                assert proposed.json()["error"] == {
                    "code": verdict["error"]["code"],
                    "message": verdict["error"]["message"],
                }, (name, media)
                assert snapshot() == before, (name, media)
                # The rule's path may name the non-member; the message never repeats it.
                assert "stranger" not in verdict["error"]["message"].split(":", 1)[1]


def test_an_officer_whose_organisation_owns_nothing_is_refused_by_both(
    api: Any, demo_keys: dict[str, Any], snapshot: Callable[[], dict[str, Any]]
) -> None:
    """A member that owns no dataset, before any policy is active, may neither check nor
    propose a policy about ACME's data alone; once ACME's is active, the same holds."""
    admin = demo_keys["admin"]
    org = {"id": "probe-retail", "name": "Probe", "kind": "retailer"}
    assert api.post("/v1/orgs", key=admin, json=org).status_code == 201
    issued = api.post("/v1/orgs/probe-retail/keys", key=admin, json={"role": "compliance"})
    probe = issued.json()["secret"]
    members = {"id": "acme-probe", "name": "ACME x Probe", "members": ["acme", "probe-retail"]}
    assert api.post("/v1/collaborations", key=admin, json=members).status_code == 201
    draft = {
        "collaboration": "acme-probe",
        "budgets": {"acme": {"epsilon": 1.0, "period": "month"}},
        "datasets": {
            "acme.survey": {
                "owner": "acme",
                "customer_key": "k",
                "columns": {"x": {"use": "hidden"}},
            }
        },
    }
    body = yaml.safe_dump(draft).encode()
    path = "/v1/collaborations/acme-probe/policy"
    headers = {"Content-Type": "application/yaml"}

    for active in (None, 1):
        before = snapshot()
        verdict = api.post(
            f"/console/api{path[3:]}/check", key=probe, content=body, headers=headers
        )
        assert verdict.status_code == 200
        assert verdict.json()["valid"] is False
        assert verdict.json()["error"]["code"] == "forbidden"
        proposed = api.put(path, key=probe, content=body, headers=headers)
        assert proposed.status_code == 403
        assert proposed.json()["error"] == {
            "code": "forbidden",
            "message": verdict.json()["error"]["message"],
        }
        assert snapshot() == before
        if active is None:
            # ACME's own proposal of the same draft needs nobody else: active at once.
            acme = demo_keys["acme"]["compliance"]
            mine = api.post(
                f"/console/api{path[3:]}/check", key=acme, content=body, headers=headers
            )
            assert mine.json() == {"valid": True, "active_version": None, "required": ["acme"]}
            answer = api.put(path, key=acme, content=body, headers=headers).json()
            assert (answer["status"], answer["version"]) == ("active", 1)


def test_check_policy_reads_bytes_or_text_and_stores_json_as_yaml(
    services: Services, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> None:
    officer = authenticate(services, f"Bearer {demo_keys['acme']['compliance']}")
    document = json.dumps(demo_policy)
    from_text = policies.check_policy(services, officer, DEMO, document, "application/json")
    from_bytes = policies.check_policy(
        services, officer, DEMO, document.encode(), "application/json"
    )
    assert from_text == from_bytes
    assert yaml.safe_load(from_text.text) == demo_policy
    assert not from_text.text.lstrip().startswith("{")
    assert from_text.collaboration.id == DEMO
    assert from_text.active_version == 1 and from_text.required == ("acme",)


def test_a_proposal_checked_against_a_superseded_version_is_refused(
    services: Services,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between ACME's check (outside the lock) and its insertion (under it), BigMart activates
    a change of its own. ACME's approvals were computed against the superseded version, so
    its proposal is refused with 409 and stores nothing; proposed again, it passes."""
    acme = authenticate(services, f"Bearer {demo_keys['acme']['compliance']}")
    bigmart = authenticate(services, f"Bearer {demo_keys['bigmart']['compliance']}")
    bigmart_change = json.loads(json.dumps(demo_policy))
    bigmart_change["datasets"]["bigmart.loyalty"]["columns"]["visits_90d"]["aggregates"] = ["sum"]
    acme_change = json.loads(json.dumps(bigmart_change))
    acme_change["budgets"]["acme"]["epsilon"] = 6.0

    real_check = policies.check_policy
    raced: list[dict[str, Any]] = []

    def check_then_race(*args: Any, **kwargs: Any) -> policies.PolicyCheck:
        checked = real_check(*args, **kwargs)
        if args[1] is acme and not raced:  # BigMart's own proposal runs the real check only
            body = yaml.safe_dump(bigmart_change).encode()
            raced.append(policies.put_policy(services, bigmart, DEMO, body, "application/yaml"))
        return checked

    def versions() -> list[tuple[int, str, str]]:
        listed = policies.list_versions(services, acme, DEMO)["versions"]
        return [(v["version"], v["status"], v["proposed_by"]) for v in listed]

    monkeypatch.setattr(policies, "check_policy", check_then_race)
    body = yaml.safe_dump(acme_change).encode()
    with pytest.raises(Conflict, match="active policy changed"):
        policies.put_policy(services, acme, DEMO, body, "application/yaml")
    assert raced[0]["status"] == "active" and raced[0]["version"] == 2
    assert versions() == [(1, "superseded", "acme"), (2, "active", "bigmart")]

    answer = policies.put_policy(services, acme, DEMO, body, "application/yaml")
    assert (answer["version"], answer["status"]) == (3, "pending")
    assert answer["approvals"] == {"acme": True, "bigmart": False}
