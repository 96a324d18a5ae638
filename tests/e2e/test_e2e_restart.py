"""Stopping and starting ``serve --demo`` on the same data directory reuses its state."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients import GatewayClient, Release
from gateway.demo.seed import COLLABORATION, FIRST_PLAN

pytestmark = pytest.mark.e2e

C = COLLABORATION


@dataclass(frozen=True)
class Restart:
    """What the first run left behind and the second run that followed it."""

    first: Any
    second: Any
    keys_text: str
    release: Release
    budget: dict[str, Any]
    first_exit_code: int


@pytest.fixture(scope="module")
def restart(launcher: Any) -> Restart:
    first = launcher.start()
    keys = first.keys()
    keys_text = (first.data_dir / "demo-keys.json").read_text()
    with GatewayClient(first.url, keys["acme"]["analyst"]) as gw:
        release = gw.query(C, plan=FIRST_PLAN["plan"], epsilon=FIRST_PLAN["epsilon"])
        [budget] = gw.budget(C)
    exit_code = first.stop()
    second = launcher.start(first.data_dir)
    return Restart(first, second, keys_text, release, budget, exit_code)


def test_first_run_shuts_down_gracefully_on_sigterm(restart: Restart) -> None:
    # uvicorn re-raises the signal it caught once shutdown is complete, so the exit status
    # is "killed by SIGTERM"; what matters is that the lifespan shutdown ran.
    assert restart.first_exit_code in (0, -signal.SIGTERM), restart.first.output()
    assert "Application shutdown complete." in restart.first.stderr()
    assert "Traceback" not in restart.first.stderr()
    assert "reusing" not in restart.first.stdout()


def test_second_run_reuses_the_seeded_state(restart: Restart) -> None:
    out = restart.second.stdout()
    assert "reusing" in out
    assert "creating organisations" not in out
    assert "Insight Gateway demo is ready." in out
    assert (restart.second.data_dir / "demo-keys.json").read_text() == restart.keys_text


def test_same_keys_work_after_restart(restart: Restart) -> None:
    keys = restart.second.keys()
    for org in ("acme", "bigmart"):
        for role in ("analyst", "compliance", "contributor"):
            with GatewayClient(restart.second.url, keys[org][role]) as gw:
                assert gw.me()["org"] == org
            assert keys[org][role] in restart.keys_text
    with GatewayClient(restart.second.url, keys["admin"]) as gw:
        assert gw.me()["role"] == "admin"


def test_earlier_query_replays_at_no_cost_after_restart(restart: Restart) -> None:
    keys = restart.second.keys()
    with GatewayClient(restart.second.url, keys["acme"]["analyst"]) as gw:
        again = gw.query(C, plan=FIRST_PLAN["plan"], epsilon=FIRST_PLAN["epsilon"])
        [budget] = gw.budget(C)
    assert again.replay is True
    assert again.epsilon_spent == 0
    assert again.query_id == restart.release.query_id
    assert again.rows == restart.release.rows
    assert budget["epsilon_spent"] == restart.budget["epsilon_spent"]


def test_audit_chain_still_verifies_after_restart(restart: Restart) -> None:
    keys = restart.second.keys()
    with GatewayClient(restart.second.url, keys["acme"]["compliance"]) as gw:
        verdict = gw.verify_audit(C)
    assert verdict["ok"] is True


def test_lost_keys_file_is_reported_without_a_traceback(run_cli: Any, tmp_path: Path) -> None:
    """A demo whose keys file is gone (an interrupted first start) cannot be reused."""
    data_dir = tmp_path / "var"
    seeded = run_cli("demo", "--data-dir", str(data_dir))
    assert seeded.returncode == 0, seeded.stderr
    assert "Insight Gateway demo is ready." in seeded.stdout
    (data_dir / "demo-keys.json").unlink()

    result = run_cli("serve", "--demo", "--port", "1", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert "demo-keys.json is missing" in result.stderr
    assert "Traceback" not in result.stderr
