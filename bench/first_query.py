"""Benchmark: demo seeding time and the latency of the demo's first query.

Starts from an empty data directory, seeds the demo (200k customers per partner by default),
then times, through the real ASGI app:
  * the first query after start-up (cold: decrypts both datasets),
  * the same plan with new ε values (warm: decrypted tables cached in memory),
  * a replay (stored release, no noise, no budget).
Appends one JSON line with the figures and machine info to bench/results/first_query.jsonl.

Usage: python bench/first_query.py [--customers N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.api.app import create_app  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.demo.seed import COLLABORATION, FIRST_PLAN, seed_demo  # noqa: E402
from gateway.service.context import open_services  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), demo=True)
        t0 = time.perf_counter()
        services = open_services(settings)
        keys = seed_demo(services, args.customers, progress=lambda _: None)
        seed_s = time.perf_counter() - t0
        services.close()

        services = open_services(settings)  # a fresh start: nothing decrypted yet
        app = create_app(services=services)
        url = f"/v1/collaborations/{COLLABORATION}/queries"
        headers = {"Authorization": f"Bearer {keys['acme']['analyst']}"}

        async def run() -> dict[str, object]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                t = time.perf_counter()
                r = await client.post(url, json=FIRST_PLAN, headers=headers)
                cold = time.perf_counter() - t
                assert r.status_code == 200, r.text
                warm = []
                for i in range(args.repeats):
                    body = {**FIRST_PLAN, "epsilon": 0.01 + i * 0.001}
                    t = time.perf_counter()
                    r = await client.post(url, json=body, headers=headers)
                    warm.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                t = time.perf_counter()
                r = await client.post(url, json=FIRST_PLAN, headers=headers)
                replay = time.perf_counter() - t
                assert r.json()["replay"] is True
                return {"cold_ms": cold * 1e3, "warm_ms": warm, "replay_ms": replay * 1e3}

        timings = anyio.run(run)
        services.close()

    warm_ms = [w * 1e3 for w in timings["warm_ms"]]  # type: ignore[union-attr]
    result = {
        "bench": "first_query",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers_per_partner": args.customers,
        "seed_s": round(seed_s, 2),
        "first_query_cold_ms": round(float(timings["cold_ms"]), 1),  # type: ignore[arg-type]
        "warm_query_median_ms": round(statistics.median(warm_ms), 1),
        "warm_query_max_ms": round(max(warm_ms), 1),
        "replay_ms": round(float(timings["replay_ms"]), 1),  # type: ignore[arg-type]
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    out = ROOT / "bench" / "results" / "first_query.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
