"""Retries: read-only requests back off on 503, rate limits and network failures; a query is
sent again only when the gateway certainly did not act on it, and never after budget_exceeded.

The gateway is outside the SDK here: httpx.MockTransport answers from a script, and the waits
are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from clients import (
    AsyncGatewayClient,
    BudgetExceeded,
    GatewayClient,
    GatewayError,
    RetryPolicy,
    ServerError,
)
from clients import retry as retry_module

C = "acme-bigmart-cx"
PLAN = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "customers"}]}
RELEASE = {
    "query_id": "q-1",
    "replay": False,
    "epsilon_spent": 0.5,
    "policy_version": 1,
    "budget": {},
    "group_by": [],
    "rows": [{"customers": {"value": 100, "ci95": [88, 112]}}],
}
Step = httpx.Response | Exception


def _error(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": code, "message": "try later"}}
    return httpx.Response(status, json=body, headers=headers)


UNAVAILABLE = _error(503, "unavailable")
UNAVAILABLE_RETRY_AFTER = _error(503, "unavailable", "2")
RATE_LIMITED = _error(429, "rate_limited")
RATE_LIMITED_RETRY_AFTER = _error(429, "rate_limited", "1")
OVER_BUDGET = _error(429, "budget_exceeded", "1")
INTERNAL = _error(500, "internal_error")
OK_JSON = httpx.Response(200, json={"org": "acme", "role": "analyst"})
OK_RELEASE = httpx.Response(200, json=RELEASE)


class ScriptedGateway:
    """Answers each request with the next step of a script (a response, or a raised error)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step.status_code, headers=step.headers, content=step.content)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the clients wait before each retry, recorded instead of slept."""
    recorded: list[float] = []

    async def apause(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(retry_module, "pause", recorded.append)
    monkeypatch.setattr(retry_module, "apause", apause)
    return recorded


def _client(gateway: ScriptedGateway, retry: RetryPolicy | None = None) -> GatewayClient:
    return GatewayClient(
        "http://gateway.test", "k", transport=httpx.MockTransport(gateway), retry=retry
    )


@pytest.fixture
def script() -> Iterator[Callable[..., tuple[ScriptedGateway, GatewayClient]]]:
    made: list[GatewayClient] = []

    def make(
        *steps: Step, retry: RetryPolicy | None = None
    ) -> tuple[ScriptedGateway, GatewayClient]:
        gateway = ScriptedGateway(list(steps))
        made.append(_client(gateway, retry))
        return gateway, made[-1]

    yield make
    for client in made:
        client.close()


def _connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def _read_timeout() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("no answer in time")


# Read-only requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first", [UNAVAILABLE, UNAVAILABLE_RETRY_AFTER, RATE_LIMITED, RATE_LIMITED_RETRY_AFTER]
)
def test_a_get_is_retried_after_503_or_a_rate_limit(
    script: Any, waits: list[float], first: httpx.Response
) -> None:
    gateway, gw = script(first, OK_JSON)
    assert gw.me() == {"org": "acme", "role": "analyst"}
    assert len(gateway.requests) == 2
    assert len(waits) == 1


@pytest.mark.parametrize("failure", [_connect_error, _read_timeout])
def test_a_get_is_retried_after_any_network_failure(
    script: Any, waits: list[float], failure: Callable[[], Exception]
) -> None:
    gateway, gw = script(failure(), OK_JSON)
    assert gw.me()["org"] == "acme"
    assert len(gateway.requests) == 2


def test_a_request_that_cannot_be_sent_is_not_retried(script: Any, waits: list[float]) -> None:
    gateway, gw = script(httpx.UnsupportedProtocol("no such scheme"), OK_JSON)
    with pytest.raises(httpx.UnsupportedProtocol):
        gw.me()
    assert len(gateway.requests) == 1
    assert waits == []


def test_explain_spends_nothing_so_it_is_retried_like_a_get(
    script: Any, waits: list[float]
) -> None:
    explanation = httpx.Response(200, json={"epsilon": 0.5})
    gateway, gw = script(UNAVAILABLE, _read_timeout(), explanation)
    assert gw.explain(C, plan=PLAN, epsilon=0.5).epsilon == 0.5
    assert [r.url.path for r in gateway.requests] == [f"/v1/collaborations/{C}/queries/explain"] * 3


def test_retries_stop_after_max_retries_with_the_last_error(
    script: Any, waits: list[float]
) -> None:
    gateway, gw = script(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    with pytest.raises(ServerError) as raised:
        gw.me()
    assert raised.value.status == 503
    assert len(gateway.requests) == 4  # the first attempt and 3 retries
    # Full jitter within a doubling window: 0.5 s, 1 s, 2 s.
    assert len(waits) == 3
    assert all(0.0 <= w <= 0.5 * 2**n for n, w in enumerate(waits))


def test_a_network_failure_that_outlasts_the_retries_is_raised(
    script: Any, waits: list[float]
) -> None:
    gateway, gw = script(*[_connect_error() for _ in range(3)], retry=RetryPolicy(max_retries=2))
    with pytest.raises(httpx.ConnectError):
        gw.health()
    assert len(gateway.requests) == 3


def test_max_retries_zero_turns_retrying_off(script: Any, waits: list[float]) -> None:
    gateway, gw = script(UNAVAILABLE, retry=RetryPolicy(max_retries=0))
    with pytest.raises(ServerError):
        gw.me()
    assert len(gateway.requests) == 1
    assert waits == []


def test_retry_after_is_honoured(script: Any, waits: list[float]) -> None:
    _, gw = script(UNAVAILABLE_RETRY_AFTER, OK_JSON)
    gw.me()
    assert waits == [2.0]  # Retry-After (2 s) exceeds the first backoff window (0.5 s)


def test_a_retry_after_longer_than_max_delay_is_not_waited_for(
    script: Any, waits: list[float]
) -> None:
    gateway, gw = script(_error(503, "unavailable", "120"), OK_JSON)
    with pytest.raises(ServerError):
        gw.me()
    assert len(gateway.requests) == 1
    assert waits == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500, 502])
def test_other_errors_are_never_retried(script: Any, waits: list[float], status: int) -> None:
    gateway, gw = script(_error(status, "some_error", "1"))
    with pytest.raises(GatewayError):
        gw.me()
    assert len(gateway.requests) == 1


# Queries: the budget decides -----------------------------------------------------------------


def test_budget_exceeded_is_never_retried_even_with_retry_after(
    script: Any, waits: list[float]
) -> None:
    gateway, gw = script(OVER_BUDGET, OK_RELEASE)
    with pytest.raises(BudgetExceeded):
        gw.query(C, plan=PLAN, epsilon=0.5)
    assert len(gateway.requests) == 1
    assert waits == []


@pytest.mark.parametrize("first", [UNAVAILABLE_RETRY_AFTER, RATE_LIMITED_RETRY_AFTER])
def test_a_query_refused_with_retry_after_is_sent_again(
    script: Any, waits: list[float], first: httpx.Response
) -> None:
    gateway, gw = script(first, OK_RELEASE)
    release = gw.query(C, plan=PLAN, epsilon=0.5)
    assert release.query_id == "q-1"
    assert [r.content for r in gateway.requests] == [gateway.requests[0].content] * 2
    assert waits == [float(first.headers["Retry-After"])]


def test_a_query_is_sent_again_when_the_connection_was_never_made(
    script: Any, waits: list[float]
) -> None:
    gateway, gw = script(_connect_error(), httpx.ConnectTimeout("slow"), OK_RELEASE)
    assert gw.query(C, sql="SELECT COUNT(*) AS n FROM bigmart.loyalty", epsilon=0.5).rows
    assert len(gateway.requests) == 3


@pytest.mark.parametrize(
    "first",
    [UNAVAILABLE, RATE_LIMITED, INTERNAL, _error(502, "bad_gateway"), _error(504, "timeout")],
    ids=["503-bare", "429-bare", "500", "502", "504"],
)
def test_a_query_that_may_have_spent_is_not_sent_again(
    script: Any, waits: list[float], first: httpx.Response
) -> None:
    gateway, gw = script(first, OK_RELEASE)
    with pytest.raises(GatewayError) as raised:
        gw.query(C, plan=PLAN, epsilon=0.5)
    assert raised.value.status == first.status_code
    assert len(gateway.requests) == 1
    assert waits == []


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.ReadTimeout("no answer"),
        lambda: httpx.WriteTimeout("stuck"),
        lambda: httpx.RemoteProtocolError("server disconnected"),
        lambda: httpx.ReadError("connection reset"),
    ],
    ids=["read-timeout", "write-timeout", "disconnected", "reset"],
)
def test_a_query_is_not_sent_again_after_the_request_may_have_arrived(
    script: Any, waits: list[float], failure: Callable[[], Exception]
) -> None:
    gateway, gw = script(failure(), OK_RELEASE)
    with pytest.raises(httpx.TransportError):
        gw.query(C, plan=PLAN, epsilon=0.5)
    assert len(gateway.requests) == 1
    assert waits == []


def test_other_writes_follow_the_query_rule(script: Any, waits: list[float]) -> None:
    gateway, gw = script(UNAVAILABLE, _read_timeout())
    with pytest.raises(ServerError):
        gw.create_key("bigmart", "analyst")
    with pytest.raises(httpx.ReadTimeout):
        gw.approve_policy(C, 2)
    assert len(gateway.requests) == 2
    assert waits == []


def test_an_upload_is_streamed_again_in_full(
    script: Any, waits: list[float], tmp_path: Any
) -> None:
    path = tmp_path / "loyalty.csv"
    path.write_bytes(b"customer_key,region\n" + b"c-1,north\n" * 20_000)  # several chunks
    stored = httpx.Response(201, json={"version": 2, "rows": 20_000})
    gateway, gw = script(UNAVAILABLE_RETRY_AFTER, stored)
    progress: list[int] = []
    assert gw.upload(C, "loyalty", path, progress=progress.append)["version"] == 2
    assert [r.content for r in gateway.requests] == [path.read_bytes()] * 2
    size = path.stat().st_size
    assert progress.count(size) == 2  # reported from zero again on the retry
    assert progress[-1] == size


# The policy and the header -------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff=1.0, max_delay=5.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(0, retry_after=3.0, rand=lambda: 0.5) == 3.0
    assert policy.delay(10) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"backoff": -0.1},
        {"backoff": float("nan")},
        {"max_delay": float("inf")},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_module.retry_after(httpx.Response(503, headers={"Retry-After": "7"})) == 7.0
    assert retry_module.retry_after(httpx.Response(503, headers={"Retry-After": later}), now) == 30
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert retry_module.retry_after(httpx.Response(503, headers={"Retry-After": past}), now) == 0
    assert retry_module.retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_module.retry_after(httpx.Response(503)) is None


def test_a_429_without_a_json_body_is_a_rate_limit() -> None:
    proxy = httpx.Response(429, text="<html>slow down</html>", headers={"Retry-After": "1"})
    policy = RetryPolicy()
    assert retry_module.after_answer(policy, 0, False, proxy, rand=lambda: 0.0) == 1.0
    assert retry_module.after_answer(policy, 0, False, OVER_BUDGET) is None


# The async client follows the same rule -----------------------------------------------------


def _run_async(gateway: ScriptedGateway, call: Callable[[AsyncGatewayClient], Any]) -> Any:
    async def main() -> Any:
        transport = httpx.MockTransport(gateway)
        async with AsyncGatewayClient("http://gateway.test", "k", transport=transport) as gw:
            return await call(gw)

    return asyncio.run(main())


def test_async_get_and_query_follow_the_rule(waits: list[float]) -> None:
    gateway = ScriptedGateway([UNAVAILABLE, _read_timeout(), OK_JSON])
    assert _run_async(gateway, lambda gw: gw.me())["org"] == "acme"
    assert len(gateway.requests) == 3

    gateway = ScriptedGateway([UNAVAILABLE_RETRY_AFTER, OK_RELEASE])
    release = _run_async(gateway, lambda gw: gw.query(C, plan=PLAN, epsilon=0.5))
    assert release.query_id == "q-1"
    assert waits[-1] == 2.0

    for first in (UNAVAILABLE, OVER_BUDGET, _read_timeout()):
        gateway = ScriptedGateway([first, OK_RELEASE])
        with pytest.raises((GatewayError, httpx.TransportError)):
            _run_async(gateway, lambda gw: gw.query(C, plan=PLAN, epsilon=0.5))
        assert len(gateway.requests) == 1
