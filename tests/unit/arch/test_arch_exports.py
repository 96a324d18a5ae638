"""The public surface changes only on purpose."""

from __future__ import annotations

import clients
import gateway


def test_gateway_exports() -> None:
    assert sorted(gateway.__all__) == ["Settings", "__version__", "create_app"]
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_clients_exports_are_importable() -> None:
    for name in clients.__all__:
        assert getattr(clients, name) is not None
