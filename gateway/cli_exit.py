"""Exit codes of ``insightgw`` and the one wrapper that turns every failure into one of them.

Scripts branch on the exit code, so it depends only on what went wrong, never on the command:

====  ====================================================================================
code  meaning
====  ====================================================================================
0     done
1     a check said no (a broken audit chain) or an unexpected error
2     usage: bad arguments, no API key, an unreadable local file, a bad configuration
3     authentication: the API key is missing, malformed or revoked (401)
4     forbidden: the key's role may not do this, or the policy forbids it (403)
5     not found, or not visible to this key (404)
6     over budget: the query would overspend the privacy budget (429)
7     invalid input: the gateway refused the request or file as malformed (400, 413, 415, 422)
8     conflict with the gateway's state, e.g. a second approval (409)
9     the gateway cannot be reached (connection refused, timeout, DNS)
====  ====================================================================================

A failure prints exactly one line, ``error: …``, on stderr (never a traceback), and with
``--json`` also the gateway's error object on stdout. Anything that looks like an API key is
masked in that line, whatever produced it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from enum import IntEnum

Command = Callable[[argparse.Namespace], int]


class ExitCode(IntEnum):
    """What a script can rely on; see the module docstring."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNAUTHENTICATED = 3
    FORBIDDEN = 4
    NOT_FOUND = 5
    OVER_BUDGET = 6
    INVALID_INPUT = 7
    CONFLICT = 8
    UNREACHABLE = 9


EPILOG = """\
exit codes:
  0  done
  1  a check failed (a broken audit chain), or an unexpected error
  2  usage or configuration: bad arguments, no API key, an unreadable local file
  3  authentication failed: the key is missing, malformed or revoked (401)
  4  forbidden by the key's role or by the policy (403)
  5  not found, or not visible to this key (404)
  6  over the privacy budget (429)
  7  invalid input: the gateway refused the request or the file (400, 413, 415, 422)
  8  conflict with the gateway's state, e.g. approved twice (409)
  9  the gateway is unreachable (connection refused, timeout)
"""

_BY_STATUS = {
    400: ExitCode.INVALID_INPUT,
    401: ExitCode.UNAUTHENTICATED,
    403: ExitCode.FORBIDDEN,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    413: ExitCode.INVALID_INPUT,
    415: ExitCode.INVALID_INPUT,
    422: ExitCode.INVALID_INPUT,
    429: ExitCode.OVER_BUDGET,
}

# A key is ``igw_<key id>.<secret>``; the key id is public (``GET /v1/me``), the rest is not.
_KEY_PATTERN = re.compile(r"(igw_[A-Za-z0-9]+)\.[A-Za-z0-9_\-]+")


class CommandError(Exception):
    """The command cannot run; the message is printed as one line, the exit code is ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code of a gateway refusal with HTTP ``status``.

    Example:
        >>> exit_code_for_status(429)
        <ExitCode.OVER_BUDGET: 6>
    """
    return _BY_STATUS.get(status, ExitCode.FAILED)


def mask_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with every API key secret replaced by ``****`` (the key id stays readable).

    Example:
        >>> mask_secrets("bad key igw_ab12.s3cr3t")
        'bad key igw_ab12.****'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask_key(secret))
    return _KEY_PATTERN.sub(r"\1.****", text)


def mask_key(key: str) -> str:
    """A key as it may be shown: its public id, never its secret.

    Example:
        >>> mask_key("igw_ab12.s3cr3t")
        'igw_ab12.****'
        >>> mask_key("no-prefix-key")
        '****'
    """
    match = _KEY_PATTERN.fullmatch(key)
    return f"{match.group(1)}.****" if match else "****"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(
    args: argparse.Namespace,
    code: ExitCode,
    error_code: str,
    message: str,
    *,
    status: int | None = None,
    detail: str | None = None,
) -> int:
    """Print a failure and return its exit code.

    One line ``error: …`` goes to stderr; with ``--json`` the error object also goes to stdout,
    in the gateway's shape (``{"error": {"code", "message"}}``, its message unchanged) plus the
    HTTP ``status`` when there was one and the ``exit_code``.
    """
    secrets = (getattr(args, "key", None), getattr(args, "resolved_key", None))
    line = mask_secrets(_one_line(message), *secrets)
    print(f"error: {line}", file=sys.stderr)
    if getattr(args, "json", False):
        error: dict[str, object] = {
            "code": error_code,
            "message": mask_secrets(detail, *secrets) if detail is not None else line,
        }
        if status is not None:
            error["status"] = status
        error["exit_code"] = int(code)
        print(json.dumps({"error": error}, ensure_ascii=False))
    return int(code)


def guarded(command: Command) -> Command:
    """Run ``command``; turn each failure into one stderr line and its exit code.

    Guaranteed: no traceback and no API key secret ever reaches the terminal, and the exit
    code depends only on the kind of failure (the table in this module's docstring).
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            return report(args, exc)

    return run


def _loaded(module: str, name: str) -> type[BaseException] | None:
    """An exception class, if its module is loaded; if it is not, nothing raised one.

    Usage errors are found before the SDK (httpx, pyarrow: most of a command's start-up) is
    imported, and reporting them must not import it either.
    """
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def report(args: argparse.Namespace, exc: Exception) -> int:
    """Print ``exc`` as one line (and JSON with ``--json``); return the exit code of its kind."""
    url = getattr(args, "resolved_url", None) or getattr(args, "url", None) or "the gateway"
    gateway_error = _loaded("clients.errors", "GatewayError")
    timeout = _loaded("httpx", "TimeoutException")
    transport = _loaded("httpx", "TransportError")
    configuration = tuple(
        cls
        for cls in (
            _loaded("gateway.config", "ConfigurationError"),
            _loaded("gateway.store.db", "CatalogUnavailable"),
        )
        if cls is not None
    )
    if gateway_error is not None and isinstance(exc, gateway_error):
        status: int = getattr(exc, "status", 0)
        error_code: str = getattr(exc, "code", "error")
        detail: str = getattr(exc, "message", str(exc))
        message = f"{error_code} ({status}): {detail}"
        code = exit_code_for_status(status)
        return fail(args, code, error_code, message, status=status, detail=detail)
    if timeout is not None and isinstance(exc, timeout):
        message = f"the gateway at {url} did not answer in time ({type(exc).__name__})"
        return fail(args, ExitCode.UNREACHABLE, "unreachable", message)
    if transport is not None and isinstance(exc, transport):
        message = f"cannot reach the gateway at {url}: {exc}"
        return fail(args, ExitCode.UNREACHABLE, "unreachable", message)
    if isinstance(exc, CommandError):
        return fail(args, exc.code, exc.code.name.lower(), str(exc))
    if configuration and isinstance(exc, configuration):
        return fail(args, ExitCode.USAGE, "configuration", str(exc))
    if isinstance(exc, OSError):  # the disk or the system refused: report it, not a traceback
        message = f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}"
        return fail(args, ExitCode.USAGE, "os_error", message)
    message = f"unexpected {type(exc).__name__}: {exc}"  # a bug: say what kind, in one line
    return fail(args, ExitCode.FAILED, "unexpected", message)
