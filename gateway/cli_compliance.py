"""``insightgw policy | audit | budget``: the compliance officer's commands.

Remote commands talk to a running gateway over HTTP with the SDK; two work offline:
``policy validate`` (checks a policy file with the gateway's own parser) and
``audit verify --data-dir D`` (checks the audit chain in a stopped gateway's store).

Exit codes: 0 done; 1 the answer is "no" (an invalid policy, a broken audit chain);
2 the command could not run (bad arguments, unreachable gateway, refused request), with a
one-line message on stderr and never a traceback.

Examples:
    insightgw policy validate policies/acme-bigmart-cx.yaml
    insightgw policy diff new.yaml --collaboration acme-bigmart-cx
    insightgw policy propose new.yaml
    insightgw policy approve 3 --org bigmart
    insightgw audit list --limit 20
    insightgw audit verify --data-dir ./var     # offline: stop the gateway first
    insightgw budget
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import cli_output as show

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_COLLABORATION = "acme-bigmart-cx"
DEFAULT_DATA_DIR = Path("var")
PAGE = 10_000

Command = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """The command cannot run; its message is printed as one line and the exit code is 2."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def guarded(command: Command) -> Command:
    """Run ``command``, turning every expected failure into one line on stderr and exit 2."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        from clients import GatewayError
        from gateway.config import ConfigurationError
        from gateway.store.db import CatalogUnavailable

        try:
            return command(args)
        except GatewayError as exc:
            message = f"{exc.code} ({exc.status}): {exc.message}"
        except httpx.TransportError as exc:
            message = f"cannot reach the gateway at {args.url}: {exc}"
        except (CommandError, ConfigurationError, CatalogUnavailable) as exc:
            message = str(exc)
        except OSError as exc:  # the disk or the system refused: report it, not a traceback
            message = f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}"
        print(f"error: {_one_line(message)}", file=sys.stderr)
        return 2

    return run


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise CommandError(f"cannot read {path}: {reason}") from None


def api_key(args: argparse.Namespace) -> str:
    """``--key``, else ``--org``/``--role``'s key from ``<data-dir>/demo-keys.json``."""
    if args.key:
        return str(args.key)
    keys_file = (args.data_dir or DEFAULT_DATA_DIR) / "demo-keys.json"
    try:
        keys: Any = json.loads(keys_file.read_text())
        key = keys["admin"] if args.role == "admin" else keys[args.org][args.role]
    except FileNotFoundError:
        raise CommandError(
            f"an API key is needed: pass --key igw_... ({keys_file} not found)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CommandError(
            f"no {args.org} {args.role} key in {keys_file}: pass --key igw_..."
        ) from None
    return str(key)


def _client(args: argparse.Namespace) -> Any:
    from clients import GatewayClient

    return GatewayClient(args.url, api_key(args))


# policy -----------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    """Offline: read and check a policy file exactly as the gateway does on PUT."""
    from gateway.domain.errors import InvalidPolicy
    from gateway.domain.policy_document import load_policy_document

    path: Path = args.file
    text = _read_text(path)
    media = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    try:
        _, policy = load_policy_document(text, media)
    except InvalidPolicy as exc:
        print(f"{path}: invalid: {_one_line(exc)}")
        return 1
    datasets, budgets = len(policy.datasets), len(policy.budgets)
    print(
        f"{path}: OK (collaboration {policy.collaboration}, {datasets} "
        f"dataset{'s' * (datasets != 1)}, {budgets} budget{'s' * (budgets != 1)})"
    )
    return 0


def _diff(args: argparse.Namespace) -> int:
    proposed = _read_text(args.file)
    with _client(args) as gw:
        active = gw.policy_document(args.collaboration)
    text = show.unified_diff(
        str(active.get("document", "")),
        proposed,
        f"{args.collaboration} v{active.get('version')} (active)",
        str(args.file),
    )
    out = show.console()
    if not text:
        out.print(f"no differences from the active version {active.get('version')}")
    else:
        show.diff(out, text)
    return 0


def _decision(args: argparse.Namespace, answer: dict[str, Any], verb: str) -> int:
    out = show.console()
    out.print(f"policy version {answer.get('version')} {verb}: {answer.get('status')}")
    out.print(f"approvals: {show.approvals(answer.get('approvals'))}")
    if getattr(args, "show_diff", False) and answer.get("diff"):
        show.diff(out, str(answer["diff"]))
    return 0


def _propose(args: argparse.Namespace) -> int:
    text = _read_text(args.file)
    with _client(args) as gw:
        answer = gw.put_policy(args.collaboration, text)
    return _decision(args, answer, "proposed")


def _decide(action: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as gw:
            method = getattr(gw, f"{action}_policy")
            answer: dict[str, Any] = method(args.collaboration, args.version)
        verbs = {"approve": "approved", "reject": "rejected", "withdraw": "withdrawn"}
        return _decision(args, answer, verbs[action])

    return run


def _show(args: argparse.Namespace) -> int:
    with _client(args) as gw:
        if args.version is None:
            doc = gw.policy_document(args.collaboration)
        else:
            doc = gw.policy_version(args.collaboration, args.version)
    # Header lines are YAML comments, so `policy show > current.yaml` is a valid policy file.
    out = show.console()
    out.print(
        f"# {args.collaboration} policy version {doc.get('version')} ({doc.get('status')}), "
        f"proposed by {doc.get('proposed_by')} at {show.timestamp(doc.get('created_at'))} UTC",
        soft_wrap=True,
    )
    if "approvals" in doc:
        out.print(f"# approvals: {show.approvals(doc.get('approvals'))}", soft_wrap=True)
    out.print(str(doc.get("document", "")).rstrip("\n"), soft_wrap=True)
    return 0


def _versions(args: argparse.Namespace) -> int:
    with _client(args) as gw:
        versions = gw.policy_versions(args.collaboration)
    rows = [
        (
            v.get("version"),
            v.get("status"),
            v.get("proposed_by"),
            show.timestamp(v.get("created_at")),
            show.approvals(v.get("approvals")),
        )
        for v in versions
    ]
    columns = ("version", "status", "proposed by", "created (UTC)", "approvals")
    show.console().print(show.table(f"{args.collaboration}: policy versions", columns, rows))
    return 0


# audit and budget -------------------------------------------------------------------------


def _audit_list(args: argparse.Namespace) -> int:
    with _client(args) as gw:
        if args.after is not None:
            events = gw.audit(args.collaboration, limit=args.limit, after=args.after)
        else:
            events = _newest(gw, args.collaboration, args.limit)
    rows = [
        (
            e.get("seq"),
            show.timestamp(e.get("at")),
            show.actor(e),
            e.get("action"),
            show.summary(e.get("details")),
        )
        for e in events
    ]
    title = f"{args.collaboration}: audit events visible to this key ({len(rows)} shown)"
    columns = ("seq", "at (UTC)", "actor", "action", "summary")
    show.console().print(show.table(title, columns, rows))
    return 0


def _newest(gw: Any, collaboration: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` events: the API pages oldest first, so read to the end."""
    newest: list[dict[str, Any]] = []
    after = 0
    while True:
        page: list[dict[str, Any]] = gw.audit(collaboration, limit=PAGE, after=after)
        newest = (newest + page)[-limit:]
        if len(page) < PAGE:
            return newest
        after = int(page[-1]["seq"])


def _audit_verify(args: argparse.Namespace) -> int:
    if args.data_dir is not None:
        return _verify_offline(args.data_dir)
    with _client(args) as gw:
        verdict = gw.verify_audit(args.collaboration)
    out = show.console()
    if verdict.get("ok"):
        out.print(f"audit chain OK: {verdict.get('events')} events, signed head verified")
        return 0
    out.print(
        f"audit chain BROKEN: first bad entry is seq {verdict.get('first_bad')} "
        f"({verdict.get('events')} events stored)"
    )
    return 1


def _verify_offline(data_dir: Path) -> int:
    """Verify the whole chain in a stopped gateway's store, as the operator, with no server."""
    from gateway.config import Settings
    from gateway.service.context import open_services

    settings = Settings(data_dir=data_dir, demo=False)
    if not settings.catalog_path.is_file():
        raise CommandError(f"no gateway store in {data_dir} ({settings.catalog_path} not found)")
    services = open_services(settings)
    try:
        verdict = services.audit.check()
        first = None
        if verdict.first_bad is not None:
            first = services.db.one(
                'SELECT "at", action FROM audit_events WHERE seq = ?', (verdict.first_bad,)
            )
    finally:
        services.close()
    out = show.console()
    if verdict.ok:
        out.print(f"audit chain OK: {verdict.events} events, signed head verified ({data_dir})")
        return 0
    entry = f" ({first[1]} at {show.timestamp(first[0])} UTC)" if first else ""
    out.print(
        f"audit chain BROKEN: first bad entry is seq {verdict.first_bad}{entry}: "
        f"{verdict.reason} ({verdict.events} events stored in {data_dir})",
        soft_wrap=True,
    )
    return 1


def _budget(args: argparse.Namespace) -> int:
    with _client(args) as gw:
        budgets = gw.budget(args.collaboration)
    zcdp = any("rho_total" in b for b in budgets)
    columns = ["org", "ε total", "ε spent", "ε left", "period", "resets at (UTC)"]
    columns += ["ρ total", "ρ spent", "ρ left"] if zcdp else []
    rows = []
    for b in budgets:
        row = [b.get("org"), b.get("epsilon_total"), b.get("epsilon_spent"), b.get("epsilon_left")]
        row += [b.get("period"), show.timestamp(b.get("resets_at")) if b.get("resets_at") else None]
        row += [b.get("rho_total"), b.get("rho_spent"), b.get("rho_left")] if zcdp else []
        rows.append(row)
    show.console().print(show.table(f"{args.collaboration}: privacy budgets", columns, rows))
    return 0


# parsers ----------------------------------------------------------------------------------


def _remote(p: argparse.ArgumentParser, *, data_dir_help: str | None = None) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    p.add_argument("--key", default=None, help="API key (default: from demo-keys.json)")
    p.add_argument("--org", default="acme", help="whose demo key to use (default acme)")
    p.add_argument(
        "--role",
        default="compliance",
        choices=["admin", "contributor", "analyst", "compliance"],
        help="which demo key of --org to use (default compliance)",
    )
    p.add_argument("--collaboration", "-c", default=DEFAULT_COLLABORATION, help="collaboration id")
    p.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=None,
        help=data_dir_help or "where demo-keys.json is (default ./var)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_compliance_parsers(sub: Any) -> None:
    """Add ``policy``, ``audit`` and ``budget`` to ``insightgw``'s subcommands."""
    policy = sub.add_parser("policy", help="validate, diff, propose and decide on policies")
    policy_sub = policy.add_subparsers(dest="command", required=True)

    validate = policy_sub.add_parser("validate", help="check a policy file (offline)")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=guarded(_validate))

    diff = policy_sub.add_parser("diff", help="a policy file against the active version")
    diff.add_argument("file", type=Path)
    _remote(diff)
    diff.set_defaults(run=guarded(_diff))

    propose = policy_sub.add_parser("propose", help="propose a policy file as a new version")
    propose.add_argument("file", type=Path)
    propose.add_argument("--no-diff", dest="show_diff", action="store_false", help="hide the diff")
    _remote(propose)
    propose.set_defaults(run=guarded(_propose))

    for action, text in (
        ("approve", "approve a proposed version for your organisation"),
        ("reject", "reject a proposed version for your organisation"),
        ("withdraw", "withdraw a proposal of your organisation"),
    ):
        p = policy_sub.add_parser(action, help=text)
        p.add_argument("version", type=_positive)
        _remote(p)
        p.set_defaults(run=guarded(_decide(action)))

    show_p = policy_sub.add_parser("show", help="print the active (or one) policy version")
    show_p.add_argument("--version", type=_positive, default=None)
    _remote(show_p)
    show_p.set_defaults(run=guarded(_show))

    versions = policy_sub.add_parser("versions", help="every version with status and approvals")
    _remote(versions)
    versions.set_defaults(run=guarded(_versions))

    audit = sub.add_parser("audit", help="read and verify the audit trail")
    audit_sub = audit.add_subparsers(dest="command", required=True)
    listing = audit_sub.add_parser("list", help="audit events touching your data")
    listing.add_argument("--limit", type=_positive, default=50, help="at most N (newest)")
    listing.add_argument("--after", type=int, default=None, help="events after seq N, oldest first")
    _remote(listing)
    listing.set_defaults(run=guarded(_audit_list))
    verify = audit_sub.add_parser("verify", help="check the hash chain and the signed head")
    _remote(
        verify,
        data_dir_help="verify the store in this directory OFFLINE (stop the gateway first); "
        "without it, ask the gateway at --url",
    )
    verify.set_defaults(run=guarded(_audit_verify))

    budget = sub.add_parser("budget", help="privacy budgets: spent and left")
    _remote(budget)
    budget.set_defaults(run=guarded(_budget))
