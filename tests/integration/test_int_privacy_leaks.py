"""Nothing row-level leaves: walk every endpoint as every role and scan what comes back.

The demo is seeded from ``generate_demo_tables(customers=2000)`` with the default seed, so the
test knows every raw customer key, email and phone number, and (with the collaboration secret)
every customer token. No response body, success or error, may contain any of them; a released
count table must not be the exact counts.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml

from gateway.demo.seed import FIRST_PLAN
from gateway.service.tokens import TokenKey

DEMO = "acme-bigmart-cx"
BASE = f"/v1/collaborations/{DEMO}"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
CALLERS = (
    "anonymous",
    "bad key",
    "admin",
    "acme.analyst",
    "acme.compliance",
    "acme.contributor",
    "bigmart.analyst",
    "bigmart.compliance",
    "bigmart.contributor",
)


def count_plan(
    epsilon: float, group_by: list[str], source: str = "bigmart.loyalty", **plan: Any
) -> dict[str, Any]:
    body = {"from": source, "group_by": group_by, "aggregates": [{"fn": "count", "as": "n"}]}
    return {"plan": {**body, **plan}, "epsilon": epsilon}


REGION_BY_CHANNEL = count_plan(0.3, ["region", "channel"])

PLANS: list[dict[str, Any]] = [
    REGION_BY_CHANNEL,
    FIRST_PLAN,  # the demo's printed first query
    {
        "plan": {
            "from": "acme.survey",
            "join": ["bigmart.loyalty"],
            "where": [{"column": "store_id", "op": "eq", "value": "S040"}],
            "group_by": ["segment"],
            "aggregates": [
                {"fn": "sum", "column": "tenure_months", "as": "tenure"},
                {"fn": "sum", "column": "visits_90d", "as": "visits"},
            ],
        },
        "epsilon": 0.4,
    },
    count_plan(1.0, ["product_line"], source="acme.survey"),
]

BAD_QUERIES: list[dict[str, Any]] = [
    count_plan(0.1, ["email"]),
    count_plan(0.1, ["customer_key"]),
    count_plan(0.1, ["customer_id"], source="acme.survey"),
    count_plan(0.1, ["phone"], source="acme.survey"),
    count_plan(0.1, ["region"], where=[{"column": "email", "op": "eq", "value": "x"}]),
    count_plan(2.0, ["region"]),
    count_plan(0.1, ["spend_90d"]),
    {
        "plan": {
            "from": "bigmart.loyalty",
            "aggregates": [{"fn": "sum", "column": "nps_score", "as": "s"}],
        },
        "epsilon": 0.1,
    },
    {"sql": "SELECT customer_key FROM bigmart.loyalty", "epsilon": 0.1},
    {"plan": {"from": "bigmart.loyalty", "select": ["customer_key"]}, "epsilon": 0.1},
]


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def bad_uploads(tables: Any, encode: Any) -> list[tuple[str, bytes, str]]:
    """Invalid files built from real rows, with real keys and emails in the wrong places."""
    loyalty: pa.Table = tables.loyalty.slice(0, 300)
    survey: pa.Table = tables.survey.slice(0, 300)
    emails = loyalty["email"].combine_chunks()
    keys = loyalty["customer_key"].combine_chunks()
    return [
        ("loyalty", encode.parquet(with_column(loyalty, "spend_90d", emails)), PARQUET),
        ("loyalty", encode.csv(with_column(loyalty, "visits_90d", keys)), CSV),
        ("loyalty", encode.arrow(with_column(loyalty, "nps_score", keys)), ARROW),
        ("loyalty", encode.parquet(loyalty.append_column("customer_key_copy", keys)), PARQUET),
        (
            "loyalty",
            encode.parquet(loyalty.rename_columns(["cust", *loyalty.column_names[1:]])),
            PARQUET,
        ),
        ("loyalty", encode.csv(loyalty)[:-37], CSV),
        ("loyalty", encode.parquet(loyalty)[:200], PARQUET),
        ("survey", encode.parquet(with_column(survey, "satisfaction", survey["phone"])), PARQUET),
        (
            "survey",
            encode.parquet(
                with_column(survey, "tenure_months", pa.array([None] * 299 + [1], pa.int64()))
            ),
            PARQUET,
        ),
        ("survey", encode.csv(survey), "application/json"),
        ("purchases", encode.parquet(loyalty), PARQUET),
    ]


class Recorder:
    """Calls the app and keeps every response for the scan."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.seen: list[tuple[str, httpx.Response]] = []

    def __call__(self, label: str, method: str, path: str, key: str | None, **kw: Any) -> Any:
        response: httpx.Response = self.api.request(method, path, key, **kw)
        assert response.status_code < 500, (label, path, response.text)
        self.seen.append((f"{label} {method} {path}", response))
        return response


def _key(keys: dict[str, Any], caller: str) -> str | None:
    if caller == "anonymous":
        return None
    if caller == "bad key":
        return "igw_0123456789abcdef.bad-secret"
    if caller == "admin":
        return str(keys["admin"])
    org, role = caller.split(".")
    return str(keys[org][role])


def walk(
    call: Recorder, caller: str, key: str | None, tables: Any, encode: Any, policy_text: str
) -> None:
    """Every endpoint, with good and bad input, as one caller."""
    call(caller, "GET", "/v1/health", key)
    call(caller, "GET", "/v1/me", key)
    call(caller, "GET", "/v1/nowhere", key)
    for suffix in ("", "/datasets", "/policy", "/budget", "/audit", "/audit/verify"):
        call(caller, "GET", BASE + suffix, key)
    call(caller, "GET", BASE + "/policy", key, headers={"Accept": "application/yaml"})
    call(caller, "GET", BASE + "/audit", key, params={"after": 5, "limit": 3})
    call(caller, "GET", BASE + "/audit", key, params={"limit": 0})
    call(caller, "GET", "/v1/collaborations/no-such-collab/budget", key)
    for body in PLANS:
        call(caller, "POST", BASE + "/queries/explain", key, json=body)
    for body in [*PLANS, PLANS[0]]:  # the last one is a replay
        call(caller, "POST", BASE + "/queries", key, json=body)
    for body in BAD_QUERIES:
        call(caller, "POST", BASE + "/queries", key, json=body)
        call(caller, "POST", BASE + "/queries/explain", key, json=body)
    call(
        caller,
        "POST",
        BASE + "/queries",
        key,
        content=b'{"plan": [',
        headers={"Content-Type": "application/json"},
    )
    # Spend until the budget runs out (distinct questions, so no replays).
    for i in range(6):
        call(
            caller,
            "POST",
            BASE + "/queries",
            key,
            json=count_plan(
                1.0,
                ["region"],
                where=[
                    {
                        "column": "visits_90d" if i == 5 else "store_id",
                        "op": "ne",
                        "value": f"S{i:03d}",
                    }
                ],
            ),
        )
    for name, body, media in bad_uploads(tables, encode):
        call(
            caller,
            "POST",
            f"{BASE}/datasets/{name}",
            key,
            content=body,
            headers={"Content-Type": media},
        )
    call(
        caller,
        "POST",
        f"{BASE}/datasets/loyalty",
        key,
        content=encode.parquet(tables.loyalty),
        headers={"Content-Type": PARQUET},
    )
    call(
        caller,
        "POST",
        f"{BASE}/datasets/survey",
        key,
        content=encode.csv(tables.survey),
        headers={"Content-Type": CSV},
    )
    call(
        caller,
        "PUT",
        BASE + "/policy",
        key,
        content=policy_text.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    call(
        caller,
        "PUT",
        BASE + "/policy",
        key,
        content=b"datasets: [",
        headers={"Content-Type": "application/yaml"},
    )
    call(
        caller,
        "POST",
        "/v1/orgs",
        key,
        json={"id": "probe-retail", "name": "Probe", "kind": "retailer"},
    )
    call(caller, "POST", "/v1/orgs", key, json={"id": "acme", "name": "Again", "kind": "brand"})
    call(caller, "POST", "/v1/orgs/probe-retail/keys", key, json={"role": "analyst"})
    call(
        caller,
        "POST",
        "/v1/collaborations",
        key,
        json={"id": "acme-probe", "name": "Probe", "members": ["acme", "probe-retail"]},
    )


def tokens(token_key: TokenKey, keys: set[str]) -> Iterator[bytes]:
    for key in keys:
        yield token_key.token(key.encode())


def windows(text: str, alphabet: str, width: int) -> Iterator[str]:
    """Every ``width``-long substring of the runs of ``alphabet`` characters in ``text``."""
    for run in re.findall(f"[{alphabet}]{{{width},}}", text):
        for start in range(len(run) - width + 1):
            yield run[start : start + width]


class LeakScanner:
    """Finds raw keys, key numbers, emails, phones and tokens (hex, base64) in a text."""

    def __init__(self, tables: Any, token_key: TokenKey) -> None:
        self.raw_keys = set(tables.loyalty["customer_key"].to_pylist()) | set(
            tables.survey["customer_id"].to_pylist()
        )
        assert len(self.raw_keys) == 3_000
        self.digits = {k[1:] for k in self.raw_keys}
        token_bytes = list(tokens(token_key, self.raw_keys))
        self.token_hex = {t.hex() for t in token_bytes}
        self.token_b64 = {base64.b64encode(t).decode()[:22] for t in token_bytes}
        self.token_b64url = {base64.urlsafe_b64encode(t).decode()[:22] for t in token_bytes}
        self.contacts = set(tables.loyalty["email"].to_pylist()) | set(
            tables.survey["phone"].to_pylist()
        )

    def find(self, text: str) -> list[str]:
        found = []
        if set(re.findall(r"C\d{8}", text)) & self.raw_keys:
            found.append("raw customer key")
        if set(re.findall(r"(?<![0-9A-Za-z])\d{8}(?![0-9A-Za-z])", text)) & self.digits:
            found.append("key number")
        if "example.invalid" in text or self.contacts & set(re.split(r"[\"\s,\[\]{}]", text)):
            found.append("email")
        if "+00-000-" in text:
            found.append("phone")
        if set(windows(text.lower(), "0-9a-f", 32)) & self.token_hex:
            found.append("token hex")
        b64 = set(windows(text, "A-Za-z0-9+/_-", 22))
        if b64 & self.token_b64:
            found.append("token base64")
        if b64 & self.token_b64url:
            found.append("token base64url")
        return found


def discrete_laplace_p_zero(scale: float) -> float:
    """P(X = 0) for discrete Laplace noise: (1 - a) / (1 + a) with a = exp(-1 / scale)."""
    alpha = math.exp(-1.0 / scale)
    return (1.0 - alpha) / (1.0 + alpha)


def test_no_endpoint_returns_keys_tokens_contacts_or_exact_counts(
    api: Any,
    services: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    encode: Any,
    demo_policy: dict[str, Any],
) -> None:
    call = Recorder(api)
    analyst = demo_keys["acme"]["analyst"]

    # 1. A count table is noisy: compare it with the exact counts.
    explained = call("exact", "POST", BASE + "/queries/explain", analyst, json=REGION_BY_CHANNEL)
    (statistic,) = explained.json()["statistics"]
    release = call("exact", "POST", BASE + "/queries", analyst, json=REGION_BY_CHANNEL).json()
    loyalty = demo_tables.loyalty
    exact = collections.Counter(
        zip(loyalty["region"].to_pylist(), loyalty["channel"].to_pylist(), strict=True)
    )
    released = {
        (r["region"], r["channel"]): r["n"]["value"]
        for r in release["rows"]
        if not r.get("suppressed")
    }
    # Each released cell equals the exact count with probability p0 = P(noise = 0), independently
    # (ε 0.3 on one count vector of sensitivity 1: scale 1/0.3, p0 ≈ 0.149). All k cells equal
    # by chance with probability p0^k ≈ 1.2e-10 for the 12 groups (every group here holds at
    # least 62 customers, so suppression is itself unlikely: < 1e-5 per query).
    bound = discrete_laplace_p_zero(statistic["noise_scale"]) ** len(released)
    assert bound < 1e-9, (bound, len(released))
    assert len(exact) == 12
    assert any(released[group] != exact[group] for group in released)

    # 2. Small budgets, so that the walk also meets the over-budget refusals.
    demo_policy["budgets"] = {"acme": {"epsilon": 5.0}, "bigmart": {"epsilon": 4.0}}
    policy_text = yaml.safe_dump(demo_policy, sort_keys=False)
    put = call(
        "setup",
        "PUT",
        BASE + "/policy",
        demo_keys["acme"]["compliance"],
        content=policy_text.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert put.status_code == 200

    # 3. Every endpoint as every caller.
    for caller in CALLERS:
        walk(call, caller, _key(demo_keys, caller), demo_tables, encode, policy_text)
    for caller in ("acme.compliance", "bigmart.compliance"):
        call("final", "GET", BASE + "/audit", _key(demo_keys, caller))
    statuses = {r.status_code for _, r in call.seen}
    assert {200, 201, 400, 401, 403, 404, 409, 415, 422, 429} <= statuses

    # 4. The scan.
    scanner = LeakScanner(demo_tables, services.token_key(DEMO))
    for label, response in call.seen:
        assert scanner.find(response.text) == [], label


def test_the_scanner_finds_each_kind_of_leak(services: Any, demo_tables: Any) -> None:
    scanner = LeakScanner(demo_tables, services.token_key(DEMO))
    key = demo_tables.loyalty["customer_key"][7].as_py()
    token = next(tokens(services.token_key(DEMO), {key}))
    leaks = {
        "raw customer key": f'{{"k": "{key}"}}',
        "key number": f'{{"k": {key[1:]}}}',
        "email": f'["{demo_tables.loyalty["email"][3].as_py()}"]',
        "phone": f'"{demo_tables.survey["phone"][3].as_py()}"',
        "token hex": f'"x{token.hex().upper()}"',
        "token base64": f'"{base64.b64encode(token).decode()}"',
        "token base64url": f'"{base64.urlsafe_b64encode(token).decode().rstrip("=")}"',
    }
    for kind, text in leaks.items():
        assert kind in scanner.find(text), kind
    assert scanner.find('{"hash": "' + hashlib.sha256(b"x").hexdigest() + '"}') == []


@pytest.mark.parametrize("org", ["acme", "bigmart"])
def test_dataset_listing_shows_rows_to_the_owner_only(
    org: str, api: Any, demo_keys: dict[str, Any]
) -> None:
    for role in ("analyst", "compliance", "contributor"):
        listing = api.get(f"{BASE}/datasets", key=demo_keys[org][role])
        assert listing.status_code == 200
        for entry in listing.json()["datasets"]:
            assert entry["version"] == 1
            assert "email" not in entry["columns"] and "phone" not in entry["columns"]
            if entry["owner"] == org:
                assert entry["rows"] == 2_000 and entry["max_rows_per_customer"] == 1
            else:
                assert "rows" not in entry and "max_rows_per_customer" not in entry
                assert "2000" not in str({k: v for k, v in entry.items() if k != "columns"})
    # The audit trail follows the same rule: another party's upload (and its row count) is
    # not visible to a compliance officer of the other organisation.
    other = "bigmart" if org == "acme" else "acme"
    events = api.get(f"{BASE}/audit", key=demo_keys[other]["compliance"]).json()["events"]
    assert not [
        e
        for e in events
        if e["action"] == "dataset.uploaded" and e["details"]["dataset"].startswith(f"{org}.")
    ]
