"""``GET …/audit`` answers in the caller's terms: its events numbered 1, 2, 3 … whatever others do.

The audit chain is one for the whole gateway. An organisation reads the events of one
collaboration that it may see, numbered by their order among those (``seq``), pages with
``after`` in that numbering, and hears of a break at the ``seq`` of the first of its events the
chain no longer vouches for. Nothing in the answer may count the events hidden from it: other
collaborations' events, and a co-member's events on data that does not touch its own.

Three gateways are built from the same seeded demo with a frozen clock and run the same
interleaved baseline (queries, refusals, replays, uploads and a policy proposal in both demo
collaborations); two of them also run extra activity hidden from one organisation. That
organisation's view must be byte for byte the same as in the quiet gateway, except for query
ids (random) and fingerprints (they commit to the whole chain).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.demo.seed import NETWORK_COLLABORATION, POLICY_FILE, seed_demo
from gateway.service.context import Services, open_services

DEMO = "acme-bigmart-cx"
NETWORK = NETWORK_COLLABORATION
FROZEN = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CUSTOMERS = 2_000  # as the integration conftest seeds the template


def _count(dataset: str) -> dict[str, Any]:
    return {"from": dataset, "aggregates": [{"fn": "count", "as": "n"}]}


JOINT = {
    "from": "bigmart.loyalty",
    "join": ["acme.survey"],
    "group_by": ["region"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}
FORBIDDEN = {"from": "bigmart.loyalty", "group_by": ["email"], "aggregates": [{"fn": "count"}]}
RETAIL = {"from": "acme.retail_network", "aggregates": [{"fn": "sum", "column": "spend"}]}

# A step: (what, collaboration, organisation, argument). Queries name a plan and ε.
Step = tuple[str, str, str, Any]

BASELINE: list[Step] = [
    ("query", DEMO, "acme", (JOINT, 0.2)),  # acme, bigmart
    ("query", NETWORK, "shopco", (_count("shopco.store_weeks"), 0.1)),  # shopco
    ("query", DEMO, "acme", (_count("acme.survey"), 0.1)),  # acme only
    ("query", DEMO, "bigmart", (JOINT, 0.3)),  # acme, bigmart
    ("query", DEMO, "acme", (FORBIDDEN, 0.1)),  # refused: acme, bigmart
    ("query", NETWORK, "shopco", (RETAIL, 0.2)),  # shopco, bigmart
    ("query", DEMO, "acme", (JOINT, 0.2)),  # replayed: acme, bigmart
    ("propose", DEMO, "bigmart", 30),  # policy.proposed: acme, bigmart
    ("query", DEMO, "bigmart", (_count("bigmart.loyalty"), 0.1)),  # bigmart only
    ("query", NETWORK, "acme", (RETAIL, 0.1)),  # acme, bigmart, shopco
]

# Extra activity slipped in after each baseline step (by index): none of it is visible to
# acme in DEMO, nor to shopco in NETWORK.
HIDDEN_FROM_ACME: dict[int, list[Step]] = {
    0: [("query", DEMO, "bigmart", (_count("bigmart.loyalty"), 0.2))],
    1: [("query", NETWORK, "bigmart", (_count("bigmart.store_weeks"), 0.1))],
    2: [
        ("query", DEMO, "bigmart", (FORBIDDEN, 0.1)),  # refused on its own data: bigmart only
        ("query", NETWORK, "acme", (_count("acme.nps_survey"), 0.1)),
    ],
    6: [("query", DEMO, "bigmart", (_count("bigmart.loyalty"), 0.3))],
    # after acme's last query on bigmart.loyalty: a new version would make its replay a release
    8: [
        ("upload", DEMO, "bigmart", "loyalty"),
        ("query", NETWORK, "acme", (_count("acme.nps_survey"), 0.2)),
    ],
}
# The mirror image: none of it is visible to bigmart in DEMO, nor to shopco in NETWORK.
HIDDEN_FROM_BIGMART: dict[int, list[Step]] = {
    0: [("query", DEMO, "acme", (_count("acme.survey"), 0.2))],
    3: [("query", NETWORK, "acme", (_count("acme.nps_survey"), 0.1))],
    5: [("query", DEMO, "acme", (_count("acme.survey"), 0.3))],
    7: [("query", NETWORK, "bigmart", (_count("bigmart.store_weeks"), 0.1))],
    8: [("upload", DEMO, "acme", "survey")],
}
MEMBERS = {DEMO: ("acme", "bigmart"), NETWORK: ("acme", "bigmart", "shopco")}


@dataclass
class Gateway:
    """One gateway over its own copy of the seeded demo: the real app, through
    httpx.ASGITransport."""

    services: Services
    keys: dict[str, Any]
    app: Any

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
                return await c.request(method, path, headers=headers, **kwargs)

        return anyio.run(go)

    def key(self, org: str, role: str) -> str:
        return str(self.keys[org][role])


@pytest.fixture
def gateways(demo_template: Path, tmp_path: Path) -> Iterator[Any]:
    """``open(name)`` gives a gateway over a fresh copy of the seeded demo, clock frozen."""
    opened: list[Services] = []

    def open_gateway(name: str) -> Gateway:
        data_dir = tmp_path / name
        shutil.copytree(demo_template, data_dir)
        settings = Settings(data_dir=data_dir, demo=True, demo_customers=CUSTOMERS)
        services = open_services(settings, clock=lambda: FROZEN)
        opened.append(services)
        keys = seed_demo(services, customers=CUSTOMERS, progress=lambda _: None)
        return Gateway(services, keys, create_app(services=services))

    yield open_gateway
    for services in opened:
        services.close()


def _do(gw: Gateway, step: Step, tables: Any) -> None:
    what, collab, org, arg = step
    base = f"/v1/collaborations/{collab}"
    if what == "query":
        plan, epsilon = arg
        body = {"plan": plan, "epsilon": epsilon}
        answer = gw.call("POST", f"{base}/queries", gw.key(org, "analyst"), json=body)
        assert answer.status_code == (403 if plan is FORBIDDEN else 200), answer.text
    elif what == "upload":
        table = tables.loyalty if arg == "loyalty" else tables.survey
        answer = gw.call(
            "POST",
            f"{base}/datasets/{arg}",
            gw.key(org, "contributor"),
            content=_parquet(table),
            headers={"Content-Type": "application/vnd.apache.parquet"},
        )
        assert answer.status_code == 201, answer.text
    else:
        document = yaml.safe_load(POLICY_FILE.read_text())
        document["rules"]["min_group_size"] = arg
        answer = gw.call(
            "PUT",
            f"{base}/policy",
            gw.key(org, "compliance"),
            content=yaml.safe_dump(document).encode(),
            headers={"Content-Type": "application/yaml"},
        )
        assert answer.status_code == 200 and answer.json()["status"] == "pending", answer.text


def _parquet(table: Any) -> bytes:
    import io

    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _run(gw: Gateway, extra: dict[int, list[Step]], tables: Any) -> None:
    for i, step in enumerate(BASELINE):
        _do(gw, step, tables)
        for hidden in extra.get(i, []):
            _do(gw, hidden, tables)


def _events(gw: Gateway, collab: str, org: str, **params: Any) -> list[dict[str, Any]]:
    answer = gw.call(
        "GET", f"/v1/collaborations/{collab}/audit", gw.key(org, "compliance"), params=params
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def _verify(gw: Gateway, collab: str, org: str) -> dict[str, Any]:
    answer = gw.call("GET", f"/v1/collaborations/{collab}/audit/verify", gw.key(org, "compliance"))
    assert answer.status_code == 200, answer.text
    verdict: dict[str, Any] = answer.json()
    return verdict


def _comparable(events: list[dict[str, Any]]) -> str:
    """The view as JSON text, without what legitimately differs between two gateways: the
    fingerprints (they commit to the whole chain) and query ids (random), which become their
    order of first appearance in the view."""
    names: dict[str, str] = {}
    shown = []
    for event in events:
        event = {k: v for k, v in event.items() if k != "hash"}
        details = dict(event["details"])
        if "query_id" in details:
            details["query_id"] = names.setdefault(details["query_id"], f"q{len(names) + 1}")
        shown.append({**event, "details": details})
    return json.dumps(shown, sort_keys=True)


def _chain_positions(gw: Gateway, collab: str) -> dict[str, int]:
    """fingerprint → global chain position, as only the operator can compute it."""
    return {e.fingerprint: e.seq for e in gw.services.audit.events(collab, None, 1_000_000)}


def test_each_view_is_numbered_from_one_and_the_same_whatever_others_do(
    gateways: Any, demo_tables: Any, assert_error: Any
) -> None:
    quiet, busy_a, busy_b = gateways("quiet"), gateways("busy-a"), gateways("busy-b")
    _run(quiet, {}, demo_tables)
    _run(busy_a, HIDDEN_FROM_ACME, demo_tables)
    _run(busy_b, HIDDEN_FROM_BIGMART, demo_tables)

    views: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for name, gw in (("quiet", quiet), ("busy_a", busy_a), ("busy_b", busy_b)):
        views[name] = {}
        for collab, members in MEMBERS.items():
            for org in members:
                events = _events(gw, collab, org)
                # ordinals 1..n, no gaps; verify counts the same n and finds the chain intact
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                assert _verify(gw, collab, org) == {
                    "ok": True,
                    "events": len(events),
                    "first_bad": None,
                }
                assert all(e["collaboration"] == collab for e in events)
                views[name][(collab, org)] = events

    # The extra activity happened, and is visible where it should be ...
    chain = quiet.services.audit.verify()[1]
    assert busy_a.services.audit.verify()[1] == chain + 7
    assert busy_b.services.audit.verify()[1] == chain + 5
    assert len(views["busy_a"][(DEMO, "bigmart")]) == len(views["quiet"][(DEMO, "bigmart")]) + 4
    assert len(views["busy_b"][(DEMO, "acme")]) == len(views["quiet"][(DEMO, "acme")]) + 3
    # ... and moved the global positions of the events the others still see the same way.
    last_acme = views["quiet"][(DEMO, "acme")][-1]["hash"]
    last_acme_busy = views["busy_a"][(DEMO, "acme")][-1]["hash"]
    assert _chain_positions(busy_a, DEMO)[last_acme_busy] > _chain_positions(quiet, DEMO)[last_acme]

    # Byte for byte the same view where nothing extra was visible.
    for busy, unchanged in (
        ("busy_a", [(DEMO, "acme"), (NETWORK, "shopco")]),
        ("busy_b", [(DEMO, "bigmart"), (NETWORK, "shopco")]),
    ):
        for collab, org in unchanged:
            assert _comparable(views[busy][(collab, org)]) == _comparable(
                views["quiet"][(collab, org)]
            ), (busy, collab, org)

    # The fingerprint is not the chain hash, and no chain hash appears in any answer.
    chain_hashes = {str(r[0]) for r in busy_a.services.db.execute("SELECT hash FROM audit_events")}
    for (collab, org), events in views["busy_a"].items():
        text = json.dumps(events)
        assert not any(h in text for h in chain_hashes), (collab, org)
        assert all("prev_hash" not in e for e in events)
        for event in events:
            entry = _chain_positions(busy_a, collab)[event["hash"]]
            (stored,) = busy_a.services.db.execute(
                "SELECT hash FROM audit_events WHERE seq = ?", (entry,)
            )[0]
            expected = hashlib.sha256(f"insight-gateway-audit-fingerprint:{stored}".encode())
            assert event["hash"] == expected.hexdigest()

    _check_paging(busy_a, assert_error)


def _check_paging(gw: Gateway, assert_error: Any) -> None:
    """``after`` pages in the caller's numbering; a bad ``after`` or ``limit`` is refused."""
    full = _events(gw, DEMO, "acme")
    n = len(full)
    assert n >= 10
    for limit in (1, 3, 7):
        pages: list[dict[str, Any]] = []
        after = 0
        while True:
            page = _events(gw, DEMO, "acme", limit=limit, after=after)
            assert len(page) <= limit
            pages += page
            if len(page) < limit:
                break
            after = page[-1]["seq"]
        assert pages == full, limit
    assert _events(gw, DEMO, "acme", after=n - 1) == full[-1:]
    assert _events(gw, DEMO, "acme", after=n) == []
    assert _events(gw, DEMO, "acme", after=n + 1000) == []
    assert _events(gw, DEMO, "acme", limit=2, after=4) == full[4:6]

    before = {t: _rows(gw, t) for t in ("audit_events", "ledger", "releases")}
    for params, field in (({"after": -1}, "after"), ({"limit": 0}, "limit")):
        answer = gw.call(
            "GET", f"/v1/collaborations/{DEMO}/audit", gw.key("acme", "compliance"), params=params
        )
        error = assert_error(answer, 400, "invalid_request")
        assert error["message"].startswith(field)
    assert {t: _rows(gw, t) for t in ("audit_events", "ledger", "releases")} == before


def _rows(gw: Gateway, table: str) -> int:
    row = gw.services.db.one(f"SELECT count(*) FROM {table}")
    assert row is not None
    return int(row[0])


# Tampering is reported at the caller's own seq ----------------------------------------------


def _flip(gw: Gateway, position: int) -> None:
    """Change one letter of the entry's details (still valid JSON), as an intruder could."""
    (details,) = gw.services.db.execute(
        "SELECT details_json FROM audit_events WHERE seq = ?", (position,)
    )[0]
    i = next(i for i, ch in enumerate(details) if ch.isalpha())
    flipped = details[:i] + chr(ord(details[i]) ^ 1) + details[i + 1 :]
    assert flipped != details
    gw.services.db.execute(
        "UPDATE audit_events SET details_json = ? WHERE seq = ?", (flipped, position)
    )


def _delete(gw: Gateway, position: int) -> None:
    gw.services.db.execute("DELETE FROM audit_events WHERE seq = ?", (position,))


def _hidden_from(gw: Gateway, org: str, last: bool) -> int:
    """The chain position of the first (or last) DEMO query event ``org`` may not see."""
    row = gw.services.db.one(
        f"SELECT {'max' if last else 'min'}(seq) FROM audit_events WHERE collaboration = ?"
        " AND action LIKE 'query.%' AND NOT list_contains(visible_to, ?)",
        (DEMO, org),
    )
    assert row is not None and row[0] is not None
    return int(row[0])


CASES = [
    "change acme's 6th event",
    "delete acme's 6th event",
    "delete an event acme cannot see",
    "delete the last event acme cannot see",  # after all of acme's: first_bad is null for acme
]


def test_tampering_is_reported_at_the_callers_seq(gateways: Any, demo_tables: Any) -> None:
    """Each case tampers with one entry, checks every member's list and verdict, and puts
    the entry back (the signed head never changed, so the chain verifies again)."""
    gw = gateways("tamper")
    _run(gw, HIDDEN_FROM_ACME, demo_tables)
    views = {org: _events(gw, DEMO, org) for org in MEMBERS[DEMO]}
    chain = _chain_positions(gw, DEMO)
    at = {org: [chain[e["hash"]] for e in views[org]] for org in views}  # seq → chain position
    db = gw.services.db

    for case in CASES:
        if case.endswith("6th event"):
            broken = at["acme"][5]
        else:
            broken = _hidden_from(gw, "acme", last="last" in case)
            assert broken not in at["acme"] and broken in at["bigmart"], case
        original = db.execute("SELECT * FROM audit_events WHERE seq = ?", (broken,))[0]
        deleted = case.startswith("delete")
        if deleted:
            _delete(gw, broken)
        else:
            _flip(gw, broken)
        assert gw.services.audit.verify()[2] == broken, case

        for org in MEMBERS[DEMO]:
            now = _events(gw, DEMO, org)
            kept = [
                e for e, p in zip(views[org], at[org], strict=True) if not deleted or p != broken
            ]
            # still numbered 1..n over what is left, in the same order with the same
            # fingerprints: a hidden deletion does not move the caller's list at all
            assert [e["seq"] for e in now] == list(range(1, len(kept) + 1)), (case, org)
            assert [e["hash"] for e in now] == [e["hash"] for e in kept], (case, org)
            # first_bad: the seq, in that list, of the first entry at or after the break
            first = next((i + 1 for i, e in enumerate(kept) if chain[e["hash"]] >= broken), None)
            verdict = {"ok": False, "events": len(now), "first_bad": first}
            assert _verify(gw, DEMO, org) == verdict, (case, org)

        first_bad = _verify(gw, DEMO, "acme")["first_bad"]
        if case.endswith("6th event"):
            assert first_bad == 6, case  # after a deletion, the event that followed holds 6
        elif "last" in case:
            assert first_bad is None, case
        else:
            assert first_bad is not None, case
            assert _events(gw, DEMO, "acme") == views["acme"], case

        db.execute("DELETE FROM audit_events WHERE seq = ?", (broken,))
        db.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", original)
        assert gw.services.audit.verify() == (True, chain_length(gw), None), case


def chain_length(gw: Gateway) -> int:
    row = gw.services.db.one("SELECT count(*) FROM audit_events")
    assert row is not None
    return int(row[0])
