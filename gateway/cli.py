"""``insightgw``: serve the gateway, seed the demo, administer organisations and keys.

Examples:
    insightgw serve --demo --host 127.0.0.1 --port 8000 --data-dir ./var
    insightgw admin bootstrap --data-dir ./var
    insightgw admin rotate-master-key --data-dir ./var
    insightgw admin create-org dealer-north --name "Dealer North" --kind partner --key igw_...
    insightgw policy validate policies/acme-bigmart-cx.yaml
    insightgw audit verify --data-dir ./var

The compliance commands (``policy``, ``audit``, ``budget``) live in :mod:`gateway.cli_compliance`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli_admin import add_rotate_parser
from gateway.cli_compliance import add_compliance_parsers
from gateway.config import ConfigurationError, Settings
from gateway.store.db import CatalogUnavailable


def _settings(args: argparse.Namespace, demo: bool) -> Settings:
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


def _admin_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    keys_file = Path(args.data_dir or "var") / "demo-keys.json"
    if keys_file.exists():
        return str(json.loads(keys_file.read_text())["admin"])
    raise SystemExit("an admin key is needed: pass --key igw_...")


def _remote(args: argparse.Namespace) -> int:
    import httpx

    from clients import GatewayClient, GatewayError

    with GatewayClient(args.url, _admin_key(args)) as client:
        try:
            if args.command == "create-org":
                result: Any = client.create_org(args.id, args.name, args.kind)
            elif args.command == "create-key":
                result = client.create_key(args.org, args.role)
            else:
                members = [m.strip() for m in args.members.split(",") if m.strip()]
                result = client.create_collaboration(args.id, args.name, members)
        except GatewayError as exc:
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            return 2
        except httpx.TransportError as exc:
            print(f"error: cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="insightgw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="area", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port (default 8000)")
        p.add_argument(
            "--data-dir",
            dest="data_dir",
            type=Path,
            default=None,
            help="where the catalog and encrypted files live (default ./var)",
        )

    serve = sub.add_parser("serve", help="run the gateway")
    common(serve)
    serve.add_argument("--demo", action="store_true", help="seed and serve the demo")
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", help="seed the demo without serving")
    common(demo)
    demo.set_defaults(run=_demo)

    adm = sub.add_parser("admin", help="operator commands")
    adm_sub = adm.add_subparsers(dest="command", required=True)
    boot = adm_sub.add_parser("bootstrap", help="create the operator org and an admin key")
    common(boot)
    boot.add_argument("--force", action="store_true")
    boot.set_defaults(run=_bootstrap)
    add_rotate_parser(adm_sub)

    def remote(name: str, help_text: str) -> argparse.ArgumentParser:
        p = adm_sub.add_parser(name, help=help_text)
        p.add_argument("--url", default="http://127.0.0.1:8000")
        p.add_argument("--key", default=None, help="admin API key (default: demo-keys.json)")
        p.add_argument("--data-dir", dest="data_dir", default=None)
        p.set_defaults(run=_remote)
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

    add_compliance_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ConfigurationError, CatalogUnavailable) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
