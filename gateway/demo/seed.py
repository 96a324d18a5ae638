"""Seed the demo once: two collaborations, their organisations, keys, policies and data.

* ``acme-bigmart-cx``: ACME (brand) and BigMart (retailer) share customer-level tables.
* ``acme-retail-network``: ACME and two retailers, BigMart and ShopCo; the retailers share
  weekly store aggregates (``kind: aggregate``) stacked into a benchmark network, ACME an NPS
  survey (``policies/acme-retail-network.yaml``).

Everything goes through the same use cases a real operator, compliance officer and contributor
would call, so the demo exercises tokenisation, validation, encryption and auditing for real.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.config import ConfigurationError
from gateway.demo.data import generate_demo_tables
from gateway.demo.network_data import generate_network_tables
from gateway.domain.model import Principal
from gateway.service import admin, datasets, policies
from gateway.service.context import Services

COLLABORATION = "acme-bigmart-cx"
POLICY_FILE = Path(__file__).with_name("policy.yaml")
NETWORK_COLLABORATION = "acme-retail-network"
NETWORK_POLICY_FILE = Path(__file__).with_name("network-policy.yaml")
ROLES = ("analyst", "compliance", "contributor")
ORGS = (
    ("operator", "Gateway operator", "operator"),
    ("acme", "ACME Brands", "brand"),
    ("bigmart", "BigMart Retail", "retailer"),
)
NETWORK_ORGS = (("shopco", "ShopCo Stores", "retailer"),)


def keys_path(services: Services) -> Path:
    return services.settings.data_dir / "demo-keys.json"


def _principal(services: Services, secret: str) -> Principal:
    from gateway.service.access import authenticate

    return authenticate(services, f"Bearer {secret}")


def _write_keys(path: Path, keys: dict[str, Any]) -> None:
    tmp = path.with_suffix(".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def seed_demo(
    services: Services, customers: int = 200_000, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Seed the demo if it is not there yet; return the demo keys (DESIGN.md's shape).

    Raises:
        ConfigurationError: the demo exists but its keys file is gone (secrets are not
            recoverable), e.g. after an interrupted first start; the CLI reports it cleanly.
    """
    path = keys_path(services)
    if services.catalog.collaboration(COLLABORATION) is not None:
        if not path.exists():
            raise ConfigurationError(
                f"the demo collaboration exists but {path} is missing; remove "
                f"{services.settings.data_dir} (`make clean` for ./var) to start over"
            )
        keys: dict[str, Any] = json.loads(path.read_text())
        progress(f"demo: reusing the seeded state in {services.settings.data_dir}")
        if services.catalog.collaboration(NETWORK_COLLABORATION) is None:  # seeded before it
            _seed_network(services, keys, customers, progress)
            _write_keys(path, keys)
        return keys

    progress("demo: creating organisations and keys")
    for org_id, name, kind in ORGS:
        admin.create_org(services, None, org_id, name, kind)
    keys = {"admin": admin.issue_key(services, None, "operator", "admin")["secret"]}
    for org_id in ("acme", "bigmart"):
        keys[org_id] = {
            role: admin.issue_key(services, None, org_id, role)["secret"] for role in ROLES
        }
    operator = _principal(services, keys["admin"])
    admin.create_collaboration(
        services, operator, COLLABORATION, "ACME x BigMart customer experience", ["acme", "bigmart"]
    )
    progress(
        "demo: proposing the policy in policies/acme-bigmart-cx.yaml (acme), approving it (bigmart)"
    )
    proposal = policies.put_policy(
        services,
        _principal(services, keys["acme"]["compliance"]),
        COLLABORATION,
        POLICY_FILE.read_bytes(),
        "application/yaml",
    )
    policies.decide(
        services,
        _principal(services, keys["bigmart"]["compliance"]),
        COLLABORATION,
        proposal["version"],
        "approved",
    )

    progress(f"demo: generating {customers:,} customers per partner (half of them shared)")
    tables = generate_demo_tables(customers=customers)
    for org_id, name, table in (
        ("bigmart", "loyalty", tables.loyalty),
        ("acme", "survey", tables.survey),
    ):
        progress(f"demo: uploading {org_id}.{name} (tokenise, validate, encrypt)")
        _upload(services, keys[org_id]["contributor"], COLLABORATION, name, table)
    _seed_network(services, keys, customers, progress)
    _write_keys(path, keys)
    progress(f"demo: keys written to {path}")
    return keys


def _upload(services: Services, secret: str, collab_id: str, name: str, table: pa.Table) -> None:
    body = io.BytesIO()
    pq.write_table(table, body)
    with datasets.open_spool(services) as spool:  # sealed, as a real upload is
        spool.write(body.getbuffer())
        datasets.upload_dataset(
            services, _principal(services, secret), collab_id, name, spool, "parquet"
        )


def _seed_network(
    services: Services, keys: dict[str, Any], customers: int, progress: Callable[[str], None]
) -> None:
    """The second collaboration: a retail network sharing weekly store aggregates.

    Adds ShopCo's keys to ``keys``; ACME proposes the policy, BigMart and ShopCo approve it.
    """
    progress("demo: creating shopco and the acme-retail-network collaboration")
    for org_id, name, kind in NETWORK_ORGS:
        admin.create_org(services, None, org_id, name, kind)
        keys[org_id] = {
            role: admin.issue_key(services, None, org_id, role)["secret"] for role in ROLES
        }
    admin.create_collaboration(
        services,
        _principal(services, keys["admin"]),
        NETWORK_COLLABORATION,
        "ACME retail network benchmark",
        ["acme", "bigmart", "shopco"],
    )
    proposal = policies.put_policy(
        services,
        _principal(services, keys["acme"]["compliance"]),
        NETWORK_COLLABORATION,
        NETWORK_POLICY_FILE.read_bytes(),
        "application/yaml",
    )
    for org_id in ("bigmart", "shopco"):
        policies.decide(
            services,
            _principal(services, keys[org_id]["compliance"]),
            NETWORK_COLLABORATION,
            proposal["version"],
            "approved",
        )
    tables = generate_network_tables(survey_customers=max(2_000, customers // 40))
    progress(
        "demo: uploading bigmart.store_weeks, shopco.store_weeks (aggregates), acme.nps_survey"
    )
    for org_id, table in tables.store_weeks.items():
        _upload(services, keys[org_id]["contributor"], NETWORK_COLLABORATION, "store_weeks", table)
    _upload(
        services,
        keys["acme"]["contributor"],
        NETWORK_COLLABORATION,
        "nps_survey",
        tables.nps_survey,
    )


FIRST_PLAN: dict[str, Any] = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "group_by": ["region", "segment"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
            {"fn": "mean", "column": "nps_score", "as": "avg_nps"},
        ],
    },
    "epsilon": 0.5,
}


def first_query_text(base_url: str, keys: dict[str, Any]) -> str:
    """The banner printed by ``insightgw serve --demo``: keys and a first query to paste."""
    analyst = keys["acme"]["analyst"]
    body = json.dumps(FIRST_PLAN)
    url = f"{base_url}/v1/collaborations/{COLLABORATION}/queries"
    return "\n".join(
        [
            "",
            "Insight Gateway demo is ready.",
            f"  admin key:            {keys['admin']}",
            f"  acme analyst key:     {analyst}",
            f"  acme compliance key:  {keys['acme']['compliance']}",
            f"  bigmart contributor:  {keys['bigmart']['contributor']}",
            "  (all keys: demo-keys.json in the data directory)",
            "",
            "First query (curl):",
            f"  curl -s -X POST {url} \\",
            f"    -H 'Authorization: Bearer {analyst}' -H 'Content-Type: application/json' \\",
            f"    -d '{body}'",
            "",
            "First query (Python):",
            "  from clients import GatewayClient",
            f"  gw = GatewayClient({base_url!r}, {analyst!r})",
            f"  print(gw.query({COLLABORATION!r}, plan={FIRST_PLAN['plan']!r}, epsilon=0.5)"
            ".to_pandas())",
            "",
            f"Web console: {base_url}/console/  (sign in with a key above and {COLLABORATION})",
            "",
        ]
    )
