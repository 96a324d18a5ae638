"""Where a client command's gateway URL, API key and collaboration come from, in one order.

Every ``insightgw`` command that talks to a gateway resolves its settings the same way; the
first source that has a value wins:

1. **flags**: ``--url``, ``--key``, ``--collaboration``/``-c``. Choosing a demo key with
   ``--org``, ``--role`` or ``--data-dir`` counts as a flag too.
2. **environment**: ``INSIGHTGW_URL``, ``INSIGHTGW_KEY``, ``INSIGHTGW_COLLABORATION``.
3. **config file**: ``$INSIGHTGW_CONFIG``, else ``$XDG_CONFIG_HOME/insightgw/config.toml``
   (``~/.config/insightgw/config.toml``). Top-level ``url``, ``key`` and ``collaboration``,
   overridden by the table ``[profiles.NAME]`` picked with ``--profile`` or
   ``INSIGHTGW_PROFILE``.
4. **the demo**: ``http://127.0.0.1:8000``, ``acme-bigmart-cx``, and the key of the command's
   usual organisation and role in ``./var/demo-keys.json`` (what ``make run`` writes).

The key is never printed: ``insightgw config show`` tells where each value came from and shows
only the key's public id. This is the only module of the CLI that reads the environment.

Example config file::

    url = "https://gateway.example.com"
    collaboration = "acme-bigmart-cx"
    key = "igw_…"

    [profiles.compliance]
    key = "igw_…"
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli_exit import CommandError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_COLLABORATION = "acme-bigmart-cx"
DEFAULT_DATA_DIR = Path("var")
ENV = {
    "url": "INSIGHTGW_URL",
    "key": "INSIGHTGW_KEY",
    "collaboration": "INSIGHTGW_COLLABORATION",
}
ENV_CONFIG = "INSIGHTGW_CONFIG"
ENV_PROFILE = "INSIGHTGW_PROFILE"
ROLES = ("admin", "contributor", "analyst", "compliance")
_FILE_FIELDS = frozenset(ENV)


@dataclass(frozen=True)
class Value:
    """One resolved setting and where it came from (``flag --url``, ``environment …``, …)."""

    value: str | None
    source: str


@dataclass(frozen=True)
class ClientConfig:
    """The URL, key and collaboration a command will use, each with its source."""

    url: Value
    key: Value
    collaboration: Value
    profile: str | None
    config_file: Path | None

    @property
    def api_key(self) -> str:
        """The key; only call this to hand it to the SDK."""
        if not self.key.value:
            raise CommandError("no API key")
        return self.key.value


@dataclass(frozen=True)
class _FileSettings:
    path: Path | None
    values: Mapping[str, str]
    source: str
    readable_by_others: bool


def add_client_options(
    p: argparse.ArgumentParser,
    *,
    org: str | None,
    role: str,
    collaboration: bool = True,
    data_dir_help: str | None = None,
) -> None:
    """The options of every command that talks to a gateway, and its demo-key defaults.

    Args:
        p: The subcommand's parser.
        org: Whose demo key the command uses when none is configured; ``None`` for the admin
            commands, whose demo key is the admin key (and which use ``--org``/``--role``
            themselves).
        role: Which of that organisation's demo keys (admin, contributor, analyst, compliance).
        collaboration: Whether the command works in a collaboration (adds ``-c``).
        data_dir_help: Help of ``--data-dir`` when the command gives it another meaning.
    """
    group = p.add_argument_group("gateway and key (flag > environment > config file > demo)")
    group.add_argument("--url", default=None, help=f"gateway URL (${ENV['url']}; {DEFAULT_URL})")
    group.add_argument("--key", default=None, help=f"API key (${ENV['key']}; config file)")
    if collaboration:
        group.add_argument(
            "--collaboration",
            "-c",
            default=None,
            help=f"collaboration id (${ENV['collaboration']}; {DEFAULT_COLLABORATION})",
        )
    group.add_argument("--profile", default=None, help=f"config file profile (${ENV_PROFILE})")
    group.add_argument(
        "--retries",
        type=_retries,
        default=None,
        help="retries of a request the gateway certainly did not act on (default 3)",
    )
    if org is not None:
        group.add_argument(
            "--org",
            dest="key_org",
            metavar="ORG",
            default=None,
            help=f"demo key of this organisation ({org})",
        )
        group.add_argument(
            "--role", dest="key_role", default=None, choices=ROLES, help=f"demo key role ({role})"
        )
    group.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=None,
        help=data_dir_help or f"where demo-keys.json is ({DEFAULT_DATA_DIR})",
    )
    p.add_argument("--json", action="store_true", help="print the gateway's JSON answer as is")
    p.set_defaults(demo_org=org, demo_role=role, key_org=None, key_role=None)


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value}")
    return value


def config_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether it was named explicitly (``$INSIGHTGW_CONFIG``)."""
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG]).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "insightgw" / "config.toml", False


def _strings(table: Mapping[str, Any], where: str) -> dict[str, str]:
    unknown = sorted(set(table) - _FILE_FIELDS)
    if unknown:
        raise CommandError(
            f"{where}: unknown setting {unknown[0]!r} (allowed: {', '.join(sorted(_FILE_FIELDS))})"
        )
    values = {}
    for name, value in table.items():
        if not isinstance(value, str) or not value:
            raise CommandError(f"{where}: {name} must be a non-empty string")
        values[name] = value
    return values


def _read_file(environ: Mapping[str, str], profile: str | None) -> _FileSettings:
    import tomllib

    path, explicit = config_path(environ)
    if not path.is_file():
        if explicit:
            raise CommandError(f"config file {path} (${ENV_CONFIG}) not found")
        if profile:
            raise CommandError(f"profile {profile!r} asked for, but there is no {path}")
        return _FileSettings(None, {}, "", False)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:  # says line and column, never quotes values
        raise CommandError(f"config file {path} is not valid TOML: {exc}") from None
    profiles = document.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise CommandError(f"{path}: profiles must be tables, [profiles.NAME]")
    values = _strings(document, str(path))
    source = f"config file {path}"
    if profile:
        if not isinstance(profiles.get(profile), dict):
            names = ", ".join(sorted(profiles)) or "none"
            raise CommandError(f"{path}: no profile {profile!r} (profiles: {names})")
        values.update(_strings(profiles[profile], f"{path} [profiles.{profile}]"))
        source += f" [profiles.{profile}]"
    mode = path.stat().st_mode
    return _FileSettings(path, values, source, bool(mode & (stat.S_IRWXG | stat.S_IRWXO)))


def _demo_key(args: argparse.Namespace, chosen_by_flag: bool) -> Value | None:
    """The key of ``--org``/``--role`` (or the command's defaults) in demo-keys.json."""
    import json

    org = args.key_org or args.demo_org
    role = args.key_role or args.demo_role
    keys_file = (args.data_dir or DEFAULT_DATA_DIR) / "demo-keys.json"
    try:
        keys: Any = json.loads(keys_file.read_text())
        key = keys["admin"] if role == "admin" else keys[org][role]
    except FileNotFoundError:
        if not chosen_by_flag:
            return None
        raise CommandError(
            f"an API key is needed: pass --key igw_... ({keys_file} not found)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CommandError(f"no {org} {role} key in {keys_file}: pass --key igw_...") from None
    who = "admin" if role == "admin" else f"{org} {role}"
    return Value(str(key), f"demo keys {keys_file} ({who})")


def resolve(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    require_key: bool = True,
) -> ClientConfig:
    """Resolve URL, key and collaboration for ``args`` in the module's order.

    Also records the URL and key on ``args`` so that error messages can name the gateway and
    mask the key.

    Raises:
        CommandError: No key anywhere (when ``require_key``), or a bad config file.

    Example:
        >>> args = parser.parse_args(["budget", "--url", "http://gw:8000"])  # doctest: +SKIP
        >>> resolve(args).url.source  # doctest: +SKIP
        'flag --url'
    """
    env = os.environ if environ is None else environ
    profile = args.profile or env.get(ENV_PROFILE) or None
    file = _read_file(env, profile)

    def pick(name: str, flag: str | None, default: str | None) -> Value:
        if getattr(args, name, None):
            return Value(str(getattr(args, name)), f"flag {flag}")
        if env.get(ENV[name]):
            return Value(env[ENV[name]], f"environment {ENV[name]}")
        if name in file.values:
            return Value(file.values[name], file.source)
        return Value(default, "default" if default else "not set")

    url = pick("url", "--url", DEFAULT_URL)
    collaboration = pick("collaboration", "--collaboration", DEFAULT_COLLABORATION)
    demo_flag = bool(args.key_org or args.key_role or args.data_dir)
    if args.key or not demo_flag:
        key = pick("key", "--key", None)
        if key.value is None:
            key = _demo_key(args, chosen_by_flag=False) or key
    else:
        key = _demo_key(args, chosen_by_flag=True) or Value(None, "not set")
    if key.source == file.source and file.readable_by_others:
        print(
            f"warning: {file.path} holds an API key and others may read it: chmod 600 {file.path}",
            file=sys.stderr,
        )
    if require_key and not key.value:
        where, _ = config_path(env)
        raise CommandError(
            f'no API key: pass --key igw_..., set {ENV["key"]}, put key = "igw_..." in {where}, '
            f"or start the demo (make run) so that {DEFAULT_DATA_DIR}/demo-keys.json exists"
        )
    args.resolved_url = url.value
    args.resolved_key = key.value
    return ClientConfig(url, key, collaboration, profile, file.path)


def open_client(args: argparse.Namespace) -> Any:
    """A :class:`clients.GatewayClient` for the resolved URL and key (a context manager)."""
    from clients import GatewayClient
    from clients.retry import RetryPolicy

    config = resolve(args)
    args.collaboration = config.collaboration.value
    retry = None if args.retries is None else RetryPolicy(max_retries=args.retries)
    return GatewayClient(str(config.url.value), config.api_key, retry=retry)


def secret_from_environment(name: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonymisation secret in environment variable ``name``, as UTF-8 bytes.

    The secret travels by environment rather than by flag so that it never appears in the
    process list or the shell history; only the variable's name is ever printed.

    Raises:
        CommandError: The variable is unset or empty.
    """
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        raise CommandError(f"environment variable {name} (--secret-env) is not set or empty")
    return value.encode("utf-8")
