"""A SIGKILLed gateway never leaves a delivered release without a durable charge (issue 5, 4).

Five trials of: queries (each with its own ε, so none is a replay) from a client thread (after
a warm-up query on every other trial), the server SIGKILLed after a random delay, the catalog
read (read-only) with the server dead, then a restart on the same data directory. Every
``query_id`` the client received must be in the ledger. ``bench/crash_budget.py`` runs 200
trials and records the count.
"""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

pytestmark = pytest.mark.e2e

COLLABORATION = "acme-bigmart-cx"
TRIALS = 5
MAX_DELAY = 1.0
ENV = {"GATEWAY_DEMO_CUSTOMERS": "2000", "GATEWAY_LOG_LEVEL": "warning"}
PLAN = {
    "from": "bigmart.loyalty",
    "group_by": ["region"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}


def fire(url: str, key: str, epsilons: Any, stop: threading.Event, answers: list[Any]) -> None:
    """Post queries until the server is gone; keep every answer (a ``query_id`` when 200)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while not stop.is_set():
            body = {"plan": PLAN, "epsilon": next(epsilons)}
            try:
                response = client.post(
                    f"/v1/collaborations/{COLLABORATION}/queries", json=body, timeout=10.0
                )
            except httpx.TransportError:
                return
            ok = response.status_code == 200
            answers.append(response.json()["query_id"] if ok else response)


def ledger_query_ids(catalog: Path) -> set[str]:
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        return {q for (q,) in con.execute("SELECT query_id FROM ledger").fetchall()}
    finally:
        con.close()


def test_sigkill_never_leaves_a_release_uncharged(launcher: Any) -> None:
    rng = random.Random()  # any delay must pass; the bench varies it over 200 trials
    epsilons = (round(0.0005 + n * 1e-8, 12) for n in itertools.count(1))
    server = launcher.start(env=ENV)
    key = server.keys()["acme"]["analyst"]
    all_delivered: set[str] = set()
    for trial in range(TRIALS):
        stop = threading.Event()
        answers: list[Any] = []
        if trial % 2 == 0:  # a warm-up query first: these kills land among warm queries
            warm = httpx.post(
                f"{server.url}/v1/collaborations/{COLLABORATION}/queries",
                json={"plan": PLAN, "epsilon": next(epsilons)},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30.0,
            )
            assert warm.status_code == 200, warm.text
            answers.append(warm.json()["query_id"])
        client = threading.Thread(target=fire, args=(server.url, key, epsilons, stop, answers))
        client.start()
        threading.Event().wait(rng.uniform(0.2, MAX_DELAY))
        server.process.kill()
        server.process.wait(timeout=30)
        stop.set()
        client.join(timeout=30)
        assert not client.is_alive()
        delivered = [a for a in answers if isinstance(a, str)]
        assert len(delivered) == len(answers), [a.text for a in answers if a not in delivered]

        uncharged = set(delivered) - ledger_query_ids(server.data_dir / "catalog.duckdb")
        assert uncharged == set(), (trial, uncharged, server.output())
        all_delivered |= set(delivered)
        server = launcher.start(server.data_dir, env=ENV)

    with httpx.Client(base_url=server.url) as http:  # the restarted gateway still answers
        answer = http.post(
            f"/v1/collaborations/{COLLABORATION}/queries",
            json={"plan": PLAN, "epsilon": 0.01},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert answer.status_code == 200, answer.text
    assert len(all_delivered) >= 3  # at least the warm-up queries
