"""One JSON shape for every error: walk a request producing each status and check the body."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

DEMO = "acme-bigmart-cx"
BASE = f"/v1/collaborations/{DEMO}"
PARQUET = "application/vnd.apache.parquet"


def count(epsilon: float, **plan: Any) -> dict[str, Any]:
    return {
        "plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}], **plan},
        "epsilon": epsilon,
    }


@pytest.mark.parametrize("settings", [{"max_upload_bytes": 2048}], indirect=True)
def test_every_error_status_has_the_one_shape(
    api: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    demo_policy: dict[str, Any],
    put_policy: Any,
) -> None:
    put_policy(lambda doc: doc["budgets"]["bigmart"].update(epsilon=0.0))
    buffer = io.BytesIO()
    pq.write_table(demo_tables.loyalty.slice(0, 500), buffer)
    too_big = buffer.getvalue()
    assert len(too_big) > 2048
    bad_policy = dict(demo_policy, rules={"min_group_size": -1})
    acme, bigmart = demo_keys["acme"], demo_keys["bigmart"]
    yaml_ct = {"Content-Type": "application/yaml"}
    json_ct = {"Content-Type": "application/json"}

    cases: list[tuple[int, str, str, str | None, dict[str, Any]]] = [
        (
            400,
            "POST",
            f"{BASE}/queries",
            acme["analyst"],
            {"content": b"{oops", "headers": json_ct},
        ),
        (400, "POST", f"{BASE}/queries", acme["analyst"], {"json": {"sql": "SELECT 1"}}),
        (422, "POST", f"{BASE}/queries/explain", acme["analyst"], {"json": count(0.1, having=[])}),
        (400, "POST", "/v1/orgs", demo_keys["admin"], {"json": {"id": "x"}}),
        (400, "GET", f"{BASE}/audit", acme["compliance"], {"params": {"limit": "many"}}),
        (
            400,
            "POST",
            f"{BASE}/datasets/loyalty",
            bigmart["contributor"],
            {"content": b"", "headers": {"Content-Type": PARQUET}},
        ),
        (401, "GET", "/v1/me", None, {}),
        (401, "GET", f"{BASE}/budget", "igw_0000000000000000.nope", {}),
        (403, "POST", f"{BASE}/queries", acme["contributor"], {"json": count(0.1)}),
        (403, "POST", f"{BASE}/queries", acme["analyst"], {"json": count(0.1, group_by=["email"])}),
        (
            403,
            "POST",
            "/v1/orgs",
            acme["compliance"],
            {"json": {"id": "x", "name": "x", "kind": "brand"}},
        ),
        (404, "GET", "/v1/collaborations/nope", acme["analyst"], {}),
        (404, "GET", "/v1/no-such-route", acme["analyst"], {}),
        (404, "POST", "/v1/orgs/nobody/keys", demo_keys["admin"], {"json": {"role": "analyst"}}),
        (405, "DELETE", f"{BASE}/policy", acme["compliance"], {}),
        (
            409,
            "POST",
            "/v1/orgs",
            demo_keys["admin"],
            {"json": {"id": "acme", "name": "ACME", "kind": "brand"}},
        ),
        (
            409,
            "POST",
            "/v1/collaborations",
            demo_keys["admin"],
            {"json": {"id": DEMO, "name": "x", "members": ["acme", "bigmart"]}},
        ),
        (
            413,
            "POST",
            f"{BASE}/datasets/loyalty",
            bigmart["contributor"],
            {"content": too_big, "headers": {"Content-Type": PARQUET}},
        ),
        (
            415,
            "POST",
            f"{BASE}/datasets/loyalty",
            bigmart["contributor"],
            {"content": b"a,b\n", "headers": {"Content-Type": "text/plain"}},
        ),
        (
            415,
            "PUT",
            f"{BASE}/policy",
            acme["compliance"],
            {"content": b"x: 1", "headers": {"Content-Type": "text/html"}},
        ),
        (
            422,
            "POST",
            f"{BASE}/datasets/loyalty",
            bigmart["contributor"],
            {
                "content": b"customer_key,region\nC1,north\n",
                "headers": {"Content-Type": "text/csv"},
            },
        ),
        (
            422,
            "PUT",
            f"{BASE}/policy",
            acme["compliance"],
            {"content": yaml.safe_dump(bad_policy).encode(), "headers": yaml_ct},
        ),
        (
            422,
            "PUT",
            f"{BASE}/policy",
            acme["compliance"],
            {"content": json.dumps([1, 2]).encode(), "headers": json_ct},
        ),
        (429, "POST", f"{BASE}/queries", bigmart["analyst"], {"json": count(0.1)}),
    ]
    seen = set()
    for status, method, path, key, kwargs in cases:
        response = api.request(method, path, key, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert isinstance(body, dict) and list(body) == ["error"], body
        assert isinstance(body["error"], dict) and sorted(body["error"]) == ["code", "message"]
        code, message = body["error"]["code"], body["error"]["message"]
        assert isinstance(code, str) and code and code.replace("_", "").isalpha(), body
        assert isinstance(message, str) and message, body
        seen.add(status)
    assert seen == {400, 401, 403, 404, 405, 409, 413, 415, 422, 429}


def test_openapi_document_is_served(api: Any) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/v1/health",
        "/v1/collaborations/{c}/queries",
        "/v1/collaborations/{c}/budget",
        "/v1/collaborations/{c}/datasets/{name}",
        "/v1/collaborations/{c}/audit/verify",
    ):
        assert path in paths
