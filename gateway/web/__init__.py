"""The web console served at ``/console/``: see :mod:`gateway.web.console`."""

from gateway.web.console import console_router

__all__ = ["console_router"]
