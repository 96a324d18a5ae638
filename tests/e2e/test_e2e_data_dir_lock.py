"""A second gateway on a data directory in use stops with a clear message, no traceback."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def test_second_gateway_on_same_data_dir_is_refused_cleanly(
    gateway: Any, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_cli("demo", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 2
    assert "another gateway" in result.stderr
    assert "Traceback" not in result.stderr
