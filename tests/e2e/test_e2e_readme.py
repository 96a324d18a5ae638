"""README's quickstart blocks, run as written against a served demo: copy-paste must work.

Every fenced block right after a ``<!-- test: shell -->`` or ``<!-- test: python -->`` comment is
run in README order, from a directory laid out like the repository after ``make run`` (``.venv``,
``policies/`` and a demo served from ``./var``). The only change made to a block is the gateway's
address: the demo here listens on a free port rather than 8000. Commands without an address
find it in ``INSIGHTGW_URL``, as a user's would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DEFAULT_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"<!-- test: (shell|python) -->\n```(?:bash|python)\n(.*?)```", re.S)

# What each block must have printed, in README order (a block that fails exits non-zero).
EXPECTED = [
    ("shell", ["bigmart.loyalty (owner bigmart", "cost: ε 0.5", "spent ε 0.5", '"replay": true']),
    ("shell", ['"epsilon_spent":0.5', '"group_by":["region","segment"]']),
    ("python", ["avg_spend", "epsilon_left"]),
    (
        "shell",
        ["uploaded bigmart.loyalty version 2", "version 3", "uploaded acme.survey version 2"],
    ),
    ("shell", ["proposed: pending", "approved: active", "audit chain OK"]),
    ("shell", ['"id": "dealer-north"', '"role": "analyst"', '"id": "acme-dealers"']),
]


def readme_blocks() -> list[tuple[str, str]]:
    return [(kind, code) for kind, code in BLOCK.findall(README.read_text(encoding="utf-8"))]


def test_readme_has_the_tested_blocks() -> None:
    assert [kind for kind, _ in readme_blocks()] == [kind for kind, _ in EXPECTED]


@pytest.fixture(scope="module")
def sandbox(launcher: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory like the repository after ``make run``, with the demo served from ./var."""
    root = tmp_path_factory.mktemp("readme")
    (root / ".venv").symlink_to(REPO_ROOT / ".venv")
    (root / "policies").symlink_to(REPO_ROOT / "policies")
    gateway = launcher.start(root / "var")
    return root, gateway.url


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=lambda i: f"block{i}")
def test_readme_block_runs_as_written(index: int, sandbox: tuple[Path, str]) -> None:
    root, url = sandbox
    kind, code = readme_blocks()[index]
    code = code.replace(DEFAULT_URL, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "INSIGHTGW_"))}
    env.update(
        INSIGHTGW_URL=url,
        XDG_CONFIG_HOME=str(root / "no-config"),
        GATEWAY_DEMO_CUSTOMERS="3000",  # what the served demo holds: demo-files writes the same
        PYTHONPATH=str(REPO_ROOT),
    )
    command = (
        ["bash", "-euo", "pipefail", "-c", code]
        if kind == "shell"
        else [str(root / ".venv" / "bin" / "python"), "-c", code]
    )
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"README block {index} failed:\n{code}\n---\n{output}"
    assert "Traceback" not in output
    for expected in EXPECTED[index][1]:
        assert expected in output, f"README block {index}: {expected!r} not in\n{output}"
    if index == 1:
        release = json.loads(result.stdout)
        assert len(release["rows"]) == 16
