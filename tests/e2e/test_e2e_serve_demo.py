"""``insightgw serve --demo``: the banner on stdout, demo-keys.json, and the printed first query."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from clients import GatewayClient
from gateway.demo.seed import COLLABORATION, FIRST_PLAN

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = {"analyst", "compliance", "contributor"}


def _section(stdout: str, title: str) -> list[str]:
    """The indented lines printed under ``title`` up to the next blank line."""
    lines = stdout.splitlines()
    start = lines.index(title) + 1
    section: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        section.append(line)
    return section


def test_banner_prints_the_keys_and_a_first_query(gateway: Any, keys: dict[str, Any]) -> None:
    out = gateway.stdout()
    assert "Insight Gateway demo is ready." in out
    for secret in (
        keys["admin"],
        keys["acme"]["analyst"],
        keys["acme"]["compliance"],
        keys["bigmart"]["contributor"],
    ):
        assert secret in out
    assert "First query (curl):" in out
    assert "First query (Python):" in out
    assert f"{gateway.url}/v1/collaborations/{COLLABORATION}/queries" in out
    assert f"Authorization: Bearer {keys['acme']['analyst']}" in out
    assert f"GatewayClient({gateway.url!r}, {keys['acme']['analyst']!r})" in out


def test_banner_curl_body_is_the_first_plan(gateway: Any) -> None:
    curl = " ".join(_section(gateway.stdout(), "First query (curl):"))
    match = re.search(r"-d '(\{.*\})'", curl)
    assert match is not None, curl
    assert json.loads(match.group(1)) == FIRST_PLAN


def test_demo_keys_file_has_the_documented_shape_and_mode(
    gateway: Any, keys: dict[str, Any]
) -> None:
    path = gateway.data_dir / "demo-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(keys) == {"admin", "acme", "bigmart", "shopco"}  # shopco: acme-retail-network
    assert isinstance(keys["admin"], str) and keys["admin"]
    secrets = [keys["admin"]]
    for org in ("acme", "bigmart", "shopco"):
        assert isinstance(keys[org], dict)
        assert set(keys[org]) == ROLES
        for role in ROLES:
            assert isinstance(keys[org][role], str) and keys[org][role]
            secrets.append(keys[org][role])
    assert len(set(secrets)) == len(secrets)


def test_every_demo_key_authenticates_as_its_org_and_role(
    gateway: Any, keys: dict[str, Any]
) -> None:
    with GatewayClient(gateway.url, keys["admin"]) as gw:
        assert gw.me()["role"] == "admin"
    for org in ("acme", "bigmart", "shopco"):
        for role in ROLES:
            with GatewayClient(gateway.url, keys[org][role]) as gw:
                me = gw.me()
            assert (me["org"], me["role"]) == (org, role)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_printed_curl_command_runs(gateway: Any) -> None:
    command = "\n".join(_section(gateway.stdout(), "First query (curl):"))
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    release = json.loads(result.stdout)
    assert release["group_by"] == ["region", "segment"]
    assert len(release["rows"]) == 16


def test_printed_python_snippet_runs(gateway: Any) -> None:
    snippet = textwrap.dedent("\n".join(_section(gateway.stdout(), "First query (Python):")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for region in ("north", "south", "east", "west"):
        assert region in result.stdout
