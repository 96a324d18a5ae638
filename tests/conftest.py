"""Shared fixtures: a real store on tmp_path, the real app through httpx.ASGITransport.

``api`` is a small synchronous facade over an ``httpx.AsyncClient`` bound to the ASGI app, so
tests read like a user's calls: ``api.post(path, key=keys["acme"]["analyst"], json=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.demo.seed import seed_demo
from gateway.service.context import Services, open_services

DEMO = "acme-bigmart-cx"


@pytest.fixture(autouse=True)
def _no_user_configuration(tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any) -> None:
    """A developer's own ``INSIGHTGW_*`` settings or config file never reach a test."""
    import os

    for name in list(os.environ):
        if name.startswith("INSIGHTGW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))


class Api:
    """Synchronous calls into the real ASGI app; ``key`` sets the bearer token."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                return await c.request(method, path, headers=headers, **kwargs)

        return anyio.run(call)

    def get(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("GET", path, key, **kw)

    def post(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, key, **kw)

    def put(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, key, **kw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", demo=True, demo_customers=2_000)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = open_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def api(services: Services) -> Api:
    return Api(create_app(services=services))


@pytest.fixture
def demo_keys(services: Services) -> dict[str, Any]:
    """The demo seeded with 2,000 customers per partner; returns demo-keys.json's content."""
    return seed_demo(services, customers=2_000, progress=lambda _: None)
