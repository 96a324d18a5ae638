"""Dataset uploads: refusals that store nothing and echo no data, and the happy paths.

Bad files carry a distinctive value (``SECRET-VALUE-123``) in the offending place; no response
and no audit event may contain it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from gateway.service.tokens import TokenKey

DEMO = "acme-bigmart-cx"
SECRET = "SECRET-VALUE-123"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
ROWS = 200


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def with_secret_strings(table: pa.Table, name: str) -> pa.Table:
    return replace_column(table, name, pa.array([SECRET] * table.num_rows))


def csv_text(table: pa.Table, column: str, text: str) -> bytes:
    """CSV of ``table`` with every cell of ``column`` replaced by ``text`` (written by hand)."""
    names = table.column_names
    lines = [",".join(names)]
    for row in table.to_pylist():
        cells = [text if n == column else ("" if row[n] is None else str(row[n])) for n in names]
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode()


# Each case builds (body, content type) from the base loyalty slice and the Encode helper.
Builder = Callable[[pa.Table, Any], tuple[bytes, str]]

INVALID_DATASET: list[tuple[str, Builder, str]] = [
    (
        "unknown column",
        lambda t, e: (
            e.parquet(t.append_column("favourite_colour", pa.array([SECRET] * ROWS))),
            PARQUET,
        ),
        "column 9 of the file",  # by position: a column name in a file may be data
    ),
    (
        "unknown column csv",
        lambda t, e: (e.csv(t.append_column("favourite_colour", pa.array([SECRET] * ROWS))), CSV),
        "column 9 of the file",
    ),
    (
        "missing column",
        lambda t, e: (
            e.parquet(with_secret_strings(t, "region").drop_columns(["nps_score"])),
            PARQUET,
        ),
        "nps_score",
    ),
    (
        "missing customer key",
        lambda t, e: (
            e.parquet(with_secret_strings(t, "region").drop_columns(["customer_key"])),
            PARQUET,
        ),
        "customer_key",
    ),
    (
        "string in float measure parquet",
        lambda t, e: (e.parquet(with_secret_strings(t, "spend_90d")), PARQUET),
        "spend_90d",
    ),
    (
        "string in float measure csv",
        lambda t, e: (e.csv(with_secret_strings(t, "spend_90d")), CSV),
        "spend_90d",
    ),
    (
        "string in int measure parquet",
        lambda t, e: (e.parquet(with_secret_strings(t, "visits_90d")), PARQUET),
        "visits_90d",
    ),
    (
        "string in int measure csv",
        lambda t, e: (e.csv(with_secret_strings(t, "visits_90d")), CSV),
        "visits_90d",
    ),
    (
        "string in int measure arrow",
        lambda t, e: (e.arrow(with_secret_strings(t, "nps_score")), ARROW),
        "nps_score",
    ),
    (
        "float in int measure",
        lambda t, e: (e.parquet(replace_column(t, "nps_score", pa.array([7.5] * ROWS))), PARQUET),
        "nps_score",
    ),
    (
        "int in string dimension",
        lambda t, e: (e.parquet(replace_column(t, "region", pa.array([123] * ROWS))), PARQUET),
        "region",
    ),
    (
        "null in required measure",
        lambda t, e: (
            e.parquet(
                replace_column(
                    with_secret_strings(t, "store_id"),
                    "nps_score",
                    pa.array([None] * (ROWS - 1) + [3], pa.int64()),
                )
            ),
            PARQUET,
        ),
        "nps_score",
    ),
    (
        "null in required measure csv",
        lambda t, e: (csv_text(with_secret_strings(t, "store_id"), "visits_90d", ""), CSV),
        "visits_90d",
    ),
    (
        "NaN in float measure",
        lambda t, e: (
            e.parquet(
                replace_column(
                    with_secret_strings(t, "store_id"),
                    "spend_90d",
                    pa.array([1.0] * (ROWS - 1) + [float("nan")]),
                )
            ),
            PARQUET,
        ),
        "spend_90d",
    ),
    (
        "infinity in float measure",
        lambda t, e: (
            e.parquet(replace_column(t, "spend_90d", pa.array([float("inf")] * ROWS))),
            PARQUET,
        ),
        "spend_90d",
    ),
    (
        "NaN in float measure csv",
        lambda t, e: (csv_text(with_secret_strings(t, "store_id"), "spend_90d", "NaN"), CSV),
        "spend_90d",
    ),
    (
        "null customer keys",
        lambda t, e: (
            e.parquet(
                replace_column(
                    with_secret_strings(t, "store_id"),
                    "customer_key",
                    pa.array([None] * ROWS, pa.string()),
                )
            ),
            PARQUET,
        ),
        "customer_key",
    ),
    (
        "some null customer keys csv",
        lambda t, e: (
            e.csv(
                replace_column(
                    with_secret_strings(t, "store_id"),
                    "customer_key",
                    pa.array([SECRET] * (ROWS - 1) + [None], pa.string()),
                )
            ),
            CSV,
        ),
        "customer_key",
    ),
    (
        "binary customer keys",
        lambda t, e: (
            e.parquet(
                replace_column(t, "customer_key", pa.array([SECRET.encode()] * ROWS, pa.binary()))
            ),
            PARQUET,
        ),
        "customer_key",
    ),
    (
        "repeated column csv",
        lambda t, e: (e.csv(t).replace(b'"region"', b'"store_id"', 1), CSV),
        "column",
    ),
    ("no rows parquet", lambda t, e: (e.parquet(t.slice(0, 0)), PARQUET), "no rows"),
    ("no rows csv", lambda t, e: (e.csv(t.slice(0, 0)), CSV), "no rows"),
    ("no rows arrow", lambda t, e: (e.arrow(t.slice(0, 0)), ARROW), "no rows"),
    ("garbage as parquet", lambda t, e: (SECRET.encode() * 50, PARQUET), "parquet"),
    ("truncated parquet", lambda t, e: (e.parquet(t)[:-100], PARQUET), "parquet"),
    ("garbage as arrow", lambda t, e: (SECRET.encode() * 50, ARROW), "arrow"),
    ("parquet sent as arrow", lambda t, e: (e.parquet(t), ARROW), "arrow"),
    ("garbage as csv", lambda t, e: (b"\xff\xfe\x00" + SECRET.encode() * 50, CSV), "csv"),
]


@pytest.fixture
def base(demo_tables: Any) -> pa.Table:
    table: pa.Table = demo_tables.loyalty.slice(0, ROWS)
    return table


@pytest.mark.parametrize("case", INVALID_DATASET, ids=[c[0] for c in INVALID_DATASET])
def test_invalid_files_are_422_store_nothing_and_echo_no_value(
    case: tuple[str, Builder, str],
    base: pa.Table,
    encode: Any,
    upload: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, build, named = case
    body, content_type = build(base, encode)
    before = snapshot()
    response = upload("bigmart", "loyalty", body, content_type)
    error = assert_error(response, 422, "invalid_dataset")
    assert named in error["message"]
    assert SECRET not in response.text
    for key in base["customer_key"].to_pylist()[:20]:
        assert key not in response.text
    assert snapshot() == before


def test_rejections_are_audited_without_values(
    base: pa.Table, encode: Any, upload: Any, api: Any, demo_keys: dict[str, Any]
) -> None:
    response = upload("bigmart", "loyalty", encode.csv(with_secret_strings(base, "spend_90d")), CSV)
    assert response.status_code == 422
    audit = api.get(f"/v1/collaborations/{DEMO}/audit", key=demo_keys["bigmart"]["compliance"])
    rejected = [e for e in audit.json()["events"] if e["action"] == "dataset.rejected"]
    assert len(rejected) == 1
    assert rejected[0]["details"]["code"] == "invalid_dataset"
    assert SECRET not in audit.text


OTHER_REFUSALS: list[tuple[str, str, str, Builder, int, str]] = [
    # (case, org, dataset name, builder, status, code)
    ("empty body", "bigmart", "loyalty", lambda t, e: (b"", PARQUET), 400, "invalid_request"),
    (
        "unsupported content type",
        "bigmart",
        "loyalty",
        lambda t, e: (e.parquet(t), "application/json"),
        415,
        "unsupported_media_type",
    ),
    (
        "octet-stream",
        "bigmart",
        "loyalty",
        lambda t, e: (e.parquet(t), "application/octet-stream"),
        415,
        "unsupported_media_type",
    ),
    (
        "dataset not in policy",
        "bigmart",
        "purchases",
        lambda t, e: (e.parquet(t), PARQUET),
        403,
        "policy_violation",
    ),
    (
        "another owner's dataset name",
        "bigmart",
        "survey",
        lambda t, e: (e.parquet(t), PARQUET),
        403,
        "policy_violation",
    ),
    (
        "acme uploads loyalty",
        "acme",
        "loyalty",
        lambda t, e: (e.parquet(t), PARQUET),
        403,
        "policy_violation",
    ),
    (
        "bad dataset name",
        "bigmart",
        "loy.alty",
        lambda t, e: (e.parquet(t), PARQUET),
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize("case", OTHER_REFUSALS, ids=[c[0] for c in OTHER_REFUSALS])
def test_other_upload_refusals(
    case: tuple[str, str, str, Builder, int, str],
    base: pa.Table,
    encode: Any,
    upload: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, org, name, build, status, code = case
    body, content_type = build(with_secret_strings(base, "store_id"), encode)
    before = snapshot()
    response = upload(org, name, body, content_type)
    error = assert_error(response, status, code)
    if code == "policy_violation":
        assert "policy rule: datasets)" in error["message"]
    assert SECRET not in response.text
    assert snapshot() == before


@pytest.mark.parametrize("settings", [{"max_upload_bytes": 2048}], indirect=True)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(
    chunked: bool,
    settings: Any,
    base: pa.Table,
    encode: Any,
    upload: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    data = encode.parquet(with_secret_strings(base, "store_id"))
    assert len(data) > settings.max_upload_bytes

    async def chunks() -> Any:
        for start in range(0, len(data), 512):
            yield data[start : start + 512]

    before = snapshot()
    response = upload("bigmart", "loyalty", chunks() if chunked else data, PARQUET)
    error = assert_error(response, 413, "payload_too_large")
    assert "2048" in error["message"]
    assert SECRET not in response.text
    assert snapshot() == before
    # A small file still fits under the same limit.
    small = encode.csv(base.slice(0, 10))
    assert len(small) < settings.max_upload_bytes
    assert upload("bigmart", "loyalty", small, CSV).status_code == 201


# --- happy paths ---------------------------------------------------------------------------


def tokens_of(token_key: TokenKey, keys: list[str]) -> set[bytes]:
    return {token_key.token(k.encode()) for k in keys}


def test_uploads_in_every_format_add_versions(
    demo_tables: Any,
    encode: Any,
    upload: Any,
    services: Any,
    settings: Any,
    demo_keys: dict[str, Any],
    api: Any,
) -> None:
    loyalty = demo_tables.loyalty
    survey = demo_tables.survey
    expected_schema = {
        "region": "string",
        "store_id": "string",
        "channel": "string",
        "spend_90d": "double",
        "visits_90d": "int64",
        "nps_score": "int64",
    }
    for version, (body, content_type) in enumerate(
        [
            (encode.parquet(loyalty), PARQUET),
            (encode.csv(loyalty), CSV),
            (encode.arrow(loyalty), ARROW),
            (encode.parquet(loyalty), "application/x-parquet"),
            (encode.csv(loyalty), "text/csv; charset=utf-8"),
        ],
        start=2,
    ):
        response = upload("bigmart", "loyalty", body, content_type)
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["dataset"] == "bigmart.loyalty"
        assert answer["version"] == version
        assert answer["rows"] == loyalty.num_rows
        assert answer["schema"] == expected_schema
        assert answer["dropped_columns"] == ["email"]
        assert answer["max_rows_per_customer"] == 1
    assert list(settings.upload_tmp_dir.iterdir()) == []

    # The brand's survey too, as an Arrow stream (int customer keys become strings).
    answer = upload("acme", "survey", encode.arrow(survey), ARROW).json()
    assert answer["version"] == 2 and "phone" not in answer["schema"]

    # Rows per customer are recorded at ingest.
    doubled = pa.concat_tables([loyalty.slice(0, 300), loyalty.slice(0, 100)])
    answer = upload("bigmart", "loyalty", encode.parquet(doubled)).json()
    assert answer["rows"] == 400 and answer["max_rows_per_customer"] == 2
    row = services.db.one(
        "SELECT rows, max_rows_per_customer FROM dataset_versions "
        "WHERE dataset = 'bigmart.loyalty' ORDER BY version DESC LIMIT 1"
    )
    assert row == (400, 2)
    listing = api.get(f"/v1/collaborations/{DEMO}/datasets", key=demo_keys["bigmart"]["analyst"])
    (entry,) = [d for d in listing.json()["datasets"] if d["id"] == "bigmart.loyalty"]
    assert entry["version"] == 7 and entry["rows"] == 400 and entry["max_rows_per_customer"] == 2


def test_stored_files_are_encrypted_and_hold_only_tokens(
    demo_tables: Any, encode: Any, upload: Any, services: Any, settings: Any
) -> None:
    loyalty = demo_tables.loyalty
    response = upload("bigmart", "loyalty", encode.csv(loyalty), CSV)
    assert response.status_code == 201
    rows = services.db.execute(
        "SELECT file, version FROM dataset_versions WHERE dataset = 'bigmart.loyalty'"
    )
    keys = loyalty["customer_key"].to_pylist()
    for file, _ in rows:
        blob = (settings.datasets_dir / file).read_bytes()
        assert not blob.startswith(b"PAR1") and not blob.endswith(b"PAR1")
        for key in keys:
            assert key.encode() not in blob
        assert b"@example.invalid" not in blob
    # Decrypted, the table holds tokens, not keys, and no hidden column.
    latest = services.catalog.latest_datasets(DEMO)["bigmart.loyalty"]
    assert latest.version == 2
    table = services.files.read(latest)
    assert table.column_names == [
        "_token",
        "region",
        "store_id",
        "channel",
        "spend_90d",
        "visits_90d",
        "nps_score",
    ]
    assert set(table["_token"].to_pylist()) == tokens_of(services.token_key(DEMO), keys)
    # The two partners' tokens match for shared customers (both use the collaboration secret).
    survey = services.files.read(services.catalog.latest_datasets(DEMO)["acme.survey"])
    shared = set(keys) & set(demo_tables.survey["customer_id"].to_pylist())
    assert len(set(table["_token"].to_pylist()) & set(survey["_token"].to_pylist())) == len(shared)


COUNT_BY_REGION = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["region"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
    "epsilon": 1.0,
}


def _query(api: Any, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/v1/collaborations/{DEMO}/queries", key=key, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_queries_read_the_newest_version(
    demo_tables: Any, encode: Any, upload: Any, api: Any, demo_keys: dict[str, Any]
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    first = _query(api, analyst, COUNT_BY_REGION)
    assert first["datasets"] == {"bigmart.loyalty": 1}
    assert all(not r.get("suppressed") for r in first["rows"])

    loyalty = demo_tables.loyalty
    north = replace_column(loyalty, "region", pa.array(["north"] * loyalty.num_rows))
    assert upload("bigmart", "loyalty", encode.parquet(north)).json()["version"] == 2

    second = _query(api, analyst, COUNT_BY_REGION)
    assert second["replay"] is False and second["query_id"] != first["query_id"]
    assert second["datasets"] == {"bigmart.loyalty": 2}
    rows = {r["region"]: r for r in second["rows"]}
    # Count noise has scale 1 (ε 1, sensitivity 1): |noise| > 30 has probability < 1e-13.
    assert abs(rows["north"]["n"]["value"] - loyalty.num_rows) <= 30
    for region in ("south", "east", "west"):
        assert rows[region] == {"region": region, "suppressed": True, "n": None}


def test_each_customer_counts_once_even_with_repeated_rows(
    demo_tables: Any, encode: Any, upload: Any, api: Any, demo_keys: dict[str, Any]
) -> None:
    loyalty = demo_tables.loyalty
    north = replace_column(loyalty, "region", pa.array(["north"] * loyalty.num_rows))
    tripled = pa.concat_tables([north, north, north])
    answer = upload("bigmart", "loyalty", encode.parquet(tripled)).json()
    assert answer["rows"] == 3 * loyalty.num_rows and answer["max_rows_per_customer"] == 3
    release = _query(api, demo_keys["acme"]["analyst"], COUNT_BY_REGION)
    rows = {r["region"]: r for r in release["rows"]}
    assert abs(rows["north"]["n"]["value"] - loyalty.num_rows) <= 30

    # Sums are bounded the same way: visits clamped to [0, 60], one row per customer.
    body = {
        "plan": {
            "from": "bigmart.loyalty",
            "where": [{"column": "region", "op": "eq", "value": "north"}],
            "aggregates": [{"fn": "sum", "column": "visits_90d", "as": "visits"}],
        },
        "epsilon": 1.0,
    }
    exact = pc.sum(pc.min_element_wise(loyalty["visits_90d"], 60)).as_py()
    (row,) = _query(api, demo_keys["acme"]["analyst"], body)["rows"]
    # Two statistics at ε 0.5 each; the sum's scale is 120: |noise| > 4000 has P < 1e-14.
    assert abs(row["visits"]["value"] - exact) <= 4000


@pytest.mark.parametrize("settings", [{"max_upload_bytes": 2048}], indirect=True)
def test_who_may_upload_is_checked_before_the_body(
    settings: Any,
    base: pa.Table,
    encode: Any,
    upload: Any,
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    big = encode.parquet(base)
    assert len(big) > settings.max_upload_bytes
    before = snapshot()
    # Not a contributor: 403, whatever the size or media type of the body.
    for content_type in (PARQUET, "application/json"):
        response = upload(
            "bigmart", "loyalty", big, content_type, key=demo_keys["bigmart"]["analyst"]
        )
        assert_error(response, 403, "forbidden")
    # A contributor of a non-member organisation: 404, as for a missing collaboration.
    admin = demo_keys["admin"]
    api.post("/v1/orgs", key=admin, json={"id": "probe", "name": "Probe", "kind": "partner"})
    outsider = api.post("/v1/orgs/probe/keys", key=admin, json={"role": "contributor"})
    for content_type in (PARQUET, "text/plain"):
        response = upload("probe", "loyalty", big, content_type, key=outsider.json()["secret"])
        assert_error(response, 404, "not_found")
    after = snapshot()
    assert {k: v for k, v in after.items() if k not in ("orgs", "api_keys")} == {
        k: v for k, v in before.items() if k not in ("orgs", "api_keys")
    }
