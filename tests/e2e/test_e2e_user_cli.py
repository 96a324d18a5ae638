"""The installed ``insightgw`` script against a real gateway, as contributors and analysts use it.

The module's gateway is shared and the tests run in file order: uploads first (the same rows
again, so answers do not change), then queries and explanations, configuration, the exit code
of each failure, and last a scan of everything the CLI printed for API key secrets.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from clients import GatewayClient

pytestmark = pytest.mark.e2e

INSIGHTGW = Path(sys.executable).with_name("insightgw")
REPO_ROOT = Path(__file__).resolve().parents[2]
C = "acme-bigmart-cx"
CUSTOMERS = 3_000  # the e2e demo's size (tests/e2e/conftest.py)
SHARED = 1_500  # customers in both tables: round(0.5 * CUSTOMERS)
SQL = (
    "SELECT region, COUNT(*) AS customers, AVG(spend_90d) AS avg_spend "
    "FROM bigmart.loyalty GROUP BY region"
)
JOINED = (
    "SELECT COUNT(*) AS n FROM bigmart.loyalty AS l "
    "JOIN acme.survey AS s ON l.customer_key = s.customer_id"
)
OUTPUTS: list[str] = []  # everything the CLI printed in this module, scanned at the end


class Cli:
    """Runs the installed console script with a clean environment and no config file."""

    def __init__(self, workdir: Path, url: str, data_dir: Path) -> None:
        self.workdir = workdir
        self.url = url
        self.data_dir = data_dir
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "INSIGHTGW_", "XDG_CONFIG_HOME"))
        }
        self.env["PYTHONPATH"] = str(REPO_ROOT)
        self.env["XDG_CONFIG_HOME"] = str(workdir / "no-config")
        self.env["GATEWAY_DEMO_CUSTOMERS"] = str(CUSTOMERS)

    def raw(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(INSIGHTGW), *args],
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        OUTPUTS.append(result.stdout + result.stderr)
        return result

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Against the module's gateway; keys from its demo-keys.json unless --key is given."""
        return self.raw(*args, "--url", self.url, "--data-dir", str(self.data_dir), env=env)

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        result = self(*args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    def fails(self, code: int, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)
        assert result.returncode == code, result.stdout + result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
        return result


@pytest.fixture(scope="module")
def cli(gateway: Any, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(tmp_path_factory.mktemp("user-cli"), gateway.url, gateway.data_dir)


@pytest.fixture(scope="module")
def files(cli: Cli) -> dict[str, Path]:
    """The demo tables as files, written by ``insightgw demo-files`` (the rows already seeded)."""
    out = cli.raw("demo-files", str(cli.workdir / "files"), "--customers", str(CUSTOMERS))
    assert out.returncode == 0, out.stderr
    paths = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    return {name: Path(path) for name, path in paths.items()}


def _spent(gateway: Any, key: str) -> dict[str, float]:
    with GatewayClient(gateway.url, key) as gw:
        return {b["org"]: b["epsilon_spent"] for b in gw.budget(C)}


def _joined_count(cli: Cli, epsilon: str) -> float:
    """The noisy count of customers in both tables; 0 when the one group is suppressed."""
    release = json.loads(cli.ok("query", JOINED, "-e", epsilon, "--json"))
    row = release["rows"][0]
    if row.get("suppressed"):  # a noisy count under min_group_size (25)
        return 0.0
    value: float = row["n"]["value"]
    return value


# Start-up -----------------------------------------------------------------------------------


def test_help_answers_fast_and_lists_the_exit_codes(cli: Cli) -> None:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        result = cli.raw("--help")
        times.append(time.perf_counter() - started)
        assert result.returncode == 0
    print(f"insightgw --help: median {statistics.median(times):.3f} s, min {min(times):.3f} s")
    assert min(times) < 0.5, times
    for code in ("6  over the privacy budget (429)", "9  the gateway is unreachable"):
        assert code in result.stdout
    assert "9  the gateway is unreachable" in cli.raw("query", "--help").stdout


# Contributors --------------------------------------------------------------------------------


def test_upload_streams_with_a_progress_bar(cli: Cli, files: dict[str, Path]) -> None:
    loyalty = files["loyalty"]
    result = cli("upload", str(loyalty), "--dataset", "loyalty", "--org", "bigmart")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"uploaded {loyalty.name} .* (\d+\.\d)/\1 kB", result.stderr), result.stderr
    assert "uploaded bigmart.loyalty version 2: 3000 rows, at most 1 per customer" in result.stdout
    assert "dropped as hidden by the policy: email" in result.stdout

    answer = json.loads(
        cli.ok("upload", str(files["loyalty_csv"]), "-d", "loyalty", "--org", "bigmart", "--json")
    )
    assert (answer["dataset"], answer["version"], answer["rows"]) == ("bigmart.loyalty", 3, 3000)


def test_keys_pseudonymised_with_a_shared_secret_still_join(
    cli: Cli, files: dict[str, Path], keys: dict[str, Any]
) -> None:
    """Only one side pseudonymised: nobody matches. Both, with one secret: everyone does."""
    secret = {"PARTNER_SECRET": "shared-by-acme-and-bigmart-2026"}
    flags = ("--pseudonymise-key", "customer_key", "--secret-env", "PARTNER_SECRET")
    out = cli.ok(
        "upload", str(files["loyalty"]), "-d", "loyalty", "--org", "bigmart", *flags, env=secret
    )
    assert "customer_key was pseudonymised here (HMAC-SHA256 with $PARTNER_SECRET)" in out
    # Discrete Laplace, scale 2 at ε = 0.5: |noise| > 100 has probability below 1e-21.
    assert _joined_count(cli, "0.5") < 100

    survey = ("upload", str(files["survey"]), "-d", "survey", "--org", "acme", *flags[2:])
    cli.ok(*survey, "--pseudonymise-key", "customer_id", env=secret)
    assert abs(_joined_count(cli, "0.51") - SHARED) < 100
    # Later tests query bigmart.loyalty alone: the tables stay pseudonymised, with the same rows.


# Analysts ------------------------------------------------------------------------------------


def test_query_from_text_prints_a_table_with_intervals_and_the_budget(cli: Cli) -> None:
    out = cli.ok("query", SQL, "--epsilon", "0.5")
    lines = out.splitlines()
    header = next(line for line in lines if "region" in line)
    assert "customers" in header and "avg_spend" in header
    for region in ("north", "south", "east", "west"):
        row = next(line for line in lines if f" {region} " in line)
        assert re.search(r"\d+ \[\d+, \d+\]", row), row
    assert re.search(r"spent ε 0\.5 under policy v1; query [0-9a-f]{32}", out)
    assert re.search(r"budget: ε [\d.]+ of 8 spent, [\d.]+ left", out)

    again = cli.ok("query", SQL, "--epsilon", "0.5")
    assert "replay of query" in again and "nothing spent" in again


def test_query_from_a_file_with_json_output(cli: Cli, gateway: Any, keys: dict[str, Any]) -> None:
    question = cli.workdir / "question.sql"
    question.write_text(SQL.replace("COUNT(*) AS customers", "COUNT(*) AS n") + "\n")
    before = _spent(gateway, keys["acme"]["compliance"])["acme"]
    release = json.loads(cli.ok("query", "--file", str(question), "-e", "0.25", "--json"))
    assert release["replay"] is False and release["epsilon_spent"] == 0.25
    assert release["group_by"] == ["region"] and len(release["rows"]) == 4
    assert set(release["rows"][0]) >= {"region", "n", "avg_spend"}
    assert release["budget"]["epsilon_spent"] == pytest.approx(before + 0.25)


def test_query_from_a_plan_file_with_an_accuracy_target(cli: Cli) -> None:
    plan = {
        "from": "bigmart.loyalty",
        "group_by": ["channel"],
        "aggregates": [
            {"fn": "count", "as": "n"},
            {"fn": "mean", "column": "nps_score", "as": "nps"},
        ],
    }
    path = cli.workdir / "plan.json"
    path.write_text(json.dumps(plan))
    explained = json.loads(
        cli.ok("explain", "--plan", str(path), "--accuracy", "20", "--at-count", "500", "--json")
    )
    assert explained["accuracy_target"]["abs"] == 20 and 0 < explained["epsilon"] <= 1
    release = json.loads(
        cli.ok("query", "--plan", str(path), "--accuracy", "20", "--at-count", "500", "--json")
    )
    assert release["epsilon_spent"] == pytest.approx(explained["epsilon"])
    assert [r["channel"] for r in release["rows"]] == ["store", "online", "app"]


def test_explain_prints_cost_and_expected_error_and_spends_nothing(
    cli: Cli, gateway: Any, keys: dict[str, Any]
) -> None:
    before = _spent(gateway, keys["acme"]["compliance"])
    out = cli.ok("explain", SQL.replace("AVG", "SUM"), "-e", "0.4")
    assert "cost: ε 0.4 under policy v1; within budget" in out
    assert "explaining spends nothing" in out
    assert "expected error (95%)" in out
    assert re.search(r"customers\s+│\s+count\s+│\s+±\d+", out), out
    assert "binding rules: max_epsilon_per_query 1 (privacy.max_epsilon_per_query)" in out
    assert _spent(gateway, keys["acme"]["compliance"]) == before


def test_budget_and_datasets(cli: Cli) -> None:
    budgets = json.loads(cli.ok("budget", "--org", "acme", "--role", "analyst", "--json"))
    assert [b["org"] for b in budgets["budgets"]] == ["acme"]
    table = cli.ok("budget", "--org", "acme", "--role", "analyst")
    assert "privacy budgets" in table and " acme " in table and " bigmart " not in table

    listing = cli.ok("datasets")
    assert "bigmart.loyalty (owner bigmart, version" in listing
    assert "spend_90d" in listing and "email" not in listing  # hidden columns are not listed


# Configuration -------------------------------------------------------------------------------


def _config(cli: Cli, *flags: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``config show --json``: what a command would use, and from where (no request made)."""
    result = cli.raw("config", "show", "--json", *flags, env=env)
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


def _whoami(cli: Cli, *flags: str, env: Mapping[str, str]) -> str:
    result = cli.raw("whoami", "--json", *flags, env=env)
    assert result.returncode == 0, result.stderr
    me = json.loads(result.stdout)
    return f"{me['org']} {me['role']}"


def test_configuration_precedence_flag_env_file(cli: Cli, keys: dict[str, Any]) -> None:
    def masked(key: str) -> str:
        return key.split(".")[0] + ".****"

    config = cli.workdir / "config.toml"
    config.write_text(
        f'url = "{cli.url}"\ncollaboration = "from-file"\nkey = "{keys["acme"]["compliance"]}"\n'
        f'\n[profiles.bm]\nkey = "{keys["bigmart"]["analyst"]}"\n'
    )
    config.chmod(0o600)
    file = {"INSIGHTGW_CONFIG": str(config)}
    env = {
        **file,
        "INSIGHTGW_URL": "http://127.0.0.1:9",
        "INSIGHTGW_KEY": keys["bigmart"]["contributor"],
        "INSIGHTGW_COLLABORATION": "from-env",
    }
    flags = ("--url", cli.url, "--key", keys["acme"]["analyst"], "-c", C)

    from_file = _config(cli, env=file)
    assert from_file["url"] == {"value": cli.url, "source": f"config file {config}"}
    assert from_file["key"]["value"] == masked(keys["acme"]["compliance"])
    assert from_file["collaboration"]["value"] == "from-file"
    profile = _config(cli, "--profile", "bm", env=file)
    assert profile["key"]["source"] == f"config file {config} [profiles.bm]"

    from_env = _config(cli, env=env)
    for name in ("url", "key", "collaboration"):
        assert from_env[name]["source"] == f"environment INSIGHTGW_{name.upper()}"
    assert from_env["key"]["value"] == masked(keys["bigmart"]["contributor"])

    from_flags = _config(cli, *flags, env=env)
    assert [from_flags[n]["source"] for n in ("url", "key", "collaboration")] == [
        "flag --url",
        "flag --key",
        "flag --collaboration",
    ]
    table = cli.raw("config", "show", env=env).stdout
    assert "environment INSIGHTGW_KEY" in table and masked(keys["bigmart"]["contributor"]) in table

    # The resolved values are the ones used: the file's key, then the flags over a bad env.
    assert _whoami(cli, env=file) == "acme compliance"
    assert _whoami(cli, *flags[:4], env=env) == "acme analyst"
    assert (
        cli.raw("whoami", "--retries", "0", env=env).returncode == 9
    )  # the environment's URL: nothing there


# Failures: one exit code per kind, nothing spent --------------------------------------------


def _loyalty_version(gateway: Any, keys: dict[str, Any]) -> int:
    with GatewayClient(gateway.url, keys["bigmart"]["contributor"]) as gw:
        listing = gw.datasets(C)
    return next(int(d["version"]) for d in listing["datasets"] if d["id"] == "bigmart.loyalty")


def test_each_failure_exits_with_its_code_and_spends_nothing(
    cli: Cli, gateway: Any, keys: dict[str, Any], files: dict[str, Path]
) -> None:
    before = _spent(gateway, keys["acme"]["compliance"])
    version = _loyalty_version(gateway, keys)

    bad_key = cli.fails(3, "query", SQL, "-e", "0.1", "--key", "igw_0000.not-a-key", "--json")
    assert json.loads(bad_key.stdout)["error"]["code"] == "unauthenticated"
    assert bad_key.stderr.startswith("error: unauthenticated (401)")

    hidden = "SELECT email, COUNT(*) AS n FROM bigmart.loyalty GROUP BY email"
    forbidden = cli.fails(4, "query", hidden, "-e", "0.1", "--json")
    error = json.loads(forbidden.stdout)["error"]
    assert error["code"] == "policy_violation" and error["status"] == 403
    assert "datasets.bigmart.loyalty.columns.email.use" in error["message"]

    unknown = cli.fails(5, "query", SQL, "-e", "0.1", "-c", "no-such-collaboration")
    assert "not_found (404)" in unknown.stderr

    bad_sql = cli.fails(7, "query", "SELECT FROM WHERE", "-e", "0.1")
    assert "invalid_request (400)" in bad_sql.stderr
    wrong_file = cli("upload", str(files["survey"]), "-d", "loyalty", "--org", "bigmart")
    assert wrong_file.returncode == 7, wrong_file.stderr
    assert wrong_file.stderr.splitlines()[-1].startswith("error: invalid_dataset (422): column")

    no_epsilon = cli.fails(2, "query", SQL)
    assert "--epsilon" in no_epsilon.stderr
    no_key = cli.raw("query", SQL, "-e", "0.1", "--url", cli.url)  # no demo-keys.json here
    assert no_key.returncode == 2 and "no API key" in no_key.stderr

    down = cli.raw(
        "query",
        SQL,
        "-e",
        "0.1",
        "--url",
        "http://127.0.0.1:9",
        "--key",
        "igw_x.y",
        "--retries",
        "0",
    )
    assert down.returncode == 9 and "cannot reach the gateway at http://127.0.0.1:9" in down.stderr

    missing = cli.fails(2, "upload", str(cli.workdir / "nope.parquet"), "-d", "loyalty")
    assert "no file to upload" in missing.stderr
    no_secret = cli.fails(
        2, "upload", str(cli.workdir / "question.sql"), "-d", "loyalty", "--format", "csv",
        "--pseudonymise-key", "customer_key", "--secret-env", "UNSET_SECRET_VARIABLE",
    )  # fmt: skip
    assert "UNSET_SECRET_VARIABLE (--secret-env) is not set" in no_secret.stderr

    assert _spent(gateway, keys["acme"]["compliance"]) == before
    assert _loyalty_version(gateway, keys) == version  # the refused upload stored nothing


def test_over_budget_exits_6_and_spends_nothing(
    cli: Cli, gateway: Any, keys: dict[str, Any]
) -> None:
    """BigMart's analysts have ε = 4 a month; spend it, then ask once more."""
    analyst = keys["bigmart"]["analyst"]
    with GatewayClient(gateway.url, analyst) as gw:
        for i in range(4):
            gw.query(C, sql=f"SELECT COUNT(*) AS n{i} FROM bigmart.loyalty", epsilon=1.0)
    assert _spent(gateway, analyst) == {"bigmart": 4.0}
    over = cli.fails(6, "query", SQL, "-e", "0.1", "--org", "bigmart", "--json")
    error = json.loads(over.stdout)["error"]
    assert (error["code"], error["status"], error["exit_code"]) == ("budget_exceeded", 429, 6)
    assert _spent(gateway, analyst) == {"bigmart": 4.0}


def test_no_key_secret_was_ever_printed(keys: dict[str, Any]) -> None:
    secrets = [keys["admin"]] + [k for org in ("acme", "bigmart") for k in keys[org].values()]
    assert len(OUTPUTS) > 30
    for output in OUTPUTS:
        for key in secrets:
            assert key.split(".", 1)[1] not in output
