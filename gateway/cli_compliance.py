"""``insightgw policy | audit | budget``: the compliance officer's commands.

Remote commands talk to a running gateway over HTTP with the SDK; two work offline:
``policy validate`` (checks a policy file with the gateway's own parser) and
``audit verify --data-dir D`` (checks the audit chain in a stopped gateway's store).

Exit codes are those of every ``insightgw`` command (:mod:`gateway.cli_exit`): 0 done; 1 a
broken audit chain; 2 usage; 3-8 the gateway refused (401, 403, 404, 429, 400/422, 409), 7 also
for a policy file that does not validate; 9 the gateway is unreachable. A failure is one line on
stderr, never a traceback. URL, key and collaboration: :mod:`gateway.cli_config`. ``--json``
prints the gateway's answer as it is.

Examples:
    insightgw policy validate policies/acme-bigmart-cx.yaml
    insightgw policy diff new.yaml --collaboration acme-bigmart-cx
    insightgw policy propose new.yaml
    insightgw policy approve 3 --org bigmart
    insightgw policy approve pending --org bigmart   # the newest pending version
    insightgw audit list --limit 20
    insightgw audit verify --data-dir ./var     # offline: stop the gateway first
    insightgw budget
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli_config import add_client_options, open_client
from gateway.cli_exit import CommandError, ExitCode, guarded

PAGE = 10_000
PENDING = "pending"

Command = Callable[[argparse.Namespace], int]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _print_json(answer: Any) -> None:
    print(json.dumps(answer, indent=2, ensure_ascii=False))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise CommandError(f"cannot read {path}: {reason}") from None


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
        if args.json:
            _print_json({"error": {"code": exc.code, "message": _one_line(exc)}})
        else:
            print(f"{path}: invalid: {_one_line(exc)}")
        return ExitCode.INVALID_INPUT
    datasets, budgets = len(policy.datasets), len(policy.budgets)
    if args.json:
        _print_json(
            {"ok": True, "collaboration": policy.collaboration, "datasets": sorted(policy.datasets)}
        )
        return 0
    print(
        f"{path}: OK (collaboration {policy.collaboration}, {datasets} "
        f"dataset{'s' * (datasets != 1)}, {budgets} budget{'s' * (budgets != 1)})"
    )
    return 0


def _diff(args: argparse.Namespace) -> int:
    from gateway import cli_output as show

    proposed = _read_text(args.file)
    with open_client(args) as gw:
        active = gw.policy_document(args.collaboration)
    text = show.unified_diff(
        str(active.get("document", "")),
        proposed,
        f"{args.collaboration} v{active.get('version')} (active)",
        str(args.file),
    )
    if args.json:
        _print_json({"active_version": active.get("version"), "diff": text})
        return 0
    out = show.console()
    if not text:
        out.print(f"no differences from the active version {active.get('version')}")
    else:
        show.diff(out, text)
    return 0


def _decision(args: argparse.Namespace, answer: dict[str, Any], verb: str) -> int:
    if args.json:
        _print_json(answer)
        return 0
    from gateway import cli_output as show

    out = show.console()
    out.print(f"policy version {answer.get('version')} {verb}: {answer.get('status')}")
    out.print(f"approvals: {show.approvals(answer.get('approvals'))}")
    if getattr(args, "show_diff", False) and answer.get("diff"):
        show.diff(out, str(answer["diff"]))
    return 0


def _propose(args: argparse.Namespace) -> int:
    text = _read_text(args.file)
    with open_client(args) as gw:
        answer = gw.put_policy(args.collaboration, text)
    return _decision(args, answer, "proposed")


def _newest_pending(gw: Any, collaboration: str) -> int:
    pending = [
        int(v["version"])
        for v in gw.policy_versions(collaboration)
        if v.get("status") == PENDING and isinstance(v.get("version"), int)
    ]
    if not pending:
        raise CommandError(f"{collaboration} has no pending policy version", ExitCode.NOT_FOUND)
    return max(pending)


def _decide(action: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        with open_client(args) as gw:
            version = args.version
            if version == PENDING:
                version = _newest_pending(gw, args.collaboration)
            method = getattr(gw, f"{action}_policy")
            answer: dict[str, Any] = method(args.collaboration, version)
        verbs = {"approve": "approved", "reject": "rejected", "withdraw": "withdrawn"}
        return _decision(args, answer, verbs[action])

    return run


def _policy_show(args: argparse.Namespace) -> int:
    with open_client(args) as gw:
        if args.version is None:
            doc = gw.policy_document(args.collaboration)
        else:
            doc = gw.policy_version(args.collaboration, args.version)
    if args.json:
        _print_json(doc)
        return 0
    from gateway import cli_output as show

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
    with open_client(args) as gw:
        versions = gw.policy_versions(args.collaboration)
    if args.json:
        _print_json({"versions": versions})
        return 0
    from gateway import cli_output as show

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
    with open_client(args) as gw:
        if args.after is not None:
            events = gw.audit(args.collaboration, limit=args.limit, after=args.after)
        else:
            events = _newest(gw, args.collaboration, args.limit)
    if args.json:
        _print_json({"events": events})
        return 0
    from gateway import cli_output as show

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
        return _verify_offline(args.data_dir, args.json)
    with open_client(args) as gw:
        verdict = gw.verify_audit(args.collaboration)
    code = ExitCode.OK if verdict.get("ok") else ExitCode.FAILED
    if args.json:
        _print_json(verdict)
        return code
    if verdict.get("ok"):
        print(f"audit chain OK: {verdict.get('events')} events, signed head verified")
    else:
        print(
            f"audit chain BROKEN: first bad entry is seq {verdict.get('first_bad')} "
            f"({verdict.get('events')} events stored)"
        )
    return code


def _verify_offline(data_dir: Path, as_json: bool) -> int:
    """Verify the whole chain in a stopped gateway's store, as the operator, with no server."""
    from gateway import cli_output as show
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
    code = ExitCode.OK if verdict.ok else ExitCode.FAILED
    if as_json:
        _print_json(
            {
                "ok": verdict.ok,
                "events": verdict.events,
                "first_bad": verdict.first_bad,
                "reason": verdict.reason,
            }
        )
        return code
    out = show.console()
    if verdict.ok:
        out.print(f"audit chain OK: {verdict.events} events, signed head verified ({data_dir})")
        return code
    entry = f" ({first[1]} at {show.timestamp(first[0])} UTC)" if first else ""
    out.print(
        f"audit chain BROKEN: first bad entry is seq {verdict.first_bad}{entry}: "
        f"{verdict.reason} ({verdict.events} events stored in {data_dir})",
        soft_wrap=True,
    )
    return code


def _budget(args: argparse.Namespace) -> int:
    with open_client(args) as gw:
        budgets = gw.budget(args.collaboration)
    if args.json:
        _print_json({"budgets": budgets})
        return 0
    from gateway import cli_output as show

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


def _remote(p: argparse.ArgumentParser, *, role: str = "compliance", **kwargs: Any) -> None:
    add_client_options(p, org="acme", role=role, **kwargs)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _version(text: str) -> int | str:
    return PENDING if text == PENDING else _positive(text)


def add_compliance_parsers(sub: Any) -> None:
    """Add ``policy``, ``audit`` and ``budget`` to ``insightgw``'s subcommands."""
    policy = sub.add_parser("policy", help="validate, diff, propose and decide on policies")
    policy_sub = policy.add_subparsers(dest="command", required=True)

    validate = policy_sub.add_parser("validate", help="check a policy file (offline)")
    validate.add_argument("file", type=Path)
    validate.add_argument("--json", action="store_true", help="print the verdict as JSON")
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
        p.add_argument("version", type=_version, help="a version number, or 'pending' (newest)")
        _remote(p)
        p.set_defaults(run=guarded(_decide(action)))

    show_p = policy_sub.add_parser("show", help="print the active (or one) policy version")
    show_p.add_argument("--version", type=_positive, default=None)
    _remote(show_p)
    show_p.set_defaults(run=guarded(_policy_show))

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
