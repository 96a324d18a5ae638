"""Benchmark: the privacy budget under concurrent queries (issue 5, point 4).

Seeds the demo (2,000 customers per partner) and, for each round, raises acme's budget by
exactly ten queries' worth (ε 1.0 at ε 0.1 a query) through an approved policy version, then
fires 50 distinct ε-0.1 queries from 50 threads released together, each calling
``gateway.service.queries.run_query`` directly. The ledger's single reserve transaction should
let exactly 10 through per round. Counts per run:

* ``overspent_releases``: releases beyond the 10 a round's budget holds (must be 0);
* ``overspent_rounds``: rounds after which the ledger's ε exceeds the budget (must be 0);
* ``underfilled_rounds``: rounds with fewer than 10 releases (budget left unspent; should be 0);
* ``other_refusals``: outcomes that were neither a release nor ``budget_exceeded``.

Appends one JSON line to bench/results/budget_races.jsonl and exits 1 on any overspend.

Usage: python bench/budget_races.py [--rounds 100] [--threads 50]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import Settings  # noqa: E402
from gateway.demo.seed import COLLABORATION, POLICY_FILE, seed_demo  # noqa: E402
from gateway.domain.errors import GatewayError  # noqa: E402
from gateway.domain.model import Principal  # noqa: E402
from gateway.service import policies  # noqa: E402
from gateway.service.access import authenticate  # noqa: E402
from gateway.service.context import Services, open_services  # noqa: E402
from gateway.service.queries import run_query  # noqa: E402

FIT = 10
EPSILON = 0.1
CUSTOMERS = 2_000


def race_bodies(count: int) -> list[dict[str, Any]]:
    """``count`` distinct plans at ε 0.1: a count under different channel × region filters."""

    def subsets(values: tuple[str, ...]) -> list[list[str]]:
        return [
            list(c) for n in range(1, len(values) + 1) for c in itertools.combinations(values, n)
        ]

    filters = list(
        itertools.product(
            subsets(("store", "online", "app")), subsets(("north", "south", "east", "west"))
        )
    )
    if count > len(filters):
        raise SystemExit(f"at most {len(filters)} distinct plans; asked for {count}")
    return [
        {
            "plan": {
                "from": "bigmart.loyalty",
                "where": [
                    {"column": "channel", "op": "in", "values": channels},
                    {"column": "region", "op": "in", "values": regions},
                ],
                "group_by": ["region"],
                "aggregates": [{"fn": "count", "as": "customers"}],
            },
            "epsilon": EPSILON,
        }
        for channels, regions in filters[:count]
    ]


def set_budget(services: Services, keys: dict[str, Any], total: float) -> None:
    """Activate the demo policy with acme's budget at ``total`` (every needed owner approves)."""
    document = yaml.safe_load(POLICY_FILE.read_text())
    document["budgets"]["acme"]["epsilon"] = total
    body = yaml.safe_dump(document, sort_keys=False).encode()
    compliance = {
        org: authenticate(services, f"Bearer {keys[org]['compliance']}")
        for org in ("acme", "bigmart")
    }
    answer = policies.put_policy(
        services, compliance["acme"], COLLABORATION, body, "application/yaml"
    )
    for org, approved in answer["approvals"].items():
        if not approved:
            answer = policies.decide(
                services, compliance[org], COLLABORATION, answer["version"], "approved"
            )
    if answer["status"] != "active":
        raise RuntimeError(f"policy not active: {answer}")


def race(
    services: Services, principal: Principal, bodies: list[dict[str, Any]]
) -> list[dict[str, Any] | str]:
    """Every body in its own thread, released together: a release or an error code each."""
    start = threading.Barrier(len(bodies))

    def ask(body: dict[str, Any]) -> dict[str, Any] | str:
        start.wait()
        try:
            return run_query(services, principal, COLLABORATION, body)
        except GatewayError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(ask, bodies))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=50)
    args = parser.parse_args()
    bodies = race_bodies(args.threads)

    counts = dict(overspent_releases=0, overspent_rounds=0, underfilled_rounds=0, other_refusals=0)
    max_excess = 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", demo=True, demo_customers=CUSTOMERS)
        services = open_services(settings)
        try:
            keys = seed_demo(services, customers=CUSTOMERS, progress=lambda _: None)
            analyst = authenticate(services, f"Bearer {keys['acme']['analyst']}")
            releases_total = 0
            for round_ in range(1, args.rounds + 1):
                total = round_ * FIT * EPSILON
                set_budget(services, keys, total)
                outcomes = race(services, analyst, bodies)
                released = sum(isinstance(o, dict) for o in outcomes)
                counts["other_refusals"] += sum(
                    isinstance(o, str) and o != "budget_exceeded" for o in outcomes
                )
                counts["overspent_releases"] += max(0, released - FIT)
                counts["underfilled_rounds"] += released < FIT
                row = services.db.one(
                    "SELECT SUM(epsilon), COUNT(*) FROM ledger WHERE collaboration = ? AND org = ?",
                    (COLLABORATION, "acme"),
                )
                assert row is not None
                spent = float(row[0] or 0.0)
                max_excess = max(max_excess, spent - total)
                counts["overspent_rounds"] += spent > total + 1e-9
                releases_total += released
                print(f"round {round_}: {released} released, ledger ε {spent:.12g} of {total:g}")
        finally:
            services.close()

    result = {
        "bench": "budget_races",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "threads": args.threads,
        "fit_per_round": FIT,
        "epsilon_per_query": EPSILON,
        "customers_per_partner": CUSTOMERS,
        **counts,
        "max_ledger_excess": max_excess,
        "releases": releases_total,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    out = ROOT / "bench" / "results" / "budget_races.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    if counts["overspent_releases"] or counts["overspent_rounds"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
