"""``insightgw policy | audit | budget`` against a real gateway, as a compliance officer would.

The module's gateway is shared, so the tests run as one story, in file order: read the active
policy, propose changes (one only ACME must approve, then ones BigMart must approve, reject or
see withdrawn), then read the audit trail and the budgets that story left behind.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from clients import GatewayClient
from gateway.demo.seed import COLLABORATION, POLICY_FILE

pytestmark = pytest.mark.e2e

RunCli = Callable[..., subprocess.CompletedProcess[str]]
PROPOSED = re.compile(r"policy version (\d+) proposed: (active|pending)")


def _ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def _one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """A failure: the exit code of its kind (``insightgw --help``), one line, no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def remote(gateway: Any) -> list[str]:
    """Point at this module's gateway; the key comes from its demo-keys.json (acme compliance)."""
    return ["--url", gateway.url, "--data-dir", str(gateway.data_dir)]


@pytest.fixture
def active(gateway: Any, keys: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """The active policy document, as data, to edit into a proposal."""

    def read() -> dict[str, Any]:
        with GatewayClient(gateway.url, keys["acme"]["analyst"]) as gw:
            document: dict[str, Any] = gw.policy_document(COLLABORATION)["policy"]
        return document

    return read


def _write(tmp_path: Path, document: dict[str, Any], name: str = "proposal.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def _propose(run_cli: RunCli, remote: list[str], path: str) -> tuple[int, str, str]:
    out = _ok(run_cli("policy", "propose", path, *remote))
    match = PROPOSED.search(out)
    assert match, out
    return int(match.group(1)), match.group(2), out


# Offline validation ------------------------------------------------------------------------


def test_validate_accepts_the_shipped_policies(run_cli: RunCli) -> None:
    shipped = sorted((Path(__file__).parents[2] / "policies").glob("*.yaml"))
    assert len(shipped) >= 2
    for path in [*shipped, POLICY_FILE]:
        out = _ok(run_cli("policy", "validate", str(path)))
        assert f"{path}: OK (collaboration " in out


def test_validate_names_the_rule_and_where(run_cli: RunCli, tmp_path: Path) -> None:
    document = yaml.safe_load(POLICY_FILE.read_text())
    document["datasets"]["bigmart.loyalty"]["columns"]["spend_90d"]["bounds"] = [10, 0]
    out = _ok(run_cli("policy", "validate", _write(tmp_path, document, "reversed.yaml")), code=7)
    assert "reversed.yaml: invalid: datasets.bigmart.loyalty.columns.spend_90d.bounds" in out

    broken = tmp_path / "broken.yaml"
    broken.write_text("collaboration: [x\n  y: :\n")
    out = _ok(run_cli("policy", "validate", str(broken)), code=7)
    assert "broken.yaml: invalid:" in out and "line 2" in out

    error = _one_line_error(run_cli("policy", "validate", str(tmp_path / "missing.yaml")), 2)
    assert "missing.yaml" in error


# Reading the policy ------------------------------------------------------------------------


def test_show_prints_the_active_policy_as_yaml(run_cli: RunCli, remote: list[str]) -> None:
    out = _ok(run_cli("policy", "show", *remote))
    first = out.splitlines()[0]
    assert first.startswith(f"# {COLLABORATION} policy version 1 (active), proposed by acme")
    # The header is made of comments: the output is the policy document itself.
    assert yaml.safe_load(out) == yaml.safe_load(POLICY_FILE.read_text())


def test_versions_lists_the_seeded_version(run_cli: RunCli, remote: list[str]) -> None:
    out = _ok(run_cli("policy", "versions", *remote))
    assert "policy versions" in out
    row = next(line for line in out.splitlines() if " active " in line)
    assert "acme" in row and "bigmart: approved" in row


def test_diff_against_the_active_version(
    run_cli: RunCli, remote: list[str], tmp_path: Path, active: Callable[[], dict[str, Any]]
) -> None:
    same = tmp_path / "same.yaml"
    same.write_text(POLICY_FILE.read_text())
    out = _ok(run_cli("policy", "diff", str(same), *remote))
    assert out.strip() == "no differences from the active version 1"

    document = active()
    document["rules"]["min_group_size"] = 40
    out = _ok(run_cli("policy", "diff", _write(tmp_path, document), *remote))
    assert f"--- {COLLABORATION} v1 (active)" in out
    assert "+rules:" in out or "+  min_group_size: 40" in out
    assert any(line.startswith("-") and "min_group_size" in line for line in out.splitlines())


# Proposing and deciding --------------------------------------------------------------------


def test_a_change_to_acmes_own_dataset_is_active_at_once(
    run_cli: RunCli, remote: list[str], tmp_path: Path, active: Callable[[], dict[str, Any]]
) -> None:
    document = active()
    document["datasets"]["acme.survey"]["columns"]["tenure_months"]["aggregates"] = ["sum"]
    version, status, out = _propose(run_cli, remote, _write(tmp_path, document))
    assert status == "active"
    assert out.splitlines()[1] == "approvals: acme: approved"
    assert "aggregates" in out  # the diff is shown
    shown = _ok(run_cli("policy", "show", *remote))
    assert shown.startswith(f"# {COLLABORATION} policy version {version} (active)")


def test_a_change_to_bigmarts_dataset_waits_for_bigmart(
    run_cli: RunCli,
    remote: list[str],
    tmp_path: Path,
    keys: dict[str, Any],
    active: Callable[[], dict[str, Any]],
) -> None:
    before = active()
    document = active()
    document["datasets"]["bigmart.loyalty"]["columns"]["visits_90d"]["aggregates"] = ["sum"]
    version, status, out = _propose(run_cli, remote, _write(tmp_path, document))
    assert status == "pending"
    assert "approvals: acme: approved, bigmart: waiting" in out
    assert active() == before

    pending = _ok(run_cli("policy", "show", "--version", str(version), *remote))
    assert pending.startswith(f"# {COLLABORATION} policy version {version} (pending)")
    assert "# approvals: acme: approved, bigmart: waiting" in pending
    versions = _ok(run_cli("policy", "versions", *remote))
    assert re.search(rf"\b{version}\b.*pending", versions), versions

    bigmart = ["--key", keys["bigmart"]["compliance"]]
    out = _ok(run_cli("policy", "approve", str(version), *remote, *bigmart))
    assert f"policy version {version} approved: active" in out
    assert "approvals: acme: approved, bigmart: approved" in out
    assert active() == document

    again = _one_line_error(run_cli("policy", "approve", str(version), *remote, *bigmart), 8)
    assert "conflict (409)" in again


def test_bigmart_rejects_a_proposal(
    run_cli: RunCli,
    remote: list[str],
    tmp_path: Path,
    keys: dict[str, Any],
    active: Callable[[], dict[str, Any]],
) -> None:
    before = active()
    document = active()
    document["datasets"]["bigmart.loyalty"]["columns"]["email"] = {"use": "dimension"}
    version, status, _ = _propose(run_cli, remote, _write(tmp_path, document))
    assert status == "pending"
    # --org/--role pick BigMart's compliance key from demo-keys.json.
    out = _ok(run_cli("policy", "reject", str(version), *remote, "--org", "bigmart"))
    assert f"policy version {version} rejected: rejected" in out
    assert active() == before
    shown = _ok(run_cli("policy", "show", "--version", str(version), *remote))
    assert shown.startswith(f"# {COLLABORATION} policy version {version} (rejected)")
    assert "email:" in shown


def test_acme_withdraws_its_proposal(
    run_cli: RunCli, remote: list[str], tmp_path: Path, active: Callable[[], dict[str, Any]]
) -> None:
    before = active()
    document = active()
    document["datasets"]["bigmart.loyalty"]["columns"]["nps_score"]["aggregates"] = ["mean"]
    version, status, _ = _propose(run_cli, remote, _write(tmp_path, document))
    assert status == "pending"
    out = _ok(run_cli("policy", "withdraw", str(version), *remote))
    assert f"policy version {version} withdrawn: withdrawn" in out
    assert active() == before
    versions = _ok(run_cli("policy", "versions", *remote))
    assert re.search(rf"\b{version}\b.*withdrawn", versions), versions
    for status_word in ("superseded", "active", "rejected"):
        assert status_word in versions


def test_an_invalid_proposal_is_a_clean_refusal(
    run_cli: RunCli, remote: list[str], tmp_path: Path, active: Callable[[], dict[str, Any]]
) -> None:
    document = active()
    document["budgets"]["acme"]["epsilon"] = -1
    error = _one_line_error(run_cli("policy", "propose", _write(tmp_path, document), *remote), 7)
    assert "invalid_policy (422)" in error and "budgets.acme" in error


# Audit and budgets -------------------------------------------------------------------------


def test_audit_list_shows_the_policy_story(run_cli: RunCli, remote: list[str]) -> None:
    out = _ok(run_cli("audit", "list", "--limit", "200", *remote))
    for column in ("seq", "at (UTC)", "actor", "action", "summary"):
        assert column in out
    for action in ("policy.proposed", "policy.approved", "policy.rejected", "policy.withdrawn"):
        assert action in out
    assert "acme/compliance" in out and "bigmart/compliance" in out
    assert "acme.survey" in out  # ACME's own upload
    assert "bigmart.loyalty v1" not in out  # BigMart's upload is BigMart's business

    newest = _ok(run_cli("audit", "list", "--limit", "2", *remote))
    rows = [line for line in newest.splitlines() if re.match(r"^\W*\d+\s", line)]
    assert len(rows) == 2, newest
    assert "policy.withdrawn" in newest


def test_bigmart_sees_its_upload_and_not_acmes(
    run_cli: RunCli, remote: list[str], keys: dict[str, Any]
) -> None:
    out = _ok(run_cli("audit", "list", *remote, "--key", keys["bigmart"]["compliance"]))
    assert "dataset.uploaded" in out and "bigmart.loyalty" in out
    assert "acme.survey v1" not in out


def test_audit_verify_over_http(run_cli: RunCli, gateway: Any, keys: dict[str, Any]) -> None:
    # Without --data-dir the gateway at --url checks its own chain (with it: offline).
    key = keys["acme"]["compliance"]
    out = _ok(run_cli("audit", "verify", "--url", gateway.url, "--key", key))
    assert out.startswith("audit chain OK: ") and "signed head verified" in out


def test_budget_table(run_cli: RunCli, remote: list[str], keys: dict[str, Any]) -> None:
    out = _ok(run_cli("budget", *remote))
    assert "privacy budgets" in out
    for column in ("org", "ε total", "ε spent", "ε left", "period"):
        assert column in out
    acme = next(line for line in out.splitlines() if " acme " in line)
    assert "8" in acme and "month" in acme
    assert any(" bigmart " in line for line in out.splitlines())
    # An analyst sees only its own organisation's line.
    mine = _ok(run_cli("budget", *remote, "--org", "bigmart", "--role", "analyst"))
    assert " bigmart " in mine and " acme " not in mine


# Errors ------------------------------------------------------------------------------------


def test_errors_are_one_clean_line(
    run_cli: RunCli, remote: list[str], keys: dict[str, Any], tmp_path: Path
) -> None:
    forbidden = run_cli("audit", "list", *remote, "--role", "analyst")
    assert "forbidden (403)" in _one_line_error(forbidden, 4)
    bad_key = run_cli("budget", *remote, "--key", "igw_nope.nope")
    assert "unauthenticated (401)" in _one_line_error(bad_key, 3)
    unknown = run_cli("policy", "show", *remote, "--collaboration", "nowhere")
    assert "not_found (404)" in _one_line_error(unknown, 5)
    missing = run_cli("policy", "show", *remote, "--version", "999")
    assert "(404)" in _one_line_error(missing, 5)
    down = run_cli(
        "budget",
        "--url",
        "http://127.0.0.1:9",
        "--key",
        keys["acme"]["compliance"],
        "--retries",
        "0",
    )
    assert "cannot reach the gateway at http://127.0.0.1:9" in _one_line_error(down, 9)
    no_keys = run_cli("budget", "--url", remote[1], "--data-dir", str(tmp_path))
    assert "pass --key" in _one_line_error(no_keys, 2)
    usage = run_cli("policy", "approve", "zero", *remote)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
