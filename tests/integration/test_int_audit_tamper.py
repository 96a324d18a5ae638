"""Tampering with the stored audit trail is detected, online and offline.

Each case changes the catalog the way an intruder with write access to the DuckDB file could
(without the gateway's signing key) and expects ``GET …/audit/verify`` and the offline
``insightgw audit verify --data-dir`` to report the chain broken at the right entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import Settings
from gateway.service.context import Services
from gateway.store.audit import _event_hash, _head_message

DEMO = "acme-bigmart-cx"
VERIFY = f"/v1/collaborations/{DEMO}/audit/verify"
REPO_ROOT = Path(__file__).resolve().parents[2]

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _count(run: Run) -> int:
    return int(run("SELECT COUNT(*) FROM audit_events", ())[0][0])


def _flip_a_byte(run: Run, seq: int) -> None:
    """Change one character of the event's details (still valid JSON, still UTF-8)."""
    (details,) = run("SELECT details_json FROM audit_events WHERE seq = ?", (seq,))[0]
    i = next(i for i, ch in enumerate(details) if ch.isalpha())
    flipped = details[:i] + chr(ord(details[i]) ^ 1) + details[i + 1 :]
    assert flipped != details and len(flipped.encode()) == len(details.encode())
    run("UPDATE audit_events SET details_json = ? WHERE seq = ?", (flipped, seq))


def _delete(run: Run, seq: int) -> None:
    run("DELETE FROM audit_events WHERE seq = ?", (seq,))


def _truncate(run: Run, k: int) -> None:
    run("DELETE FROM audit_events WHERE seq > ?", (_count(run) - k,))


def _corrupt_head_signature(run: Run) -> None:
    (signature,) = run("SELECT signature FROM audit_head WHERE id = 1", ())[0]
    raw = bytearray(signature)
    raw[7] ^= 0x01
    run("UPDATE audit_head SET signature = ? WHERE id = 1", (bytes(raw),))


def _resign(run: Run, seq: int, digest: str) -> None:
    """Sign a head with a key that is not the gateway's, as someone covering tracks would."""
    signature = Ed25519PrivateKey.generate().sign(_head_message(seq, digest))
    run(
        "UPDATE audit_head SET seq = ?, hash = ?, signature = ? WHERE id = 1",
        (seq, digest, signature),
    )


def _truncate_and_resign(run: Run, k: int) -> None:
    _truncate(run, k)
    last = _count(run)
    (digest,) = run("SELECT hash FROM audit_events WHERE seq = ?", (last,))[0]
    _resign(run, last, digest)


def _rewrite_from(run: Run, seq: int) -> None:
    """Change an entry and recompute every later hash: only the signed head can tell."""
    _flip_a_byte(run, seq)
    rows = run(
        'SELECT seq, "at", collaboration, actor_org, actor_role, action, visible_to, '
        "details_json FROM audit_events WHERE seq >= ? ORDER BY seq",
        (seq,),
    )
    (prev,) = run("SELECT prev_hash FROM audit_events WHERE seq = ?", (seq,))[0]
    for r in rows:
        digest = _event_hash(prev, int(r[0]), r[1], r[2], r[3], r[4], r[5], tuple(r[6]), r[7])
        run("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, r[0]))
        prev = digest


# (case id, tamper(run, total), expected (events, first_bad) given the untouched total)
CASES: list[tuple[str, Callable[[Run, int], None], Callable[[int], tuple[int, int]]]] = [
    ("flip a byte", lambda run, n: _flip_a_byte(run, 5), lambda n: (n, 5)),
    ("flip a byte in the last entry", lambda run, n: _flip_a_byte(run, n), lambda n: (n, n)),
    ("delete an entry", lambda run, n: _delete(run, 6), lambda n: (n - 1, 6)),
    ("delete the first entry", lambda run, n: _delete(run, 1), lambda n: (n - 1, 1)),
    ("truncate the tail", lambda run, n: _truncate(run, 3), lambda n: (n - 3, n - 2)),
    ("truncate one", lambda run, n: _truncate(run, 1), lambda n: (n - 1, n)),
    ("corrupt the head signature", lambda run, n: _corrupt_head_signature(run), lambda n: (n, n)),
    (
        "re-sign the head with another key",
        lambda run, n: _resign(run, n, run("SELECT hash FROM audit_head WHERE id = 1", ())[0][0]),
        lambda n: (n, n),
    ),
    (
        "truncate and re-sign with another key",
        lambda run, n: _truncate_and_resign(run, 2),
        lambda n: (n - 2, n - 2),
    ),
    ("rewrite and re-chain", lambda run, n: _rewrite_from(run, 4), lambda n: (n, n)),
    ("delete the head", lambda run, n: run("DELETE FROM audit_head", ()), lambda n: (n, n)),
]
IDS = [c[0] for c in CASES]


# Through the API ---------------------------------------------------------------------------


def _verify(api: Any, key: str) -> dict[str, Any]:
    response = api.get(VERIFY, key=key)
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict


@pytest.mark.parametrize(("case", "tamper", "expected"), CASES, ids=IDS)
def test_api_verify_detects_tampering(
    case: str,
    tamper: Callable[[Run, int], None],
    expected: Callable[[int], tuple[int, int]],
    api: Any,
    services: Services,
    demo_keys: dict[str, Any],
) -> None:
    run: Run = services.db.execute
    total = _count(run)
    assert total >= 8
    for org in ("acme", "bigmart"):
        assert _verify(api, demo_keys[org]["compliance"]) == {
            "ok": True,
            "events": _visible(run, org),
            "first_bad": None,
        }
    tamper(run, total)
    _, first_bad = expected(total)
    assert services.audit.verify()[2] == first_bad, case
    for org in ("acme", "bigmart"):
        verdict = _verify(api, demo_keys[org]["compliance"])
        # The answer is in the caller's terms: its own events, and the first of them the broken
        # chain can no longer vouch for (the gateway-wide length and position stay private).
        assert verdict == {
            "ok": False,
            "events": _visible(run, org),
            "first_bad": _first_visible_from(run, org, first_bad),
        }, case


def _visible(run: Run, org: str) -> int:
    rows = run(
        "SELECT count(*) FROM audit_events"
        " WHERE collaboration = ? AND list_contains(visible_to, ?)",
        (DEMO, org),
    )
    return int(rows[0][0])


def _first_visible_from(run: Run, org: str, seq: int) -> int | None:
    """The ``seq`` that ``org`` reads (its own numbering: 1, 2, 3 … over the events it may
    see) for the first of its events at or after the chain position ``seq``."""
    rows = run(
        "SELECT count(*) FILTER (WHERE seq < ?), count(*) FILTER (WHERE seq >= ?)"
        " FROM audit_events WHERE collaboration = ? AND list_contains(visible_to, ?)",
        (seq, seq, DEMO, org),
    )
    before, from_there = int(rows[0][0]), int(rows[0][1])
    return before + 1 if from_there else None


def test_check_names_the_reason(services: Services, demo_keys: dict[str, Any]) -> None:
    run: Run = services.db.execute
    total = _count(run)
    _delete(run, 6)
    verdict = services.audit.check()
    assert (verdict.ok, verdict.first_bad, verdict.reason) == (False, 6, "entry 6 is missing")
    assert services.audit.verify() == (False, total - 1, 6)


def test_appending_to_an_intact_chain_keeps_it_verifiable(
    api: Any, services: Services, demo_keys: dict[str, Any]
) -> None:
    before = _count(services.db.execute)
    plan = {"plan": {"from": "acme.survey", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1}
    for epsilon in (0.1, 0.2):
        plan["epsilon"] = epsilon
        answer = api.post(
            f"/v1/collaborations/{DEMO}/queries", key=demo_keys["acme"]["analyst"], json=plan
        )
        assert answer.status_code == 200, answer.text
    verdict = _verify(api, demo_keys["acme"]["compliance"])
    assert verdict == {
        "ok": True,
        "events": _visible(services.db.execute, "acme"),
        "first_bad": None,
    }
    assert _count(services.db.execute) == before + 2


def test_verify_needs_a_compliance_key_of_a_member(
    api: Any, demo_keys: dict[str, Any], assert_error: Any
) -> None:
    assert_error(api.get(VERIFY, key=demo_keys["acme"]["analyst"]), 403, "forbidden")
    assert_error(api.get(VERIFY), 401, "unauthenticated")


# Offline, with the gateway stopped ---------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tamper_file(settings: Settings, tamper: Callable[[Run, int], None]) -> int:
    """Apply ``tamper`` to the closed catalog file; returns the event count before."""
    con = duckdb.connect(str(settings.catalog_path))
    try:

        def run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return con.execute(sql, list(params)).fetchall()

        total = _count(run)
        tamper(run, total)
    finally:
        con.close()
    return total


def test_offline_verify_of_an_intact_store(settings: Settings) -> None:
    """``settings`` is a closed copy of a store seeded by ``seed_demo(…, customers=2000)``."""
    total = _tamper_file(settings, lambda run, n: None)
    result = _cli("audit", "verify", "--data-dir", str(settings.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"audit chain OK: {total} events" in result.stdout
    assert result.stderr == ""


OFFLINE_CASES = [
    c
    for c in CASES
    if c[0]
    in {
        "flip a byte",
        "delete an entry",
        "truncate the tail",
        "corrupt the head signature",
        "re-sign the head with another key",
        "truncate and re-sign with another key",
    }
]


@pytest.mark.parametrize(
    ("case", "tamper", "expected"), OFFLINE_CASES, ids=[c[0] for c in OFFLINE_CASES]
)
def test_offline_verify_detects_tampering(
    case: str,
    tamper: Callable[[Run, int], None],
    expected: Callable[[int], tuple[int, int]],
    settings: Settings,
) -> None:
    total = _tamper_file(settings, tamper)
    events, first_bad = expected(total)
    result = _cli("audit", "verify", "--data-dir", str(settings.data_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"audit chain BROKEN: first bad entry is seq {first_bad}" in result.stdout, case
    assert f"({events} events stored in" in result.stdout
    assert "Traceback" not in result.stderr


def test_offline_verify_refuses_a_running_gateway(settings: Settings, services: Services) -> None:
    """``services`` holds the catalog open, as a running gateway does: one clean line, exit 2."""
    result = _cli("audit", "verify", "--data-dir", str(settings.data_dir))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "another gateway" in result.stderr


def test_offline_verify_of_a_missing_store(tmp_path: Path) -> None:
    result = _cli("audit", "verify", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: no gateway store in")
    assert not (tmp_path / "nowhere").exists()


def test_offline_verify_without_the_master_key(settings: Settings) -> None:
    (settings.data_dir / "master.key").unlink()
    result = _cli("audit", "verify", "--data-dir", str(settings.data_dir))
    assert result.returncode == 2
    assert "master key" in result.stderr and "Traceback" not in result.stderr
