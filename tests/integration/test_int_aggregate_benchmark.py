"""Benchmark one dealer against the network, with aggregates only, through the API.

A brand and three dealers: the operator creates the organisations and the collaboration, the
first dealer proposes ``policies/acme-dealers-network.yaml`` (the brand owns no dataset here)
and the others approve it, each dealer uploads its own monthly aggregates. A dealer's analyst
then sees its standing against the rest of the network (both noised, with the difference of
every mean and its interval) and never another named dealer's figures; the brand sees every
dealer by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

POLICY_FILE = Path(__file__).resolve().parents[2] / "policies" / "acme-dealers-network.yaml"
COLLAB = "acme-dealers-network"
BASE = f"/v1/collaborations/{COLLAB}"
QUERIES, EXPLAIN = f"{BASE}/queries", f"{BASE}/queries/explain"
DEALERS = ("dealer-north", "dealer-south", "dealer-east")
SERVICES = ("maintenance", "repair", "warranty", "tyres")
# Per dealer: owners per row, median spend per owner, satisfaction rate.
PROFILE = {"dealer-north": (300, 420.0, 0.62), "dealer-south": (260, 380.0, 0.74),
           "dealer-east": (200, 350.0, 0.70)}  # fmt: skip
SLACK = 25  # noise scales; a correct release misses by more with probability < 1e-10

STANDING = (
    "SELECT CASE WHEN dealer = '{me}' THEN 'me' ELSE 'rest of network' END AS standing, "
    "service_type, SUM(owners) AS owners, AVG(spend) AS spend_per_owner, "
    "AVG(satisfied) AS satisfaction_rate FROM acme.dealer_network "
    "GROUP BY standing, service_type"
)


def _service_weeks(dealer: str) -> pa.Table:
    """Monthly aggregates of simulated owners: every row satisfies the declared bounds."""
    rng = np.random.default_rng(sum(map(ord, dealer)))
    owners_per_row, median, rate = PROFILE[dealer]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("service_type", "month", "owners", "spend", "satisfied")
    }
    for service in SERVICES:
        for month in range(1, 13):
            n = int(rng.poisson(owners_per_row))
            spend = np.minimum(median * np.exp(0.5 * rng.standard_normal(n)), 3000.0)
            rows["service_type"].append(service)
            rows["month"].append(month)
            rows["owners"].append(n)
            rows["spend"].append(round(float(np.round(spend, 2).sum()), 2))
            rows["satisfied"].append(int((rng.random(n) < rate).sum()))
    return pa.table(rows)


@pytest.fixture
def network(api: Any, demo_keys: dict[str, Any], upload: Any, encode: Any) -> dict[str, Any]:
    """The dealers' collaboration, its policy active and every dealer's data uploaded."""
    admin = demo_keys["admin"]
    keys: dict[str, Any] = {"acme": demo_keys["acme"]}
    for dealer in DEALERS:
        made = api.post(
            "/v1/orgs", key=admin, json={"id": dealer, "name": dealer, "kind": "partner"}
        )
        assert made.status_code == 201, made.text
        keys[dealer] = {}
        for role in ("analyst", "compliance", "contributor"):
            issued = api.post(f"/v1/orgs/{dealer}/keys", key=admin, json={"role": role})
            keys[dealer][role] = issued.json()["secret"]
    created = api.post(
        "/v1/collaborations",
        key=admin,
        json={"id": COLLAB, "name": "ACME dealers", "members": ["acme", *DEALERS]},
    )
    assert created.status_code == 201, created.text
    proposed = api.put(  # the brand owns no dataset here: a dealer proposes
        f"{BASE}/policy",
        key=keys["dealer-north"]["compliance"],
        content=POLICY_FILE.read_bytes(),
        headers={"Content-Type": "application/yaml"},
    )
    assert proposed.status_code == 200, proposed.text
    proposal = proposed.json()
    for dealer in DEALERS[1:]:
        decided = api.post(
            f"{BASE}/policy/versions/{proposal['version']}/approve", key=keys[dealer]["compliance"]
        )
        assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "active"
    tables = {dealer: _service_weeks(dealer) for dealer in DEALERS}
    for dealer, table in tables.items():
        stored = upload(
            dealer,
            "service_weeks",
            encode.parquet(table),
            key=keys[dealer]["contributor"],
            collab=COLLAB,
        )
        assert stored.status_code == 201, stored.text
    return {"keys": keys, "tables": tables}


def _truth(tables: dict[str, pa.Table], dealers: list[str], service: str) -> dict[str, float]:
    picked = [
        t.filter(pa.compute.equal(t.column("service_type"), service))
        for d, t in tables.items()
        if d in dealers
    ]
    owners = sum(float(np.sum(t.column("owners").to_numpy())) for t in picked)
    spend = sum(float(np.sum(np.round(t.column("spend").to_numpy() * 100))) for t in picked)
    satisfied = sum(float(np.sum(t.column("satisfied").to_numpy())) for t in picked)
    return {"owners": owners, "spend": spend / 100 / owners, "rate": satisfied / owners}


def _half(cell: dict[str, Any]) -> float:
    return max(cell["value"] - cell["ci95"][0], cell["ci95"][1] - cell["value"])


def test_a_dealer_sees_its_standing_against_the_rest_of_the_network(
    network: dict[str, Any], api: Any
) -> None:
    analyst = network["keys"]["dealer-north"]["analyst"]
    body = {"sql": STANDING.format(me="dealer-north"), "epsilon": 0.9}
    explained = api.post(EXPLAIN, key=analyst, json=body).json()
    scale = {s["statistic"]: s["noise_scale"] for s in explained["statistics"]}
    sensitivity = {s["statistic"]: s["sensitivity"] for s in explained["statistics"]}
    # Stacked: an owner may be served by all three dealers, 4 rows each.
    assert sensitivity["count"] == 12
    assert sensitivity["csum:acme.dealer_network.spend"] == 12 * (150_000 + 1)

    release = api.post(QUERIES, key=analyst, json=body)
    assert release.status_code == 200, release.text
    answer = release.json()
    assert answer["group_by"] == ["standing", "service_type"]
    rows = {(r["standing"], r["service_type"]): r for r in answer["rows"]}
    assert set(rows) == {(s, t) for s in ("me", "rest of network") for t in SERVICES}
    for (standing, service), row in rows.items():
        dealers = ["dealer-north"] if standing == "me" else ["dealer-south", "dealer-east"]
        truth = _truth(network["tables"], dealers, service)
        assert abs(row["owners"]["value"] - truth["owners"]) <= SLACK * scale["count"]
        e_count = SLACK * scale["count"]
        bound = (SLACK * scale["csum:acme.dealer_network.spend"] / 100 + 1500 * e_count) / (
            truth["owners"] - e_count
        )
        assert abs(row["spend_per_owner"]["value"] - truth["spend"]) <= bound

    comparison = answer["comparison"]
    assert (comparison["by"], comparison["of"], comparison["against"]) == (
        "standing",
        "me",
        "rest of network",
    )
    assert [c["service_type"] for c in comparison["rows"]] == list(SERVICES)
    for entry in comparison["rows"]:
        mine, rest = (
            rows[("me", entry["service_type"])],
            rows[("rest of network", entry["service_type"])],
        )
        for alias in ("spend_per_owner", "satisfaction_rate"):
            difference = entry[alias]
            expected = mine[alias]["value"] - rest[alias]["value"]
            assert difference["value"] == pytest.approx(expected, abs=1e-6)
            half = math.hypot(_half(mine[alias]), _half(rest[alias]))
            assert difference["ci95"] == pytest.approx([expected - half, expected + half], abs=2e-6)
        assert set(entry) == {"service_type", "spend_per_owner", "satisfaction_rate"}

    # Every member's compliance officer sees the query that read its rows, without figures.
    officer = network["keys"]["dealer-south"]["compliance"]
    events = api.get(f"{BASE}/audit", key=officer).json()["events"]
    released = [e for e in events if e["action"] == "query.released"]
    assert released and "dealer-south.service_weeks" in released[-1]["details"]["datasets"]
    assert "rows" not in released[-1]["details"] and "comparison" not in released[-1]["details"]


def test_the_brand_sees_every_dealer_by_name(network: dict[str, Any], api: Any) -> None:
    body = {
        "sql": "SELECT dealer, AVG(satisfied) AS rate FROM acme.dealer_network GROUP BY dealer",
        "epsilon": 0.5,
    }
    release = api.post(QUERIES, key=network["keys"]["acme"]["analyst"], json=body).json()
    assert [r["dealer"] for r in release["rows"]] == list(DEALERS)
    assert "comparison" not in release
    direct = {"sql": 'SELECT SUM(owners) AS n FROM "dealer-south".service_weeks', "epsilon": 0.1}
    assert api.post(QUERIES, key=network["keys"]["acme"]["analyst"], json=direct).status_code == 200


Query = Callable[[str], dict[str, Any]]

REFUSED: list[tuple[str, str, str]] = [
    (
        "by name",
        "SELECT dealer, SUM(owners) AS n FROM acme.dealer_network GROUP BY dealer",
        "named",
    ),
    ("another dealer's split", STANDING.format(me="dealer-south"), "named"),
    (
        "a filter on a named dealer",
        "SELECT SUM(owners) AS n FROM acme.dealer_network WHERE dealer = 'dealer-south'",
        "named",
    ),
    (
        "another dealer's dataset",
        'SELECT SUM(owners) AS n FROM "dealer-south".service_weeks',
        "named",
    ),
]


@pytest.mark.parametrize(("sql", "rule"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_dealer_never_sees_another_named_dealer(
    sql: str, rule: str, network: dict[str, Any], api: Any, services: Any, assert_error: Any
) -> None:
    keys = network["keys"]
    before = api.get(f"{BASE}/budget", key=keys["acme"]["compliance"]).json()
    ledger = services.db.one("SELECT COUNT(*) FROM ledger")
    for endpoint in (EXPLAIN, QUERIES):
        response = api.post(
            endpoint, key=keys["dealer-north"]["analyst"], json={"sql": sql, "epsilon": 0.5}
        )
        error = assert_error(response, 403, "policy_violation")
        assert f"networks.acme.dealer_network.{rule}" in error["message"]
    assert api.get(f"{BASE}/budget", key=keys["acme"]["compliance"]).json() == before
    assert services.db.one("SELECT COUNT(*) FROM ledger") == ledger


def test_too_few_peers_behind_the_rest_is_refused(
    network: dict[str, Any], api: Any, assert_error: Any
) -> None:
    keys = network["keys"]
    text = POLICY_FILE.read_text().replace(", dealer-east.service_weeks]", "]")
    proposal = api.put(
        f"{BASE}/policy",
        key=keys["dealer-north"]["compliance"],
        content=text.encode(),
        headers={"Content-Type": "application/yaml"},
    ).json()
    # A change to the network needs every member before and after it: dealer-east too.
    assert proposal["status"] == "pending"
    assert proposal["approvals"] == {d: d == "dealer-north" for d in DEALERS}
    for dealer in DEALERS[1:]:
        api.post(
            f"{BASE}/policy/versions/{proposal['version']}/approve", key=keys[dealer]["compliance"]
        )
    assert api.get(f"{BASE}/policy", key=keys["acme"]["analyst"]).json()["version"] == 2
    response = api.post(
        QUERIES,
        key=keys["dealer-north"]["analyst"],
        json={"sql": STANDING.format(me="dealer-north"), "epsilon": 0.5},
    )
    assert (
        "networks.acme.dealer_network.min_peers"
        in assert_error(response, 403, "policy_violation")["message"]
    )
