"""Request bodies with fields the API does not define are refused, not silently ignored."""

from __future__ import annotations

from typing import Any

import pytest

DEMO = "acme-bigmart-cx"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/orgs",
            {"id": "x-org", "name": "X", "kind": "partner", "epsilon_spent": 0},
            "epsilon_spent",
        ),
        ("/v1/orgs/acme/keys", {"role": "analyst", "org": "bigmart"}, "org"),
        (
            "/v1/collaborations",
            {"id": "c2", "name": "C", "members": ["acme", "bigmart"], "owner": "acme"},
            "owner",
        ),
    ],
)
def test_unknown_admin_fields_are_refused(
    path: str,
    body: dict[str, Any],
    field: str,
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    before = snapshot()
    error = assert_error(api.post(path, key=demo_keys["admin"], json=body), 400, "invalid_request")
    assert field in error["message"]
    assert snapshot() == before


def test_unknown_query_fields_are_refused(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    before = snapshot()
    body = {
        "plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]},
        "epsilon": 0.1,
        "epsilon_spent": 0,
    }
    response = api.post(
        f"/v1/collaborations/{DEMO}/queries", key=demo_keys["acme"]["analyst"], json=body
    )
    error = assert_error(response, 400, "invalid_request")
    assert "epsilon_spent" in error["message"]
    assert snapshot() == before
