"""SDK retries against a real gateway behind a real HTTP proxy on 127.0.0.1.

The proxy forwards every request to the module's ``insightgw serve --demo`` except those it is
told to refuse itself (as a load balancer or rate limiter would, before the gateway sees
them). The budget is read from the gateway directly, so a retried query that was charged
twice, or a refusal that was charged at all, shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from clients import BudgetExceeded, GatewayClient, RetryPolicy, ServerError
from gateway.demo.seed import COLLABORATION

pytestmark = pytest.mark.e2e

C = COLLABORATION
QUERIES = f"/v1/collaborations/{C}/queries"
QUICK = RetryPolicy(backoff=0.05)  # the default rule, with short waits
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Refusal:
    """The proxy's own answer to the next request for ``path``."""

    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "unavailable"


@dataclass
class Proxy:
    """What the proxy saw and did; ``refusals`` are used up in order, one request each."""

    upstream: str
    refusals: list[Refusal] = field(default_factory=list)
    add_headers: dict[int, dict[str, str]] = field(default_factory=dict)
    seen: list[tuple[str, str, bool]] = field(default_factory=list)  # method, path, forwarded
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_to(self, path: str) -> list[bool]:
        """For each request to ``path``: was it forwarded to the gateway?"""
        return [forwarded for _, p, forwarded in self.seen if p == path]


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            with proxy.lock:
                refusal = next((r for r in proxy.refusals if r.path == path), None)
                if refusal is not None:
                    proxy.refusals.remove(refusal)
                proxy.seen.append((self.command, path, refusal is None))
            if refusal is not None:
                payload = httpx.Response(
                    refusal.status, json={"error": {"code": refusal.code, "message": "busy"}}
                ).content
                self._send(refusal.status, refusal.headers, payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = httpx.request(
                self.command, proxy.upstream + self.path, headers=headers, content=body
            )
            extra = proxy.add_headers.get(answer.status_code, {})
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            self._send(answer.status_code, {**kept, **extra}, answer.content)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def proxy(gateway: Any) -> Iterator[tuple[Proxy, str]]:
    state = Proxy(gateway.url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _spent(gateway: Any, keys: dict[str, Any], org: str) -> float:
    with GatewayClient(gateway.url, keys[org]["analyst"]) as direct:
        [entry] = direct.budget(C)
        spent: float = entry["epsilon_spent"]
        return spent


def _count_by(column: str) -> dict[str, Any]:
    return {
        "from": "bigmart.loyalty",
        "group_by": [column],
        "aggregates": [{"fn": "count", "as": "customers"}],
    }


def test_a_query_refused_before_the_gateway_is_retried_and_charged_once(
    gateway: Any, keys: dict[str, Any], proxy: tuple[Proxy, str]
) -> None:
    state, url = proxy
    state.refusals = [
        Refusal(QUERIES, 503, {"Retry-After": "0"}),
        Refusal(QUERIES, 429, {"Retry-After": "0"}, code="rate_limited"),
    ]
    before = _spent(gateway, keys, "acme")
    with GatewayClient(url, keys["acme"]["analyst"], retry=QUICK) as gw:
        release = gw.query(C, plan=_count_by("region"), epsilon=0.3)
    assert release.replay is False and release.epsilon_spent == pytest.approx(0.3)
    assert state.requests_to(QUERIES) == [False, False, True]
    assert _spent(gateway, keys, "acme") - before == pytest.approx(0.3, abs=1e-12)


def test_a_bare_503_on_a_query_is_not_retried_and_nothing_is_spent(
    gateway: Any, keys: dict[str, Any], proxy: tuple[Proxy, str]
) -> None:
    state, url = proxy
    state.refusals = [Refusal(QUERIES, 503)]
    before = _spent(gateway, keys, "acme")
    with GatewayClient(url, keys["acme"]["analyst"]) as gw, pytest.raises(ServerError) as raised:
        gw.query(C, plan=_count_by("channel"), epsilon=0.2)
    assert raised.value.status == 503
    assert raised.value.code == "unavailable"
    assert state.requests_to(QUERIES) == [False]
    assert _spent(gateway, keys, "acme") == before


def test_reads_are_retried_through_503s(
    gateway: Any, keys: dict[str, Any], proxy: tuple[Proxy, str]
) -> None:
    state, url = proxy
    budget = f"/v1/collaborations/{C}/budget"
    state.refusals = [Refusal(budget, 503), Refusal(budget, 503)]
    with GatewayClient(url, keys["acme"]["analyst"], retry=QUICK) as gw:
        [entry] = gw.budget(C)
    assert entry["org"] == "acme"
    assert state.requests_to(budget) == [False, False, True]


def test_budget_exceeded_is_never_retried(
    gateway: Any, keys: dict[str, Any], proxy: tuple[Proxy, str]
) -> None:
    state, url = proxy
    drain = [
        _count_by("region"),
        _count_by("channel"),
        {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "customers"}]},
        {**_count_by("region"), "aggregates": [{"fn": "sum", "column": "visits_90d", "as": "v"}]},
    ]
    with GatewayClient(gateway.url, keys["bigmart"]["analyst"]) as direct:
        for plan in drain:  # 4 x ε 1.0: BigMart's whole monthly budget
            direct.query(C, plan=plan, epsilon=1.0)
        [entry] = direct.budget(C)
    assert entry["epsilon_left"] == 0.0
    spent = _spent(gateway, keys, "bigmart")
    # Even when told to come back later, a budget refusal is final for the SDK.
    state.add_headers = {429: {"Retry-After": "0"}}
    with (
        GatewayClient(url, keys["bigmart"]["analyst"]) as gw,
        pytest.raises(BudgetExceeded) as raised,
    ):
        gw.query(C, plan=_count_by("channel"), epsilon=0.5)  # not asked before: no replay
    assert raised.value.status == 429
    assert raised.value.code == "budget_exceeded"
    assert state.requests_to(QUERIES) == [True]
    assert _spent(gateway, keys, "bigmart") == spent
