"""Ingest and query rules added after review: hidden columns, nullable measures, outsiders."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DEMO = "acme-bigmart-cx"


def _query(api: Any, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/v1/collaborations/{DEMO}/queries", key=key, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_hidden_columns_need_not_be_uploaded(demo_tables: Any, encode: Any, upload: Any) -> None:
    """Contact data the policy hides may be left out of the file altogether."""
    without_email = demo_tables.loyalty.drop_columns(["email"])
    answer = upload("bigmart", "loyalty", encode.csv(without_email), encode.CSV)
    assert answer.status_code == 201, answer.text
    assert answer.json()["dropped_columns"] == []
    with_email = upload("bigmart", "loyalty", encode.parquet(demo_tables.loyalty))
    assert with_email.json()["dropped_columns"] == ["email"]


def test_empty_values_of_a_nullable_measure_count_as_zero(
    demo_tables: Any,
    encode: Any,
    upload: Any,
    put_policy: Any,
    api: Any,
    demo_keys: dict[str, Any],
) -> None:
    def nullable_visits(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"]["columns"]["visits_90d"]["nullable"] = True

    put_policy(nullable_visits)
    loyalty = demo_tables.loyalty
    n = loyalty.num_rows
    visits = pa.array([None if i % 2 else 50 for i in range(n)], type=pa.int64())
    table = loyalty.set_column(loyalty.schema.get_field_index("visits_90d"), "visits_90d", visits)
    assert upload("bigmart", "loyalty", encode.parquet(table)).status_code == 201
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "aggregates": [{"fn": "sum", "column": "visits_90d", "as": "visits"}],
        },
        "epsilon": 1.0,
    }
    (row,) = _query(api, demo_keys["acme"]["analyst"], body)["rows"]
    exact = pc.sum(visits).as_py()  # nulls add nothing (not the lower bound, not anything else)
    # Two statistics at ε 0.5; the sum's noise scale is 120: |noise| > 4000 has P < 1e-14.
    assert abs(row["visits"]["value"] - exact) <= 4000


def test_outsiders_leave_no_audit_entries(api: Any, demo_keys: dict[str, Any]) -> None:
    admin = demo_keys["admin"]
    assert (
        api.post(
            "/v1/orgs", key=admin, json={"id": "outsider", "name": "Outsider", "kind": "partner"}
        ).status_code
        == 201
    )
    key = api.post("/v1/orgs/outsider/keys", key=admin, json={"role": "analyst"}).json()["secret"]
    compliance = demo_keys["acme"]["compliance"]
    before = api.get(f"/v1/collaborations/{DEMO}/audit", key=compliance).json()["events"]
    refused = api.post(
        f"/v1/collaborations/{DEMO}/queries",
        key=key,
        json={"plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1},
    )
    assert refused.status_code == 404
    after = api.get(f"/v1/collaborations/{DEMO}/audit", key=compliance).json()["events"]
    assert after == before
    bigmart = api.get(f"/v1/collaborations/{DEMO}/audit", key=demo_keys["bigmart"]["compliance"])
    assert all(e["actor"]["org"] != "outsider" for e in bigmart.json()["events"])
