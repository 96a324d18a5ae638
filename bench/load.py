"""Benchmark: throughput and latency under concurrent queries, with a budget check.

``insightgw serve`` runs in one process on 127.0.0.1 over the store of ``bench/gen.py``
(``--customers``, 1M by default); this process is the load generator: at each concurrency
level (1, 4, 16 by default) that many clients send queries back to back through the async
SDK (``AsyncGatewayClient``) for ``--seconds``. Every query is new (count by region on the
retailer table, each with its own ε near 0.01: never a replay), so every one reserves budget,
runs the bounded SQL on the hot tables and draws noise.

Recorded per level: requests, errors (any exception or refusal), throughput, latency p50/p95/
p99/max, and the budget check: the ε the ledger reports spent during the level must equal the
sum of ``epsilon_spent`` over the releases received (a release never charged twice, nothing
charged without a release), and never exceed the total. The 1-minute load average is recorded
before and after each level.

Appends one JSON line per level to bench/results/load.jsonl.

Usage: python bench/load.py [--customers N] [--seconds S] [--levels 1,4,16] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import gen  # noqa: E402

from clients import AsyncGatewayClient, GatewayClient  # noqa: E402
from clients.retry import RetryPolicy  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "load.jsonl"
PLAN = {
    "from": gen.RETAILER,
    "group_by": ["region"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class Epsilons:
    """A distinct ε for every query of the run (all within 1e-3 of 0.01)."""

    def __init__(self) -> None:
        self.base = 0.01 - random.random() * 1e-4
        self.serial = 0

    def next(self) -> float:
        self.serial += 1
        return self.base - self.serial * 1e-9


async def run_level(
    url: str, key: str, concurrency: int, seconds: float, epsilons: Epsilons
) -> dict[str, Any]:
    latencies: list[float] = []
    charged: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def client_loop(gw: AsyncGatewayClient) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                release = await gw.query(gen.COLLABORATION, plan=PLAN, epsilon=epsilons.next())
            except Exception as exc:  # every failure is counted, none is retried
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - t) * 1e3)
            if release.replay:
                errors["replay"] = errors.get("replay", 0) + 1
            charged.append(release.epsilon_spent)

    started = time.perf_counter()
    no_retries = RetryPolicy(max_retries=0)  # an error is counted, never hidden by a retry
    async with AsyncGatewayClient(url, key, timeout=120.0, retry=no_retries) as gw:
        await asyncio.gather(*(client_loop(gw) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_qps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "epsilon_charged": sum(charged),
    }


def spent(url: str, compliance_key: str) -> tuple[float, float]:
    """(ε spent, ε total) of the analyst organisation, as the compliance officer reads it."""
    with GatewayClient(url, compliance_key) as gw:
        [entry] = [b for b in gw.budget(gen.COLLABORATION) if b["org"] == "acme"]
    return float(entry["epsilon_spent"]), float(entry["epsilon_total"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--seed", type=int, default=gen.DEFAULT_SEED)
    parser.add_argument("--data-dir", type=Path, help="keep the gateway store here (reused)")
    args = parser.parse_args()

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        data_dir = Path(tmp.name) / "gateway"
    else:
        data_dir = args.data_dir
    results = []
    try:
        tables = gen.generate(args.customers, args.seed)
        services, state = gen.open_gateway(data_dir, tables, args.seed)
        services.close()
        del tables
        analyst = state["keys"]["acme"]["analyst"]
        compliance = state["keys"]["acme"]["compliance"]
        epsilons = Epsilons()
        with gen.serving(data_dir) as url:
            with GatewayClient(url, analyst) as gw:  # the second query loads the hot table
                for use in ("first", "second"):
                    t = time.perf_counter()
                    gw.query(gen.COLLABORATION, plan=PLAN, epsilon=epsilons.next())
                    print(f"{use} query: {time.perf_counter() - t:.2f} s")
            for level in (int(x) for x in args.levels.split(",")):
                before, total = spent(url, compliance)
                load_before = round(os.getloadavg()[0], 2)
                result = asyncio.run(run_level(url, analyst, level, args.seconds, epsilons))
                after, _ = spent(url, compliance)
                result["load_average"] = {
                    "before": load_before,
                    "after": round(os.getloadavg()[0], 2),
                }
                ledger = after - before
                result["epsilon_spent_ledger"] = ledger
                result["overspend"] = (
                    ledger - result["epsilon_charged"] > 1e-9 * max(1.0, ledger) or after > total
                )
                result["budget_matches"] = math.isclose(
                    ledger, result["epsilon_charged"], rel_tol=1e-9, abs_tol=1e-12
                )
                results.append(result)
                print(
                    f"concurrency {level:>2}: {result['requests']} queries, "
                    f"{result['errors']} errors, {result['throughput_qps']} q/s, "
                    f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
                    f"p99 {result['p99_ms']} ms; ledger {ledger:.9f} ε vs releases "
                    f"{result['epsilon_charged']:.9f} ε (load {result['load_average']})",
                    flush=True,
                )
    finally:
        if tmp is not None:
            tmp.cleanup()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    with RESULTS.open("a") as fh:
        for result in results:
            line = {
                "bench": "load",
                "at": now,
                "customers": args.customers,
                "query": "count by region (10 groups), a new ε each time",
                **result,
                "machine": machine,
            }
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
