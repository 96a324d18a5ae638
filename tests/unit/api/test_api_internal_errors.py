"""An unexpected exception answers a generic 500 and logs nothing but its type."""

from __future__ import annotations

import logging

import anyio
import httpx
import pytest
from fastapi import FastAPI

from gateway.api.errors import install_error_handlers


def test_internal_error_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("customer C00012345 spent 812.50")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom")

    with caplog.at_level(logging.DEBUG):
        response = anyio.run(call)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "C00012345" not in caplog.text and "812.50" not in caplog.text
    assert "ValueError" in caplog.text
