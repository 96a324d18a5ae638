"""Master-key rotation is audited: one event per collaboration and one for the gateway.

The events hold counts and key fingerprints only (never key material), are visible to each
collaboration's members through the audit API, and the chain verifies after the rotation,
online and offline. A rotation that fails leaves no event behind (same transaction).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from gateway import cli
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.service.context import Services, open_services
from gateway.store import rotation
from gateway.store.crypto import Keyring

DEMO = "acme-bigmart-cx"
OTHER = "acme-dealer"
DEALER = "dealer-north"
ROTATED = "master_key.rotated"


def master_key(settings: Settings) -> bytes:
    return base64.b64decode((settings.data_dir / "master.key").read_text().strip())


def get(services: Services, path: str, key: str) -> httpx.Response:
    app = create_app(services=services)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get(path, headers={"Authorization": f"Bearer {key}"})

    return anyio.run(call)


def rotated_events(services: Services) -> list[tuple[str | None, list[str], dict[str, Any]]]:
    rows = services.db.execute(
        "SELECT collaboration, visible_to, details_json FROM audit_events "
        "WHERE action = ? ORDER BY seq",
        (ROTATED,),
    )
    return [(r[0], list(r[1]), json.loads(r[2])) for r in rows]


def no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


def test_rotation_appends_signed_events_with_counts_and_fingerprints_only(
    api: Any,
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin = demo_keys["admin"]
    made = api.post("/v1/orgs", key=admin, json={"id": DEALER, "name": "Dealer", "kind": "partner"})
    assert made.status_code == 201, made.text
    made = api.post(
        "/v1/collaborations",
        key=admin,
        json={"id": OTHER, "name": "ACME dealers", "members": ["acme", DEALER]},
    )
    assert made.status_code == 201, made.text
    versions = services.db.execute(
        "SELECT collaboration, COUNT(*) FROM dataset_versions GROUP BY 1"
    )
    data_keys = {str(c): int(n) for c, n in versions}
    assert data_keys[DEMO] >= 2
    members: dict[str, list[str]] = {}
    for collab, org in services.db.execute("SELECT collaboration, org FROM members ORDER BY 1, 2"):
        members.setdefault(str(collab), []).append(str(org))
    assert members[DEMO] == ["acme", "bigmart"] and members[OTHER] == ["acme", DEALER]
    collabs = sorted(members)  # the demo's, and the one made here
    expected_events = len(collabs) + 1
    events_before = services.audit.verify()[1]
    old_key = master_key(settings)
    signing_id = services.audit.key_id
    services.close()
    no_gateway_env(monkeypatch)

    assert cli.main(["admin", "rotate-master-key", "--data-dir", str(settings.data_dir)]) == 0
    new_key = master_key(settings)
    old_id, new_id = Keyring(old_key).key_id, Keyring(new_key).key_id
    assert old_id != new_id
    printed = capsys.readouterr().out
    assert f"master key {old_id} -> {new_id}; {expected_events} audit events recorded" in printed

    reopened = open_services(settings)
    try:
        assert reopened.audit.verify() == (True, events_before + expected_events, None)
        events = rotated_events(reopened)
        assert [(c, v) for c, v, _ in events] == [(c, members[c]) for c in collabs] + [(None, [])]
        assert reopened.audit.key_id == signing_id  # the signing key was re-wrapped, not replaced
        fingerprints = {
            "old_master_key": old_id,
            "new_master_key": new_id,
            "audit_signing_key": signing_id,
        }
        per_collab = {c: d for c, _, d in events}
        assert per_collab[DEMO] == {
            "data_keys": data_keys[DEMO],
            "token_secrets": 1,
            **fingerprints,
            "outcome": "rewrapped",
        }
        assert per_collab[OTHER] == {
            "data_keys": 0,
            "token_secrets": 1,
            **fingerprints,
            "outcome": "rewrapped",
        }
        for collab in collabs:
            assert per_collab[collab]["data_keys"] == data_keys.get(collab, 0)
        assert per_collab[None] == {
            "data_keys": sum(data_keys.values()),
            "token_secrets": len(collabs),
            "gateway_secrets": 1,
            "collaborations": len(collabs),
            **fingerprints,
            "outcome": "rewrapped",
        }
        # No key material: every value is a count or an 8-hex fingerprint, and no encoding of
        # either master key, the token secrets or the signing key appears in any event.
        secrets = [
            old_key,
            new_key,
            reopened.token_key(DEMO).secret,
            reopened.token_key(OTHER).secret,
        ]
        for _, _, details in events:
            text = json.dumps(details)
            for secret in secrets:
                for encoded in (secret.hex(), base64.b64encode(secret).decode()):
                    assert encoded not in text and encoded[:16] not in text
            for name, value in details.items():
                assert isinstance(value, int) or (
                    name == "outcome" or (len(value) == 8 and int(value, 16) >= 0)
                ), (name, value)

        # Each member's compliance officer sees its collaboration's event; the chain verifies.
        for org in ("acme", "bigmart"):
            compliance = demo_keys[org]["compliance"]
            trail = get(reopened, f"/v1/collaborations/{DEMO}/audit", compliance)
            assert trail.status_code == 200, trail.text
            seen = [e for e in trail.json()["events"] if e["action"] == ROTATED]
            assert len(seen) == 1 and seen[0]["details"] == per_collab[DEMO]
            assert seen[0]["actor"] == {"org": None, "role": None}
            verdict = get(reopened, f"/v1/collaborations/{DEMO}/audit/verify", compliance)
            assert verdict.json()["ok"] is True and verdict.json()["first_bad"] is None
            seen_all = get(reopened, f"/v1/collaborations/{DEMO}/audit", compliance).json()
            assert verdict.json()["events"] == len(seen_all["events"])
        other = get(reopened, f"/v1/collaborations/{OTHER}/audit", demo_keys["acme"]["compliance"])
        assert [e["details"] for e in other.json()["events"] if e["action"] == ROTATED] == [
            per_collab[OTHER]
        ]
    finally:
        reopened.close()
    assert cli.main(["audit", "verify", "--data-dir", str(settings.data_dir)]) == 0


def fail_mid_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rotation._rewrap
    calls = {"n": 0}

    def rewrap(old: Keyring, new: Keyring, wrapped: bytes, aad: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-rotation")
        return real(old, new, wrapped, aad)

    monkeypatch.setattr(rotation, "_rewrap", rewrap)


def fail_after_the_events(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rotation._record

    def record(*args: Any, **kwargs: Any) -> int:
        real(*args, **kwargs)
        raise RuntimeError("simulated crash after the audit events")

    monkeypatch.setattr(rotation, "_record", record)


@pytest.mark.parametrize("failure", [fail_mid_rotation, fail_after_the_events])
def test_a_failed_rotation_records_no_event(
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[pytest.MonkeyPatch], None],
) -> None:
    events_before = services.audit.verify()
    key_before = master_key(settings)
    services.close()
    no_gateway_env(monkeypatch)
    failure(monkeypatch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.main(["admin", "rotate-master-key", "--data-dir", str(settings.data_dir)])

    assert master_key(settings) == key_before
    reopened = open_services(settings)
    try:
        assert reopened.audit.verify() == events_before
        assert rotated_events(reopened) == []
    finally:
        reopened.close()
