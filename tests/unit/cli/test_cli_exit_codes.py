"""Exit codes depend only on the kind of failure; a failure is one line and never shows a key."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import httpx
import pytest

from clients.errors import error_from_response
from gateway.cli import build_parser
from gateway.cli_exit import EPILOG, CommandError, ExitCode, guarded, mask_key, mask_secrets

SECRET_KEY = "igw_0123abcd.Sup3r-s3cret_value"


def _failing(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


def _gateway_error(status: int, code: str, message: str = "refused") -> Exception:
    body = {"error": {"code": code, "message": message}}
    return error_from_response(httpx.Response(status, json=body))


CASES = [
    (_gateway_error(401, "unauthenticated"), ExitCode.UNAUTHENTICATED),
    (_gateway_error(403, "forbidden"), ExitCode.FORBIDDEN),
    (_gateway_error(403, "policy_violation"), ExitCode.FORBIDDEN),
    (_gateway_error(404, "not_found"), ExitCode.NOT_FOUND),
    (_gateway_error(429, "budget_exceeded"), ExitCode.OVER_BUDGET),
    (_gateway_error(400, "invalid_request"), ExitCode.INVALID_INPUT),
    (_gateway_error(422, "invalid_dataset"), ExitCode.INVALID_INPUT),
    (_gateway_error(413, "payload_too_large"), ExitCode.INVALID_INPUT),
    (_gateway_error(415, "unsupported_media_type"), ExitCode.INVALID_INPUT),
    (_gateway_error(409, "conflict"), ExitCode.CONFLICT),
    (_gateway_error(500, "internal_error"), ExitCode.FAILED),
    (httpx.ConnectError("connection refused"), ExitCode.UNREACHABLE),
    (httpx.ReadTimeout("slow"), ExitCode.UNREACHABLE),
    (CommandError("no API key"), ExitCode.USAGE),
    (CommandError("plan.json is not JSON", ExitCode.INVALID_INPUT), ExitCode.INVALID_INPUT),
    (FileNotFoundError(2, "No such file or directory", "q.sql"), ExitCode.USAGE),
    (RuntimeError("a bug"), ExitCode.FAILED),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_failure_has_its_exit_code_and_one_line(
    exc: BaseException, expected: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(key=None, json=False, url="http://127.0.0.1:9")
    assert guarded(_failing(exc))(args) == expected
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_json_errors_keep_the_gateways_code_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = argparse.Namespace(key=None, json=True)
    exc = _gateway_error(429, "budget_exceeded", "asked 1, left 0.5")
    assert guarded(_failing(exc))(args) == ExitCode.OVER_BUDGET
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": {
            "code": "budget_exceeded",
            "message": "asked 1, left 0.5",
            "status": 429,
            "exit_code": 6,
        }
    }
    assert err == "error: budget_exceeded (429): asked 1, left 0.5\n"


def test_keys_are_masked_in_every_failure(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(key=SECRET_KEY, json=True, resolved_key=SECRET_KEY)
    guarded(_failing(RuntimeError(f"boom with {SECRET_KEY} inside")))(args)
    custom = argparse.Namespace(key="plain-custom-secret", json=False)
    guarded(_failing(ValueError("saw plain-custom-secret")))(custom)
    out, err = capsys.readouterr()
    assert "Sup3r" not in out + err and "plain-custom-secret" not in out + err
    assert "igw_0123abcd.****" in err


def test_masking_keeps_only_the_public_key_id() -> None:
    assert mask_key(SECRET_KEY) == "igw_0123abcd.****"
    assert mask_key("anything-else") == "****"
    assert mask_secrets(f"a {SECRET_KEY} b") == "a igw_0123abcd.**** b"


def test_every_command_documents_the_exit_codes() -> None:
    parser = build_parser()
    assert parser.epilog == EPILOG
    seen = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
                return
        seen.append(path)
        assert p.epilog == EPILOG, path
        help_text = p.format_help()
        for code in range(10):
            assert f"\n  {code}  " in help_text, (path, code)

    walk(parser, "insightgw")
    for command in ("upload", "query", "explain", "budget", "policy approve", "config show"):
        assert f"insightgw {command}" in seen


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["query", "--epsilon", "-1"])
    assert stopped.value.code == 2
    assert "must be a number > 0" in capsys.readouterr().err
