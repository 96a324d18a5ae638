"""Fakes at the network edge for the SDK tests: a recording gateway behind httpx.MockTransport."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from clients import AsyncGatewayClient, GatewayClient

BASE_URL = "http://gateway.test"
API_KEY = "ig_test_analyst_key"

RELEASE_JSON: dict[str, Any] = {
    "query_id": "q-123",
    "replay": False,
    "epsilon_spent": 0.5,
    "policy_version": 3,
    "budget": {"epsilon_total": 8.0, "epsilon_spent": 2.5, "epsilon_left": 5.5},
    "group_by": ["region"],
    "rows": [
        {
            "region": "north",
            "customers": {"value": 1234, "ci95": [1222, 1246]},
            "avg_spend": {"value": 81.4, "ci95": [79.9, 82.9]},
        },
        {"region": "south", "customers": None, "avg_spend": None, "suppressed": True},
    ],
}


@dataclass
class Recorded:
    """One request as the gateway saw it, with its body split into the chunks that arrived."""

    request: httpx.Request
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        import json

        return json.loads(self.body)


Reply = Callable[[httpx.Request], httpx.Response]


class FakeGateway(httpx.MockTransport):
    """A MockTransport that records every request, chunk by chunk, before answering.

    httpx.MockTransport reads a streamed body whole before calling the handler, so the chunks
    are collected here first; the handler then sees the ordinary, fully read request.
    """

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.calls: list[Recorded] = []
        self.reply: Reply = lambda request: httpx.Response(200, json={"ok": True})

    def _answer(self, request: httpx.Request) -> httpx.Response:
        return self.reply(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [bytes(c) for c in request.stream]  # type: ignore[union-attr]
        self.calls.append(Recorded(request, chunks))
        request.stream = httpx.ByteStream(b"".join(chunks))
        return super().handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [bytes(c) async for c in request.stream]  # type: ignore[union-attr]
        self.calls.append(Recorded(request, chunks))
        request.stream = httpx.ByteStream(b"".join(chunks))
        return await super().handle_async_request(request)

    @property
    def last(self) -> Recorded:
        return self.calls[-1]


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(fake: FakeGateway) -> Iterator[GatewayClient]:
    with GatewayClient(BASE_URL, API_KEY, transport=fake) as gw:
        yield gw


@pytest.fixture
def make_async_client(fake: FakeGateway) -> Callable[[], AsyncGatewayClient]:
    return lambda: AsyncGatewayClient(BASE_URL, API_KEY, transport=fake)


@pytest.fixture
def release_json() -> dict[str, Any]:
    return copy.deepcopy(RELEASE_JSON)


@pytest.fixture
def uninstall(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``uninstall("pandas")``: for the rest of the test, importing it fails as if absent."""

    def hide(package: str) -> None:
        real_import = builtins.__import__

        def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == package or name.startswith(f"{package}."):
                raise ImportError(f"No module named {package!r}")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", refuse)

    return hide
