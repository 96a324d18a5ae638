"""One order for URL, key and collaboration: flag > environment > config file > demo keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.cli_config import ENV_CONFIG, ClientConfig, resolve, secret_from_environment
from gateway.cli_exit import CommandError, ExitCode

FLAG_KEY = "igw_flag0001.flag-secret"
ENV_KEY = "igw_env00002.env-secret"
FILE_KEY = "igw_file0003.file-secret"
PROFILE_KEY = "igw_prof0004.profile-secret"
DEMO = {
    "admin": "igw_admin005.admin-secret",
    "acme": {"analyst": "igw_acme0006.acme-analyst", "compliance": "igw_acme0007.acme-compl"},
    "bigmart": {"analyst": "igw_bigm0008.bigmart-analyst", "contributor": "igw_bigm0009.bm-c"},
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory: ./var/demo-keys.json exists only where a test writes it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _demo_keys(directory: Path) -> Path:
    (directory / "var").mkdir(exist_ok=True)
    path = directory / "var" / "demo-keys.json"
    path.write_text(json.dumps(DEMO))
    return path


def _config_file(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _resolve(env: dict[str, str], *argv: str, require_key: bool = True) -> ClientConfig:
    environ = {"XDG_CONFIG_HOME": "/nonexistent-config-home", **env}
    return resolve(_args(*argv), environ, require_key=require_key)


FILE_TEXT = f"""
url = "http://file.example:8000"
collaboration = "from-file"
key = "{FILE_KEY}"

[profiles.ops]
key = "{PROFILE_KEY}"
url = "http://profile.example:8000"
"""


def test_flags_beat_environment_beat_file_beat_demo(workdir: Path) -> None:
    _demo_keys(workdir)
    file = _config_file(workdir, FILE_TEXT)
    env = {
        ENV_CONFIG: str(file),
        "INSIGHTGW_URL": "http://env.example:8000",
        "INSIGHTGW_KEY": ENV_KEY,
        "INSIGHTGW_COLLABORATION": "from-env",
    }
    flags = ("--url", "http://flag.example:8000", "--key", FLAG_KEY, "-c", "from-flag")

    config = _resolve(env, "budget", *flags)
    assert (config.url.value, config.key.value, config.collaboration.value) == (
        "http://flag.example:8000",
        FLAG_KEY,
        "from-flag",
    )
    assert config.key.source == "flag --key"

    config = _resolve(env, "budget")
    assert (config.url.value, config.key.value, config.collaboration.value) == (
        "http://env.example:8000",
        ENV_KEY,
        "from-env",
    )
    assert config.url.source == "environment INSIGHTGW_URL"

    config = _resolve({ENV_CONFIG: str(file)}, "budget")
    assert (config.url.value, config.key.value, config.collaboration.value) == (
        "http://file.example:8000",
        FILE_KEY,
        "from-file",
    )
    assert config.key.source == f"config file {file}"

    config = _resolve({}, "query")
    assert config.url.value == "http://127.0.0.1:8000" and config.url.source == "default"
    assert config.collaboration.value == "acme-bigmart-cx"
    assert config.key.value == DEMO["acme"]["analyst"]  # the command's usual role
    assert config.key.source == "demo keys var/demo-keys.json (acme analyst)"


def test_each_command_has_its_usual_demo_key(workdir: Path) -> None:
    _demo_keys(workdir)
    assert _resolve({}, "budget").key.value == DEMO["acme"]["compliance"]
    upload = _resolve({}, "upload", "f.csv", "-d", "loyalty")
    assert upload.key.value == DEMO["bigmart"]["contributor"]
    assert upload.key.source == "demo keys var/demo-keys.json (bigmart contributor)"
    admin = _resolve({}, "admin", "create-key", "acme", "--role", "analyst")
    assert admin.key.value == DEMO["admin"]


def test_a_profile_overrides_the_top_level_of_the_file(workdir: Path) -> None:
    file = _config_file(workdir, FILE_TEXT)
    config = _resolve({ENV_CONFIG: str(file)}, "budget", "--profile", "ops")
    assert config.key.value == PROFILE_KEY
    assert config.url.value == "http://profile.example:8000"
    assert config.collaboration.value == "from-file"  # not in the profile: the top level's
    assert config.key.source == f"config file {file} [profiles.ops]"
    via_env = _resolve({ENV_CONFIG: str(file), "INSIGHTGW_PROFILE": "ops"}, "budget")
    assert via_env.key.value == PROFILE_KEY


def test_choosing_a_demo_key_by_flag_beats_the_environment(workdir: Path) -> None:
    """``--org``/``--role``/``--data-dir`` are flags: they pick from demo-keys.json."""
    _demo_keys(workdir)
    env = {"INSIGHTGW_KEY": ENV_KEY}
    assert _resolve(env, "query").key.value == ENV_KEY
    assert _resolve(env, "query", "--org", "bigmart").key.value == DEMO["bigmart"]["analyst"]
    assert _resolve(env, "query", "--data-dir", "var").key.value == DEMO["acme"]["analyst"]
    assert _resolve(env, "query", "--org", "bigmart", "--key", FLAG_KEY).key.value == FLAG_KEY


def test_the_default_config_file_lives_under_xdg_config_home(workdir: Path) -> None:
    home = workdir / "xdg"
    (home / "insightgw").mkdir(parents=True)
    (home / "insightgw" / "config.toml").write_text(f'key = "{FILE_KEY}"\n')
    config = resolve(_args("budget"), {"XDG_CONFIG_HOME": str(home)})
    assert config.key.value == FILE_KEY
    assert config.config_file == home / "insightgw" / "config.toml"


def _refusal(env: dict[str, str], *argv: str) -> str:
    with pytest.raises(CommandError) as refused:
        _resolve(env, *argv)
    assert refused.value.code == ExitCode.USAGE
    return str(refused.value)


def test_no_key_anywhere_says_where_one_can_go(workdir: Path) -> None:
    message = _refusal({}, "query")
    for where in ("--key", "INSIGHTGW_KEY", "config.toml", "make run"):
        assert where in message
    assert "var/demo-keys.json not found" in _refusal({}, "query", "--org", "bigmart")
    config = _resolve({}, "config", "show", require_key=False)
    assert config.key.value is None and config.key.source == "not set"


def test_bad_config_files_are_usage_errors_that_quote_no_value(workdir: Path) -> None:
    missing = _refusal({ENV_CONFIG: str(workdir / "nope.toml")}, "budget")
    assert "nope.toml" in missing and "not found" in missing

    broken = _config_file(workdir, f'key = "{FILE_KEY}\nurl = 3\n')
    message = _refusal({ENV_CONFIG: str(broken)}, "budget")
    assert "not valid TOML" in message and "line" in message
    assert FILE_KEY not in message

    typo = _config_file(workdir, f'kee = "{FILE_KEY}"\n')
    message = _refusal({ENV_CONFIG: str(typo)}, "budget")
    assert "unknown setting 'kee'" in message and FILE_KEY not in message

    wrong_type = _config_file(workdir, "url = 8000\n")
    assert "url must be a non-empty string" in _refusal({ENV_CONFIG: str(wrong_type)}, "budget")

    no_profile = _config_file(workdir, FILE_TEXT)
    message = _refusal({ENV_CONFIG: str(no_profile)}, "budget", "--profile", "nope")
    assert "no profile 'nope'" in message and "ops" in message


def test_a_key_in_a_file_others_can_read_is_warned_about(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_file = _config_file(workdir, f'key = "{FILE_KEY}"\n', mode=0o644)
    _resolve({ENV_CONFIG: str(open_file)}, "budget")
    err = capsys.readouterr().err
    assert "chmod 600" in err and FILE_KEY not in err
    open_file.chmod(0o600)
    _resolve({ENV_CONFIG: str(open_file)}, "budget")
    assert capsys.readouterr().err == ""


def test_the_pseudonymisation_secret_comes_only_from_the_environment() -> None:
    assert secret_from_environment("S", {"S": "0123456789abcdef"}) == b"0123456789abcdef"
    for env in ({}, {"S": ""}):
        with pytest.raises(CommandError) as refused:
            secret_from_environment("S", env)
        assert "S (--secret-env) is not set" in str(refused.value)


def test_resolution_records_what_error_messages_need(workdir: Path) -> None:
    _demo_keys(workdir)
    args: Any = _args("query", "--url", "http://gw.test")
    resolve(args, {"XDG_CONFIG_HOME": str(workdir)})
    assert args.resolved_url == "http://gw.test"
    assert args.resolved_key == DEMO["acme"]["analyst"]
