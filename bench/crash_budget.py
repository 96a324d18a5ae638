"""Benchmark: no release is ever delivered without a durable charge, across SIGKILLs.

Starts ``python -m gateway.cli serve --demo`` (2,000 customers per partner) on 127.0.0.1 in a
temporary data directory, then for each trial: client threads fire queries (each with its own
ε, so none is a replay) at the server, the server is SIGKILLed after a random delay, and, with
the server dead, the catalog is opened read-only to read the ledger. Even trials first send one
warm-up query (it decrypts the datasets), so their kills land among warm queries; odd trials
are also killed during the cold first query. Every ``query_id`` a client actually received in
a 200 answer must have a ledger row: ε is reserved (committed) before noise is drawn, so a
delivered release without one would be privacy loss nobody paid for. The server is then
restarted on the same data directory for the next trial.

Counts per run: ``uncharged_releases`` (delivered, no ledger row; must be 0),
``delivered_releases``, ``charged_undelivered`` (ledger rows whose answer never reached the
client: the safe side), ``other_answers`` (non-200 answers, e.g. ``budget_exceeded``) and the
time to restart. Appends one JSON line to bench/results/crash_budget.jsonl; exits 1 if any
release was uncharged. Every server it starts is killed before it exits.

Usage: python bench/crash_budget.py [--trials 200] [--max-delay 1.0] [--clients 2] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx

ROOT = Path(__file__).resolve().parents[1]
COLLABORATION = "acme-bigmart-cx"
CUSTOMERS = 2_000
START_TIMEOUT = 60.0
PLAN = {
    "from": "bigmart.loyalty",
    "group_by": ["region"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One ``serve --demo`` subprocess; output goes to files, never to an unread pipe."""

    def __init__(self, data_dir: Path, log_dir: Path, n: int) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env |= {"PYTHONPATH": str(ROOT), "GATEWAY_DEMO_CUSTOMERS": str(CUSTOMERS)}
        env["GATEWAY_LOG_LEVEL"] = "warning"  # no access log to write per query
        self.stderr_path = log_dir / f"server{n}.stderr"
        command = [sys.executable, "-m", "gateway.cli", "serve", "--demo", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--data-dir", str(data_dir)]
        with (log_dir / f"server{n}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start:\n{self.stderr_path.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no checkpoint, no flush the gateway could do."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def _warm_up(url: str, key: str, epsilon: float) -> str:
    """One query before a trial's clock starts, so kills land among warm queries too."""
    response = httpx.post(
        f"{url}/v1/collaborations/{COLLABORATION}/queries",
        json={"plan": PLAN, "epsilon": epsilon},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30.0,
    )
    response.raise_for_status()
    query_id: str = response.json()["query_id"]
    return query_id


def _fire(
    url: str, key: str, stop: threading.Event, next_epsilon: Any, out: dict[str, list[str]]
) -> None:
    """Post queries until the server dies or ``stop`` is set; note what was delivered."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while not stop.is_set():
            body = {"plan": PLAN, "epsilon": next_epsilon()}
            try:
                response = client.post(
                    f"/v1/collaborations/{COLLABORATION}/queries", json=body, timeout=10.0
                )
            except httpx.TransportError:
                return
            if response.status_code == 200:
                out["delivered"].append(response.json()["query_id"])
            else:
                out["other"].append(str(response.status_code))


def ledger_query_ids(catalog: Path) -> set[str]:
    """The ledger as it is on disk (the writer is dead; DuckDB replays its WAL on open)."""
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        return {q for (q,) in con.execute("SELECT query_id FROM ledger").fetchall()}
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--max-delay", type=float, default=1.0, help="seconds before SIGKILL")
    parser.add_argument("--clients", type=int, default=2, help="concurrent client threads")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)

    counter = iter(range(1, 10**9))
    counter_lock = threading.Lock()

    def next_epsilon() -> float:
        with counter_lock:
            n = next(counter)
        return round(0.0005 + n * 1e-8, 12)  # distinct, small: 8.0 of budget lasts ~10^4 queries

    totals = dict(uncharged_releases=0, delivered_releases=0, charged_undelivered=0)
    other_answers: dict[str, int] = {}
    restart_s: list[float] = []
    failures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "var"
        server = Server(data_dir, Path(tmp), 0)
        try:
            server.wait_healthy()
            key = json.loads((data_dir / "demo-keys.json").read_text())["acme"]["analyst"]
            ledger_ids_before: set[str] = set()
            for trial in range(1, args.trials + 1):
                stop = threading.Event()
                seen: dict[str, list[str]] = {"delivered": [], "other": []}
                if trial % 2 == 0:  # odd trials also kill during the cold first query
                    seen["delivered"].append(_warm_up(server.url, key, next_epsilon()))
                clients = [
                    threading.Thread(target=_fire, args=(server.url, key, stop, next_epsilon, seen))
                    for _ in range(args.clients)
                ]
                for c in clients:
                    c.start()
                time.sleep(rng.uniform(0.0, args.max_delay))
                server.kill()
                stop.set()
                for c in clients:
                    c.join(timeout=30)
                ledger = ledger_query_ids(data_dir / "catalog.duckdb")
                delivered = set(seen["delivered"])
                uncharged = delivered - ledger
                new_rows = ledger - ledger_ids_before
                totals["uncharged_releases"] += len(uncharged)
                totals["delivered_releases"] += len(delivered)
                totals["charged_undelivered"] += len(new_rows - delivered)
                for code in seen["other"]:
                    other_answers[code] = other_answers.get(code, 0) + 1
                if uncharged:
                    failures.append({"trial": trial, "uncharged": sorted(uncharged)})
                ledger_ids_before = ledger
                print(
                    f"trial {trial}: {len(delivered)} delivered, {len(new_rows)} charged, "
                    f"{len(uncharged)} uncharged",
                    flush=True,
                )
                t = time.perf_counter()
                server = Server(data_dir, Path(tmp), trial)
                server.wait_healthy()
                restart_s.append(time.perf_counter() - t)
        finally:
            server.kill()

    result = {
        "bench": "crash_budget",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials": args.trials,
        "clients": args.clients,
        "max_delay_s": args.max_delay,
        "seed": seed,
        "customers_per_partner": CUSTOMERS,
        **totals,
        "other_answers": other_answers,
        "failures": failures[:20],
        "restart_median_s": round(statistics.median(restart_s), 2) if restart_s else None,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    out = ROOT / "bench" / "results" / "crash_budget.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))
    if totals["uncharged_releases"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
