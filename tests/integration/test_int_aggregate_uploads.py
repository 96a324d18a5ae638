"""Aggregate uploads through the API: rows are checked against their owner's declarations.

The demo's ``acme-retail-network`` policy declares ``shopco.store_weeks`` with
``count_column: customers``, ``min_row_count: 10``, ``max_rows_per_unit: 13`` and
``per_unit_bounds`` of ``[0, 500]`` for spend and ``[0, 1]`` for promoters. A refused upload is
422 ``invalid_dataset`` naming how many rows broke which rule (its policy path), stores nothing
and echoes no value of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gateway.demo.network_data import generate_network_tables

NETWORK = "acme-retail-network"
BASE = f"/v1/collaborations/{NETWORK}"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
RULE = "datasets.shopco.store_weeks"
ODD = 987_654.321  # a distinctive value no refusal may echo


@pytest.fixture(scope="module")
def store_weeks() -> pa.Table:
    table: pa.Table = generate_network_tables(survey_customers=0).store_weeks["shopco"]
    return table.slice(0, 40)


def _set(table: pa.Table, column: str, rows: list[int], value: Any) -> pa.Table:
    values = table.column(column).to_pylist()
    for i in rows:
        values[i] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, type=table.schema.field(column).type))


def _state(api: Any, keys: dict[str, Any], services: Any) -> dict[str, Any]:
    datasets = api.get(f"{BASE}/datasets", key=keys["shopco"]["contributor"]).json()
    versions = services.db.one("SELECT COUNT(*) FROM dataset_versions")
    return {"datasets": datasets, "versions": versions}


Edit = Callable[[pa.Table], pa.Table]

REFUSED: list[tuple[str, Edit, str, str]] = [
    (
        "rows under the minimum count",
        lambda t: _set(_set(t, "customers", [3, 7], 9), "spend", [3, 7], 9.0),
        "the upload has 2 rows aggregating fewer than 10 customers",
        f"{RULE}.min_row_count",
    ),
    (
        "a negative count",
        lambda t: _set(t, "customers", [5], -12),
        "holds a negative count in 1 row",
        f"{RULE}.count_column",
    ),
    (
        "spend beyond count x 500",
        lambda t: _set(t, "spend", [0, 1, 2], ODD),
        "the upload has 3 rows where column 'spend' lies outside count x per_unit_bounds [0, 500]",
        f"{RULE}.columns.spend.per_unit_bounds",
    ),
    (
        "more promoters than customers",
        lambda t: _set(t, "promoters", [4], 10_000),
        "the upload has 1 row where column 'promoters' lies outside count x per_unit_bounds [0, 1]",
        f"{RULE}.columns.promoters.per_unit_bounds",
    ),
    (
        "negative spend",
        lambda t: _set(t, "spend", [9], -ODD),
        "the upload has 1 row where column 'spend'",
        f"{RULE}.columns.spend.per_unit_bounds",
    ),
]


@pytest.mark.parametrize(
    ("edit", "message", "path"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_rows_breaking_a_declaration_are_refused_and_nothing_is_stored(
    edit: Edit,
    message: str,
    path: str,
    fmt: str,
    store_weeks: pa.Table,
    api: Any,
    demo_keys: dict[str, Any],
    services: Any,
    upload: Any,
    encode: Any,
    assert_error: Any,
) -> None:
    before = _state(api, demo_keys, services)
    table = edit(store_weeks)
    body, media = (encode.parquet(table), PARQUET) if fmt == "parquet" else (encode.csv(table), CSV)
    error = assert_error(
        upload("shopco", "store_weeks", body, media, collab=NETWORK), 422, "invalid_dataset"
    )
    assert message in error["message"] and f"(policy rule: {path})" in error["message"]
    assert "987654" not in error["message"]
    assert _state(api, demo_keys, services) == before
    events = api.get(f"{BASE}/audit", key=demo_keys["shopco"]["compliance"]).json()["events"]
    assert events[-1]["action"] == "dataset.rejected"
    assert "987654" not in str(events[-1])


def test_a_count_that_is_not_an_integer_is_refused(
    store_weeks: pa.Table,
    api: Any,
    demo_keys: dict[str, Any],
    services: Any,
    upload: Any,
    assert_error: Any,
) -> None:
    before = _state(api, demo_keys, services)
    text = store_weeks.to_pandas().astype({"customers": float})
    text.loc[2, "customers"] = 12.5
    body = text.to_csv(index=False).encode()
    error = assert_error(
        upload("shopco", "store_weeks", body, CSV, collab=NETWORK), 422, "invalid_dataset"
    )
    assert "'customers'" in error["message"] and "12.5" not in error["message"]
    assert _state(api, demo_keys, services) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.append_column(
                "customer_id", pa.array([f"C{i}" for i in range(t.num_rows)])
            ),
            "column 7 of the file is not described",
        ),
        (lambda t: t.drop_columns(["customers"]), "column 'customers' is missing"),
    ],
    ids=["a customer key", "no count column"],
)
def test_an_aggregate_file_has_its_count_and_no_customer_key(
    edit: Edit,
    message: str,
    store_weeks: pa.Table,
    api: Any,
    demo_keys: dict[str, Any],
    services: Any,
    upload: Any,
    encode: Any,
    assert_error: Any,
) -> None:
    before = _state(api, demo_keys, services)
    response = upload("shopco", "store_weeks", encode.parquet(edit(store_weeks)), collab=NETWORK)
    assert message in assert_error(response, 422, "invalid_dataset")["message"]
    assert _state(api, demo_keys, services) == before


def test_a_valid_aggregate_upload_is_stored_without_a_token(
    store_weeks: pa.Table, api: Any, demo_keys: dict[str, Any], upload: Any, encode: Any
) -> None:
    exact = store_weeks.set_column(
        store_weeks.schema.get_field_index("spend"),
        "spend",
        pc.multiply(store_weeks.column("customers").cast(pa.float64()), 500.0),  # the bound itself
    )
    response = upload("shopco", "store_weeks", encode.csv(exact), CSV, collab=NETWORK)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["version"] == 2 and answer["rows"] == 40
    assert answer["schema"] == {
        "region": "string",
        "store_id": "string",
        "week": "int64",
        "customers": "int64",
        "spend": "double",
        "promoters": "int64",
    }
    listing = api.get(f"{BASE}/datasets", key=demo_keys["acme"]["analyst"]).json()["datasets"]
    entry = next(d for d in listing if d["id"] == "shopco.store_weeks")
    assert entry["kind"] == "aggregate" and entry["version"] == 2 and "rows" not in entry
