"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api.errors import install_error_handlers
from gateway.api.routes import router
from gateway.config import Settings
from gateway.service.context import Services, open_services
from gateway.version import __version__
from gateway.web import console_router

DESCRIPTION = (
    "Joint aggregate queries over partners' customer tables with differential privacy. "
    "No endpoint returns a row, an exact aggregate or a customer key."
)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app; pass ``services`` to share an already opened store (tests, demo seed).

    Example:
        >>> app = create_app(Settings(data_dir=Path("var"), demo=True))
    """
    if services is None:
        services = open_services(settings or Settings())
    opened = services

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        opened.close()

    app = FastAPI(
        title="Insight Gateway", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(console_router)  # the web console at /console/
    return app
