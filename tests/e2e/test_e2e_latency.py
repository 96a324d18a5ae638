"""A measurement, not a check: latency of the first query after start-up and of warm ones.

Printed as one JSON line (see it with ``pytest -s``); nothing is asserted about time, since
timings depend on the machine. Recorded benchmarks live in bench/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from clients import GatewayClient
from gateway.demo.seed import COLLABORATION, FIRST_PLAN

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    return result, round((time.perf_counter() - start) * 1000, 1)


def test_measure_first_and_warm_query_latency(gateway: Any, keys: dict[str, Any]) -> None:
    plan, epsilon = FIRST_PLAN["plan"], FIRST_PLAN["epsilon"]
    with GatewayClient(gateway.url, keys["acme"]["analyst"]) as gw:
        first, first_ms = _timed(lambda: gw.query(COLLABORATION, plan=plan, epsilon=epsilon))
        warm, warm_ms = _timed(lambda: gw.query(COLLABORATION, plan=plan, epsilon=0.4))
        replay, replay_ms = _timed(lambda: gw.query(COLLABORATION, plan=plan, epsilon=epsilon))
    assert (first.replay, warm.replay, replay.replay) == (False, False, True)
    print(
        "\n"
        + json.dumps(
            {
                "measurement": "e2e_query_latency_ms",
                "customers_per_partner": 3_000,
                "groups": len(first.rows),
                "first_after_startup": first_ms,
                "warm": warm_ms,
                "replay": replay_ms,
            }
        )
    )
