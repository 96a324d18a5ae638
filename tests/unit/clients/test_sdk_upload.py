"""Uploads stream files from disk in chunks and send tables as Parquet."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients import GatewayClient, InvalidUpload
from clients._upload import CHUNK_SIZE

PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
UPLOADED = {"version": 1, "rows": 3, "schema": {}}


@pytest.fixture
def big_csv(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.csv"
    lines = ["customer_key,region,spend_90d"]
    lines += [f"c{i:07d},north,{i % 2000}.5" for i in range(20_000)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 4 * CHUNK_SIZE
    return path


def test_file_is_streamed_in_chunks(fake: Any, client: GatewayClient, big_csv: Path) -> None:
    fake.reply = lambda request: httpx.Response(201, json=UPLOADED)
    assert client.upload("cx", "loyalty", big_csv) == UPLOADED
    call = fake.last
    assert (call.request.method, call.request.url.path) == (
        "POST",
        "/v1/collaborations/cx/datasets/loyalty",
    )
    assert call.request.headers["Content-Type"] == "text/csv"
    assert call.request.headers["Content-Length"] == str(big_csv.stat().st_size)
    assert "Transfer-Encoding" not in call.request.headers
    assert len(call.chunks) > 4
    assert max(len(c) for c in call.chunks) <= CHUNK_SIZE
    assert call.body == big_csv.read_bytes()


def test_progress_reports_bytes_sent(fake: Any, client: GatewayClient, big_csv: Path) -> None:
    seen: list[int] = []
    client.upload("cx", "loyalty", str(big_csv), progress=seen.append)
    assert seen == sorted(seen)
    assert len(seen) == len(fake.last.chunks)
    assert seen[-1] == big_csv.stat().st_size


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("d.parquet", PARQUET),
        ("d.pq", PARQUET),
        ("D.PARQUET", PARQUET),
        ("d.csv", "text/csv"),
        ("d.arrow", ARROW_STREAM),
        ("d.arrows", ARROW_STREAM),
    ],
)
def test_content_type_follows_the_suffix(
    fake: Any, client: GatewayClient, tmp_path: Path, name: str, content_type: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"payload")
    client.upload("cx", "d", path)
    assert fake.last.request.headers["Content-Type"] == content_type
    assert fake.last.body == b"payload"


def test_content_type_override(fake: Any, client: GatewayClient, tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    path.write_bytes(b"a,b\n1,2\n")
    client.upload("cx", "d", path, content_type="text/csv")
    assert fake.last.request.headers["Content-Type"] == "text/csv"


def test_unknown_suffix_sends_nothing(fake: Any, client: GatewayClient, tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="content_type"):
        client.upload("cx", "d", path)
    assert fake.calls == []


def test_missing_file_sends_nothing(fake: Any, client: GatewayClient, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client.upload("cx", "d", tmp_path / "absent.parquet")
    with pytest.raises(FileNotFoundError):
        client.upload("cx", "d", tmp_path)
    assert fake.calls == []


def test_unsupported_source_type(fake: Any, client: GatewayClient) -> None:
    with pytest.raises(TypeError, match="pyarrow.Table"):
        client.upload("cx", "d", [{"customer_key": 1}])
    assert fake.calls == []


TABLE = pa.table(
    {
        "customer_key": ["a", "b", "c"],
        "region": ["north", "south", "east"],
        "spend": [1.0, 2.0, 3.5],
    }
)


def test_table_is_sent_as_parquet(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(201, json=UPLOADED)
    assert client.upload("cx", "loyalty", TABLE) == UPLOADED
    assert fake.last.request.headers["Content-Type"] == PARQUET
    assert int(fake.last.request.headers["Content-Length"]) == len(fake.last.body)
    assert pq.read_table(io.BytesIO(fake.last.body)).equals(TABLE)


def test_dataframe_is_sent_as_parquet_without_its_index(fake: Any, client: GatewayClient) -> None:
    frame = TABLE.to_pandas().set_index(pd.Index([10, 11, 12]))
    client.upload("cx", "loyalty", frame)
    assert fake.last.request.headers["Content-Type"] == PARQUET
    received = pq.read_table(io.BytesIO(fake.last.body))
    assert received.column_names == ["customer_key", "region", "spend"]
    assert received.to_pydict() == TABLE.to_pydict()


def test_large_table_is_chunked(fake: Any, client: GatewayClient) -> None:
    rng = range(200_000)
    table = pa.table({"customer_key": [f"k{i}" for i in rng], "spend": [i * 1.5 for i in rng]})
    client.upload("cx", "loyalty", table)
    assert len(fake.last.chunks) > 1
    assert pq.read_table(io.BytesIO(fake.last.body)).equals(table)


def test_table_with_a_non_parquet_content_type_is_refused(fake: Any, client: GatewayClient) -> None:
    with pytest.raises(ValueError, match="Parquet"):
        client.upload("cx", "d", TABLE, content_type="text/csv")
    client.upload("cx", "d", TABLE, content_type="application/x-parquet")
    assert fake.last.request.headers["Content-Type"] == "application/x-parquet"


def test_rejected_upload_raises_invalid_upload(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(
        422, json={"error": {"code": "invalid_dataset", "message": "missing column region"}}
    )
    with pytest.raises(InvalidUpload, match="missing column region"):
        client.upload("cx", "loyalty", TABLE)
