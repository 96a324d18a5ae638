"""Insight Gateway: joint differentially private insight over partners' customer tables.

The public surface is small on purpose: build the ASGI app from settings, or run the CLI.
"""

from gateway.version import __version__

__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> object:
    # Lazy, so that importing the package (e.g. for the version) stays cheap.
    if name == "create_app":
        from gateway.api.app import create_app

        return create_app
    if name == "Settings":
        from gateway.config import Settings

        return Settings
    raise AttributeError(name)
