"""``insightgw``: run the gateway, and every user task against it from the shell.

Examples:
    insightgw serve --demo --host 127.0.0.1 --port 8000 --data-dir ./var
    insightgw query "SELECT region, COUNT(*) AS n FROM bigmart.loyalty GROUP BY region" -e 0.5
    insightgw upload loyalty.parquet --dataset loyalty
    insightgw policy approve pending --org bigmart
    insightgw admin create-org dealer-north --name "Dealer North" --kind partner

Commands live by audience: operators here (``serve``, ``demo``, ``demo-files``, ``admin``),
contributors and analysts in :mod:`gateway.cli_user`, compliance officers in
:mod:`gateway.cli_compliance`. Modules are imported when a command runs, not to build the
parser, so ``insightgw --help`` answers in well under half a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli_admin import add_rotate_parser
from gateway.cli_compliance import add_compliance_parsers
from gateway.cli_config import add_client_options, open_client
from gateway.cli_exit import EPILOG, guarded
from gateway.cli_user import add_user_parsers

if TYPE_CHECKING:
    from gateway.config import Settings

DESCRIPTION = """\
Insight Gateway: differentially private answers over partners' customer tables.

Client commands find the gateway URL, API key and collaboration in this order: flags (--url,
--key, -c), environment (INSIGHTGW_URL, INSIGHTGW_KEY, INSIGHTGW_COLLABORATION), the config
file ($INSIGHTGW_CONFIG or ~/.config/insightgw/config.toml), then the demo (./var/demo-keys.json
written by `make run`). `insightgw config show` tells which one won; keys are never printed.
"""


def _settings(args: argparse.Namespace, demo: bool) -> Settings:
    from gateway.config import Settings

    overrides: dict[str, Any] = {"demo": demo}
    for name in ("host", "port", "data_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.api.app import create_app
    from gateway.demo.seed import first_query_text, seed_demo
    from gateway.service.context import open_services

    settings = _settings(args, demo=args.demo)
    services = open_services(settings)
    keys = seed_demo(services, settings.demo_customers) if settings.demo else None
    if keys is not None:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        print(first_query_text(f"http://{host}:{settings.port}", keys), flush=True)
    app = create_app(services=services)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.seed import first_query_text, seed_demo
    from gateway.service.context import open_services

    settings = _settings(args, demo=True)
    services = open_services(settings)
    try:
        keys = seed_demo(services, settings.demo_customers)
    finally:
        services.close()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(first_query_text(f"http://{host}:{settings.port}", keys))
    return 0


def _demo_files(args: argparse.Namespace) -> int:
    """Write the demo tables as files to upload: the same rows `serve --demo` seeds."""
    from gateway.config import Settings
    from gateway.demo.data import write_demo_files

    customers = args.customers or Settings(demo=True).demo_customers
    for name, path in sorted(write_demo_files(args.directory, customers=customers).items()):
        print(f"{name}: {path}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    """Create the operator organisation and an admin key offline (gateway not running)."""
    from gateway.service import admin
    from gateway.service.context import open_services

    services = open_services(_settings(args, demo=False))
    try:
        if services.catalog.org("operator") is None:
            admin.create_org(services, None, "operator", "Gateway operator", "operator")
        elif services.catalog.count_keys("admin") and not args.force:
            print("an admin key exists already; pass --force to issue another", file=sys.stderr)
            return 1
        key = admin.issue_key(services, None, "operator", "admin")
    finally:
        services.close()
    print(json.dumps(key, indent=2))
    print("Store this secret now: it is shown once.", file=sys.stderr)
    return 0


def _remote(args: argparse.Namespace) -> int:
    """The admin API calls; the answer is JSON (a new key's secret is in it, once)."""
    with open_client(args) as client:
        if args.command == "create-org":
            result: Any = client.create_org(args.id, args.name, args.kind)
        elif args.command == "create-key":
            result = client.create_key(args.org, args.role)
        else:
            members = [m.strip() for m in args.members.split(",") if m.strip()]
            result = client.create_collaboration(args.id, args.name, members)
    print(json.dumps(result, indent=2))
    return 0


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=None,
        help="where the catalog and encrypted files live (default ./var)",
    )


def _add_admin_parsers(sub: Any) -> None:
    adm = sub.add_parser("admin", help="operator commands")
    adm_sub: Any = adm.add_subparsers(dest="command", required=True)
    boot = adm_sub.add_parser("bootstrap", help="create the operator org and an admin key")
    _server_options(boot)
    boot.add_argument("--force", action="store_true")
    boot.set_defaults(run=_bootstrap)
    add_rotate_parser(adm_sub)

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = adm_sub.add_parser(name, help=help_text)
        add_client_options(p, org=None, role="admin", collaboration=False)
        p.set_defaults(run=guarded(_remote))
        return p

    org = remote("create-org", "create an organisation")
    org.add_argument("id")
    org.add_argument("--name", required=True)
    org.add_argument("--kind", required=True, choices=["brand", "retailer", "partner", "operator"])
    key = remote("create-key", "issue an API key (secret shown once)")
    key.add_argument("org")
    key.add_argument(
        "--role", required=True, choices=["admin", "contributor", "analyst", "compliance"]
    )
    collab = remote("create-collaboration", "create a collaboration")
    collab.add_argument("id")
    collab.add_argument("--name", required=True)
    collab.add_argument("--members", required=True, help="comma-separated organisation ids")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and the exit-code table's line breaks."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; building it imports nothing heavy."""
    parser = argparse.ArgumentParser(
        prog="insightgw", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    sub = parser.add_subparsers(dest="area", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    _server_options(serve)
    serve.add_argument("--demo", action="store_true", help="seed and serve the demo")
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", help="seed the demo without serving")
    _server_options(demo)
    demo.set_defaults(run=_demo)

    files = sub.add_parser("demo-files", help="write the demo tables as files to upload")
    files.add_argument("directory", type=Path, nargs="?", default=Path("var/demo-files"))
    files.add_argument(
        "--customers", type=int, default=None, help="rows per table (default: as the demo seeds)"
    )
    files.set_defaults(run=_demo_files)

    add_user_parsers(sub)
    add_compliance_parsers(sub)
    _add_admin_parsers(sub)
    for choice in sub.choices.values():
        _with_epilog(choice)
    return parser


def _with_epilog(parser: argparse.ArgumentParser) -> None:
    """Every command's --help ends with the exit codes."""
    if parser.epilog is None:
        parser.epilog = EPILOG
        parser.formatter_class = _Formatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_epilog(child)


def main(argv: list[str] | None = None) -> int:
    """Run ``insightgw``; the return value is the exit code (see ``--help``)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except Exception as exc:
        from gateway.config import ConfigurationError
        from gateway.store.db import CatalogUnavailable

        if not isinstance(exc, ConfigurationError | CatalogUnavailable):
            raise
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
