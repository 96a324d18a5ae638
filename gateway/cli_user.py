"""``insightgw upload | query | explain | datasets | whoami | config``: the everyday commands.

Contributors upload files; analysts look at what they may ask, explain a query (cost and
expected error, nothing spent) and run it. Every command talks to the gateway through the SDK
(:mod:`clients`), takes its URL, key and collaboration from :mod:`gateway.cli_config`, prints
for people by default and the gateway's JSON answer unchanged with ``--json``, and exits with
the codes of :mod:`gateway.cli_exit`.

Examples:
    insightgw upload loyalty.parquet --dataset loyalty --org bigmart
    insightgw upload raw.csv --dataset loyalty --pseudonymise-key customer_key --secret-env SECRET
    insightgw explain "SELECT region, AVG(spend_90d) AS s FROM bigmart.loyalty GROUP BY region" \\
        --epsilon 0.5
    insightgw query --file question.sql --epsilon 0.5
    insightgw query --plan plan.json --accuracy 5% --at-count 1000 --json
    insightgw config show
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from gateway.cli_config import add_client_options, open_client, resolve, secret_from_environment
from gateway.cli_exit import CommandError, ExitCode, guarded, mask_key

FORMATS = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "arrow": "application/vnd.apache.arrow.stream",
}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".arrow": "arrow"}
_SUFFIXES[".arrows"] = "arrow"
_REQUEST_FIELDS = frozenset({"plan", "sql", "epsilon", "accuracy"})


def _print_json(answer: Any) -> None:
    print(json.dumps(answer, indent=2, ensure_ascii=False))


def _console() -> Any:
    from gateway import cli_output

    return cli_output.console()


def _read_text(path: Path) -> str:
    """A local input file (``-`` is stdin); unreadable is a usage error (exit 2)."""
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise CommandError(f"cannot read {path}: {reason}") from None


# upload -------------------------------------------------------------------------------------


def _format_of(args: argparse.Namespace) -> str:
    fmt = args.format or _SUFFIXES.get(args.file.suffix.lower())
    if fmt is None:
        raise CommandError(
            f"cannot tell the format of {args.file.name} from its suffix: pass --format "
            f"{'|'.join(FORMATS)}"
        )
    return str(fmt)


def _pseudonymised(path: Path, fmt: str, column: str, secret: bytes) -> Any:
    """The file as an Arrow table with ``column`` replaced by HMAC-SHA256 tokens."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from clients.pseudonymise import pseudonymise_table

    try:
        if fmt == "parquet":
            table = pq.read_table(path)
        elif fmt == "csv":
            # Keys keep their exact text (leading zeros), so every partner gets the same token.
            options = pa_csv.ConvertOptions(column_types={column: pa.string()})
            table = pa_csv.read_csv(path, convert_options=options)
        else:
            with pa.ipc.open_stream(path) as reader:
                table = reader.read_all()
    except (pa.ArrowException, ValueError) as exc:
        raise CommandError(f"cannot read {path} as {fmt}: {exc}", ExitCode.INVALID_INPUT) from None
    try:
        return pseudonymise_table(table, column, secret)
    except KeyError:
        raise CommandError(f"{path} has no column {column!r}", ExitCode.INVALID_INPUT) from None
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.INVALID_INPUT) from None


def _upload(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    path: Path = args.file
    if not path.is_file():
        raise CommandError(f"no file to upload at {path}")
    fmt = _format_of(args)
    source: Any = path
    content_type: str | None = FORMATS[fmt]
    total: int | None = path.stat().st_size
    if args.pseudonymise_key:
        secret = secret_from_environment(args.secret_env)
        source = _pseudonymised(path, fmt, args.pseudonymise_key, secret)
        content_type, total = None, None  # a table is sent as Parquet, its size known later
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    ]
    progress = Progress(*columns, console=Console(stderr=True), disable=args.no_progress)
    with open_client(args) as gw, progress:
        task = progress.add_task(f"upload {path.name}", total=total)

        def sent(done: int) -> None:
            progress.update(task, completed=done)
            if total is not None and done >= total:
                progress.update(task, description=f"sent {path.name}; gateway checking")

        answer: dict[str, Any] = gw.upload(
            args.collaboration, args.dataset, source, content_type=content_type, progress=sent
        )
        progress.update(task, description=f"uploaded {path.name}")
    if args.json:
        _print_json(answer)
        return 0
    out = _console()
    rows, per_customer = answer.get("rows"), answer.get("max_rows_per_customer")
    out.print(
        f"uploaded {answer.get('dataset')} version {answer.get('version')}: {rows} rows, at most "
        f"{per_customer} per customer (policy v{answer.get('policy_version')})",
        soft_wrap=True,
    )
    schema = answer.get("schema") or {}
    out.print("columns: " + ", ".join(f"{c} ({t})" for c, t in schema.items()), soft_wrap=True)
    if answer.get("dropped_columns"):
        out.print("dropped as hidden by the policy: " + ", ".join(answer["dropped_columns"]))
    if args.pseudonymise_key:
        out.print(
            f"{args.pseudonymise_key} was pseudonymised here (HMAC-SHA256 with ${args.secret_env}) "
            "before upload; the gateway re-keys it again"
        )
    return 0


# query and explain --------------------------------------------------------------------------


def _accuracy(text: str) -> float | tuple[str, float]:
    """``20`` (absolute, in the aggregate's units) or ``5%`` (relative)."""
    relative = text.endswith("%")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a percentage: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return ("rel", value / 100) if relative else value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text!r}")
    return value


def query_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body: SQL text, ``--file`` or ``--plan``, with ``--epsilon`` or ``--accuracy``.

    A ``--plan`` file holds either a bare plan (``{"from": …}``) or a whole request
    (``{"plan": …, "epsilon": …}``); flags override the ε or accuracy it carries.

    Raises:
        CommandError: No query, two queries, no ε or accuracy (exit 2), or a plan file that is
            not a JSON object (exit 7).
    """
    given = [x for x in (args.sql, args.file, args.plan) if x is not None]
    if len(given) != 1:
        raise CommandError("give exactly one query: SQL text, --file q.sql or --plan plan.json")
    if args.sql is not None:
        body: dict[str, Any] = {"sql": args.sql}
    elif args.file is not None:
        body = {"sql": _read_text(args.file)}
    else:
        try:
            document: Any = json.loads(_read_text(args.plan))
        except ValueError as exc:
            raise CommandError(f"{args.plan} is not JSON: {exc}", ExitCode.INVALID_INPUT) from None
        if not isinstance(document, dict):
            raise CommandError(f"{args.plan} must hold a JSON object", ExitCode.INVALID_INPUT)
        body = dict(document) if {"plan", "sql"} & set(document) else {"plan": document}
    if args.epsilon is not None:
        body.pop("accuracy", None)
        body["epsilon"] = args.epsilon
    elif args.accuracy is not None:
        body.pop("epsilon", None)
        kind, value = args.accuracy if isinstance(args.accuracy, tuple) else ("abs", args.accuracy)
        target: dict[str, Any] = {kind: value}
        if args.at_count is not None:
            target["at_count"] = args.at_count
        if args.confidence is not None:
            target["confidence"] = args.confidence
        body["accuracy"] = target
    if "epsilon" not in body and "accuracy" not in body:
        raise CommandError(
            "say what to spend: --epsilon E, or --accuracy 20 | 5% (with --at-count)"
        )
    return body


def send_query(gw: Any, collaboration: str, body: dict[str, Any], *, explain: bool) -> Any:
    """POST the body to ``…/queries`` (or ``…/explain``) through the SDK; the JSON answer.

    Raises:
        CommandError: A field the API does not define, or a value the SDK refuses before
            sending (exit 7); nothing was sent.
    """
    unknown = sorted(set(body) - _REQUEST_FIELDS)
    if unknown:
        raise CommandError(
            f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(_REQUEST_FIELDS))})",
            ExitCode.INVALID_INPUT,
        )
    method = gw.explain if explain else gw.query
    try:
        result = method(
            collaboration,
            plan=body.get("plan"),
            sql=body.get("sql"),
            epsilon=body.get("epsilon"),
            accuracy=body.get("accuracy"),
        )
    except (ValueError, TypeError) as exc:
        raise CommandError(f"not sent: {exc}", ExitCode.INVALID_INPUT) from None
    return result.raw


def _query(args: argparse.Namespace) -> int:
    body = query_body(args)
    with open_client(args) as gw:
        answer = send_query(gw, args.collaboration, body, explain=args.explain_only)
    if args.json:
        _print_json(answer)
        return 0
    from gateway import cli_release

    if args.explain_only:
        cli_release.print_explanation(_console(), answer)
    else:
        cli_release.print_release(_console(), answer)
    return 0


# datasets, whoami, config -------------------------------------------------------------------


def _datasets(args: argparse.Namespace) -> int:
    with open_client(args) as gw:
        answer = gw.datasets(args.collaboration)
    if args.json:
        _print_json(answer)
        return 0
    from gateway import cli_output as show

    out = _console()
    out.print(f"{args.collaboration}: policy version {answer.get('policy_version')}")
    for ds in answer.get("datasets") or []:
        rows = []
        for name, rule in (ds.get("columns") or {}).items():
            allowed = rule.get("keys") or rule.get("bounds")
            rows.append((name, rule.get("use"), rule.get("type"), allowed, rule.get("aggregates")))
        version = f"version {ds['version']}" if ds.get("version") else "not uploaded yet"
        title = f"{ds.get('id')} (owner {ds.get('owner')}, {version})"
        columns = ("column", "use", "type", "keys or bounds", "aggregates")
        cells = [[", ".join(map(str, v)) if isinstance(v, list) else v for v in r] for r in rows]
        out.print(show.table(title, columns, cells))
    return 0


def _whoami(args: argparse.Namespace) -> int:
    with open_client(args) as gw:
        answer = gw.me()
    if args.json:
        _print_json(answer)
    else:
        print(f"{answer.get('org')} {answer.get('role')} (key id {answer.get('key_id')})")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    config = resolve(args, require_key=False)
    key = mask_key(config.key.value) if config.key.value else None
    settings = {
        "url": (config.url.value, config.url.source),
        "key": (key, config.key.source),
        "collaboration": (config.collaboration.value, config.collaboration.source),
    }
    if args.json:
        _print_json(
            {
                "config_file": str(config.config_file) if config.config_file else None,
                "profile": config.profile,
                **{k: {"value": v, "source": s} for k, (v, s) in settings.items()},
            }
        )
        return 0
    from gateway import cli_output as show

    rows = [(k, v, s) for k, (v, s) in settings.items()]
    out = _console()
    out.print(show.table("insightgw configuration", ("setting", "value", "from"), rows))
    out.print(f"config file: {config.config_file or 'none'}; profile: {config.profile or 'none'}")
    return 0


# parsers ------------------------------------------------------------------------------------


def _add_query_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("sql", nargs="?", default=None, help="the query as SQL text")
    p.add_argument(
        "--file", "-f", type=Path, default=None, help="read SQL from a file (- is stdin)"
    )
    p.add_argument(
        "--plan", type=Path, default=None, help="a JSON plan (or whole request) file (- is stdin)"
    )
    spend = p.add_mutually_exclusive_group()
    spend.add_argument("--epsilon", "-e", type=_positive_float, default=None, help="ε to spend")
    spend.add_argument(
        "--accuracy",
        type=_accuracy,
        default=None,
        help="target 95%% half-width instead of ε: 20 (absolute) or 5%% (relative)",
    )
    p.add_argument("--at-count", type=int, default=None, help="group size the target is for")
    p.add_argument("--confidence", type=float, default=None, help="target confidence (0.95)")


def add_user_parsers(sub: Any) -> None:
    """Add the contributor and analyst commands to ``insightgw``'s subcommands."""
    upload = sub.add_parser(
        "upload",
        help="upload a Parquet, CSV or Arrow file as a new dataset version",
        description="Stream FILE to the gateway as a new version of your dataset, with progress "
        "on stderr. The gateway checks it against the policy, tokenises the customer key, drops "
        "hidden columns and stores it encrypted.",
    )
    upload.add_argument("file", type=Path, help="the file; format from its suffix or --format")
    upload.add_argument("--dataset", "-d", required=True, help="dataset name in your organisation")
    upload.add_argument("--format", choices=sorted(FORMATS), default=None)
    upload.add_argument(
        "--pseudonymise-key",
        metavar="COLUMN",
        default=None,
        help="replace COLUMN by HMAC-SHA256 tokens here, before upload (needs --secret-env)",
    )
    upload.add_argument(
        "--secret-env",
        metavar="VAR",
        default=None,
        help="environment variable holding the secret the partners share (16+ bytes)",
    )
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_client_options(upload, org="bigmart", role="contributor")
    upload.set_defaults(run=guarded(_checked_upload))

    for name, explain, text in (
        ("query", False, "run a DP query: values with 95% intervals, cost and budget left"),
        ("explain", True, "cost and expected 95% error of a query; spends nothing"),
    ):
        p = sub.add_parser(name, help=text.replace("%", "%%"), description=text)
        _add_query_input(p)
        add_client_options(p, org="acme", role="analyst")
        p.set_defaults(run=guarded(_query), explain_only=explain)

    datasets = sub.add_parser("datasets", help="the datasets and columns the policy lets you use")
    add_client_options(datasets, org="acme", role="analyst")
    datasets.set_defaults(run=guarded(_datasets))

    whoami = sub.add_parser("whoami", help="the organisation and role of your key")
    add_client_options(whoami, org="acme", role="analyst", collaboration=False)
    whoami.set_defaults(run=guarded(_whoami))

    config = sub.add_parser("config", help="where the URL, key and collaboration come from")
    config_sub = config.add_subparsers(dest="command", required=True)
    show = config_sub.add_parser("show", help="each setting and its source (key masked)")
    add_client_options(show, org="acme", role="analyst")
    show.set_defaults(run=guarded(_config_show))


def _checked_upload(args: argparse.Namespace) -> int:
    if bool(args.pseudonymise_key) != bool(args.secret_env):
        raise CommandError("--pseudonymise-key and --secret-env go together")
    return _upload(args)
