"""``insightgw admin …`` against a running gateway, and the offline ``admin bootstrap``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients import GatewayClient

pytestmark = pytest.mark.e2e

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.fixture(scope="module")
def remote(gateway: Any, keys: dict[str, Any]) -> list[str]:
    """The options that point a remote admin command at this module's gateway as admin."""
    return ["--url", gateway.url, "--key", keys["admin"]]


@pytest.fixture(scope="module")
def dealer_org(run_cli: RunCli, remote: list[str]) -> subprocess.CompletedProcess[str]:
    """``admin create-org dealer-x``, run once for the module (the org exists afterwards)."""
    return run_cli(
        "admin", "create-org", "dealer-x", "--name", "Dealer X", "--kind", "partner", *remote
    )


def test_create_org_prints_the_organisation(
    dealer_org: subprocess.CompletedProcess[str],
) -> None:
    assert dealer_org.returncode == 0, dealer_org.stderr
    assert json.loads(dealer_org.stdout) == {
        "id": "dealer-x",
        "name": "Dealer X",
        "kind": "partner",
    }


def test_create_key_prints_a_working_secret_once(
    run_cli: RunCli,
    remote: list[str],
    gateway: Any,
    dealer_org: subprocess.CompletedProcess[str],
) -> None:
    result = run_cli("admin", "create-key", "dealer-x", "--role", "analyst", *remote)
    assert result.returncode == 0, result.stderr
    key = json.loads(result.stdout)
    assert (key["org"], key["role"]) == ("dealer-x", "analyst")
    assert key["key_id"]
    secret = key["secret"]
    assert result.stdout.count(secret) == 1
    assert secret not in result.stderr
    with GatewayClient(gateway.url, secret) as gw:
        me = gw.me()
    assert (me["org"], me["role"]) == ("dealer-x", "analyst")


def test_create_collaboration_with_members(
    run_cli: RunCli, remote: list[str], dealer_org: subprocess.CompletedProcess[str]
) -> None:
    result = run_cli(
        "admin",
        "create-collaboration",
        "acme-dealer-x",
        "--name",
        "ACME x Dealer X",
        "--members",
        "acme, dealer-x",
        *remote,
    )
    assert result.returncode == 0, result.stderr
    collaboration = json.loads(result.stdout)
    assert collaboration["id"] == "acme-dealer-x"
    assert collaboration["name"] == "ACME x Dealer X"
    assert sorted(collaboration["members"]) == ["acme", "dealer-x"]


def test_non_admin_key_gets_a_clean_error(
    run_cli: RunCli, gateway: Any, keys: dict[str, Any]
) -> None:
    result = run_cli(
        "admin", "create-org", "dealer-y", "--name", "Dealer Y", "--kind", "partner",
        "--url", gateway.url, "--key", keys["acme"]["analyst"],
    )  # fmt: skip
    assert result.returncode == 4  # forbidden (403): see `insightgw --help`
    assert result.stderr.startswith("error: forbidden (403):"), result.stderr
    assert result.stdout == ""
    _assert_no_traceback(result)


def test_duplicate_org_gets_a_clean_conflict(
    run_cli: RunCli, remote: list[str], dealer_org: subprocess.CompletedProcess[str]
) -> None:
    result = run_cli(
        "admin", "create-org", "dealer-x", "--name", "Dealer X", "--kind", "partner", *remote
    )
    assert result.returncode == 8  # conflict (409)
    assert result.stderr.startswith("error: conflict (409):"), result.stderr
    _assert_no_traceback(result)


def test_unreachable_gateway_gets_a_clean_error(run_cli: RunCli, keys: dict[str, Any]) -> None:
    url = "http://127.0.0.1:1"  # nothing listens on port 1
    result = run_cli(
        "admin", "create-org", "dealer-z", "--name", "Dealer Z", "--kind", "partner",
        "--url", url, "--key", keys["admin"], "--retries", "0",
    )  # fmt: skip
    assert result.returncode == 9  # unreachable
    assert "cannot reach the gateway" in result.stderr
    assert url in result.stderr
    _assert_no_traceback(result)


def test_bootstrap_with_a_master_key_issues_a_working_admin_key(
    run_cli: RunCli, launcher: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh"
    master = {"GATEWAY_MASTER_KEY": _master_key()}
    result = run_cli("admin", "bootstrap", "--data-dir", str(data_dir), env=master)
    assert result.returncode == 0, result.stderr
    key = json.loads(result.stdout)
    assert (key["org"], key["role"]) == ("operator", "admin")
    assert "shown once" in result.stderr

    again = run_cli("admin", "bootstrap", "--data-dir", str(data_dir), env=master)
    assert again.returncode == 1
    assert "--force" in again.stderr
    _assert_no_traceback(again)

    server = launcher.start(data_dir, demo=False, env=master)
    try:
        with GatewayClient(server.url, key["secret"]) as gw:
            me = gw.me()
        assert (me["org"], me["role"]) == ("operator", "admin")
    finally:
        server.stop()


def test_bootstrap_without_a_master_key_fails_cleanly(run_cli: RunCli, tmp_path: Path) -> None:
    data_dir = tmp_path / "no-key"
    result = run_cli("admin", "bootstrap", "--data-dir", str(data_dir))
    assert result.returncode != 0
    assert "no master key" in result.stderr
    assert result.stdout == ""
    _assert_no_traceback(result)
    assert not (data_dir / "catalog.duckdb").exists()
