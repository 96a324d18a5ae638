"""Hostile uploads: each gets a 4xx with a clear code, stores nothing, and the service stays up.

After every refusal, ``/v1/health`` answers 200 and a normal query (count by region on
``bigmart.loyalty``, ε 0.1) still works. A gzip bomb does not apply: bodies are never
gunzipped (no ``Content-Encoding`` is honoured and ``application/gzip`` is a 415). The 1 GB
line and peak-memory figures are in ``bench/hostile_uploads.py``; the Arrow IPC bomb's peak is
also checked here, in process.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as paipc
import pyarrow.parquet as pq
import pytest

from gateway.service.ingest import MAX_EXPANSION

DEMO = "acme-bigmart-cx"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
ROWS = 200
COUNT_BY_REGION = {
    "plan": {"from": "bigmart.loyalty", "group_by": ["region"], "aggregates": [{"fn": "count"}]},
    "epsilon": 0.1,
}


def zigzag_varint(value: int) -> bytes:
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def corrupt_footer(good: bytes) -> bytes:
    """Valid ``PAR1`` magic at both ends, garbage where the footer's metadata should be."""
    footer_len = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - footer_len
    return good[:start] + bytes([0xFF, 0x13, 0x37] * (footer_len // 3 + 1))[:footer_len] + good[-8:]


def forged_footer(good: bytes) -> bytes:
    """The footer claims 2**40 rows (file and row group) instead of the real 200."""
    footer_len = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - footer_len
    footer = good[start:-8].replace(zigzag_varint(ROWS), zigzag_varint(2**40))
    assert footer != good[start:-8]
    return good[:start] + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def parquet_bomb(rows: int) -> bytes:
    """A small Parquet file (zstd, dictionary/RLE) whose columns decode to ~240 bytes a row."""
    chunk = min(rows, 5_000_000)
    idx = pa.array(np.zeros(chunk, dtype=np.int32))
    strings = {"customer_key": "k" + "x" * 200, "region": "north", "store_id": "S001"}
    cols = [pa.DictionaryArray.from_arrays(idx, pa.array([v])) for v in strings.values()]
    cols.append(pa.DictionaryArray.from_arrays(idx, pa.array(["store"])))
    cols += [pa.array(np.ones(chunk)), pa.array(np.ones(chunk, dtype=np.int64))]
    cols.append(pa.array(np.full(chunk, 5, dtype=np.int64)))
    names = [*strings, "channel", "spend_90d", "visits_90d", "nps_score"]
    table = pa.Table.from_arrays(cols, names=names)
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, table.schema, compression="zstd", write_statistics=False) as w:
        for _ in range(rows // chunk):
            w.write_table(table, row_group_size=chunk)
    return buffer.getvalue()


def csv_header(table: pa.Table) -> bytes:
    return (",".join(table.column_names) + "\n").encode()


Builder = Callable[[pa.Table, Any], tuple[bytes, str]]

HOSTILE: list[tuple[str, Builder, int, str]] = [
    ("corrupt parquet footer", lambda t, e: (corrupt_footer(e.parquet(t)), PARQUET), 422, ""),
    ("parquet magic only", lambda t, e: (b"PAR1" + b"\0" * 64 + b"PAR1", PARQUET), 422, ""),
    ("forged parquet footer", lambda t, e: (forged_footer(e.parquet(t)), PARQUET), 422, ""),
    (
        "parquet decompression bomb",
        lambda t, e: (parquet_bomb(5_000_000), PARQUET),
        422,
        "expands to more than",
    ),
    (
        "100,000 columns csv",
        lambda t, e: (
            (",".join(f"c{i}" for i in range(100_000)) + "\n" + "1," * 99_999 + "1\n").encode(),
            CSV,
        ),
        422,
        "too many columns",
    ),
    (
        "100,000 columns parquet",
        lambda t, e: (
            e.parquet(pa.table({f"c{i}": pa.array([1], pa.int8()) for i in range(100_000)})),
            PARQUET,
        ),
        422,
        "too many columns",
    ),
    (
        "64 MB single csv line",
        lambda t, e: (csv_header(t) + b"a" * (64 << 20) + b"\n", CSV),
        422,
        "a line is longer than",
    ),
    (
        "64 MB csv header line",
        lambda t, e: (b"a" * (64 << 20) + b"\n1\n", CSV),
        422,
        "a line is longer than",
    ),
    (
        "utf-16 csv",
        lambda t, e: (e.csv(t).decode().encode("utf-16"), CSV),
        422,
        "UTF-8",
    ),
    (
        "latin-1 bytes in a string column",
        lambda t, e: (e.csv(t).replace(b"north", b"n\xf6rth"), CSV),
        422,
        "UTF-8",
    ),
    ("NUL bytes csv", lambda t, e: (e.csv(t).replace(b"north", b"no\0rth"), CSV), 422, "NUL"),
    ("NUL bytes in the csv header", lambda t, e: (b"\0\0\0\n\0\n", CSV), 422, ""),
    (
        "arrow stream cut mid-batch",
        lambda t, e: (e.arrow(t)[: len(e.arrow(t)) // 2 + 7], ARROW),
        422,
        "",
    ),
    ("arrow garbage", lambda t, e: (b"\xff\xff\xff\xff" + b"\x7f" * 64, ARROW), 422, ""),
    ("header only csv", lambda t, e: (csv_header(t), CSV), 422, "no rows"),
    ("header only parquet", lambda t, e: (e.parquet(t.slice(0, 0)), PARQUET), 422, "no rows"),
    ("header only arrow", lambda t, e: (e.arrow(t.slice(0, 0)), ARROW), 422, "no rows"),
    ("gzip body", lambda t, e: (b"\x1f\x8b\x08\x00" + b"\0" * 32, "application/gzip"), 415, ""),
]

CODES = {413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_dataset"}


@pytest.fixture
def base(demo_tables: Any) -> pa.Table:
    table: pa.Table = demo_tables.loyalty.slice(0, ROWS)
    return table


@pytest.fixture
def still_healthy(api: Any, demo_keys: dict[str, Any]) -> Callable[[], None]:
    def check() -> None:
        assert api.get("/v1/health").status_code == 200
        response = api.post(
            f"/v1/collaborations/{DEMO}/queries",
            key=demo_keys["acme"]["analyst"],
            json=COUNT_BY_REGION,
        )
        assert response.status_code == 200, response.text

    return check


@pytest.mark.parametrize("settings", [{"max_decoded_bytes": 1024**3}], indirect=True)
@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_upload_is_refused_stores_nothing_and_the_service_stays_up(
    case: tuple[str, Builder, int, str],
    base: pa.Table,
    encode: Any,
    upload: Any,
    snapshot: Any,
    assert_error: Any,
    still_healthy: Callable[[], None],
) -> None:
    _, build, status, words = case
    body, content_type = build(base, encode)
    before = snapshot()
    response = upload("bigmart", "loyalty", body, content_type)
    error = assert_error(response, status, CODES[status])
    assert words in error["message"]
    assert snapshot() == before
    still_healthy()


def test_empty_body_is_refused(
    upload: Any, snapshot: Any, assert_error: Any, still_healthy: Callable[[], None]
) -> None:
    before = snapshot()
    response = upload("bigmart", "loyalty", b"", CSV)
    assert_error(response, 400, "invalid_request")
    assert snapshot() == before
    still_healthy()


@pytest.mark.parametrize("settings", [{"max_upload_bytes": 1 << 20}], indirect=True)
def test_a_body_over_the_limit_is_413(
    upload: Any, snapshot: Any, assert_error: Any, still_healthy: Callable[[], None]
) -> None:
    before = snapshot()
    response = upload("bigmart", "loyalty", b"a" * (2 << 20), CSV)
    assert_error(response, 413, "payload_too_large")
    assert snapshot() == before
    still_healthy()


def test_a_bomb_under_max_decoded_bytes_is_refused_by_its_expansion_ratio(
    upload: Any, snapshot: Any, assert_error: Any, still_healthy: Callable[[], None]
) -> None:
    """Default settings (8 GiB): a file decoding to ~1.2 GB, thousands of times its size, is
    refused at MAX_EXPANSION times its size instead of being tokenised in full."""
    body = parquet_bomb(5_000_000)
    assert len(body) * MAX_EXPANSION < 1.2e9
    before = snapshot()
    started = time.monotonic()
    response = upload("bigmart", "loyalty", body, PARQUET)
    error = assert_error(response, 422, "invalid_dataset")
    assert "expands to more than" in error["message"]
    assert time.monotonic() - started < 30  # a few batches, not 5,000,000 tokens
    assert snapshot() == before
    still_healthy()


def arrow_zstd_bomb(rows: int) -> bytes:
    """One zstd-compressed Arrow record batch of ``rows`` rows of zeros (dictionary indices and
    numbers): about ``28 * rows`` bytes once decoded, about ``rows / 700`` bytes on the wire."""
    zeros = pa.py_buffer(np.zeros(rows, dtype=np.int64))  # calloc: never touched, never resident

    def number(kind: pa.DataType) -> pa.Array:
        return pa.Array.from_buffers(kind, rows, [None, zeros])

    def repeated(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(number(pa.int32()), pa.array([value]))

    strings = {"customer_key": "k" * 250, "region": "north", "store_id": "S001", "channel": "web"}
    columns = {name: repeated(value) for name, value in strings.items()}
    columns |= {"spend_90d": number(pa.float64()), "visits_90d": number(pa.int64())}
    table = pa.table(columns | {"nps_score": number(pa.int64())})
    sink = pa.BufferOutputStream()
    options = paipc.IpcWriteOptions(compression="zstd")
    with paipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_batch(table.to_batches(max_chunksize=rows)[0])
    return bytes(sink.getvalue().to_pybytes())


def rss_mib() -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1)) / 1024


@contextmanager
def peak_rss_mib() -> Iterator[list[float]]:
    """This process's highest resident memory while the block runs, sampled every millisecond
    (inflating 700 MB takes hundreds of them); the list holds it once the block is done."""
    peak = [rss_mib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak[0] = max(peak[0], rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], rss_mib())


def test_an_arrow_zstd_bomb_is_refused_from_its_metadata_before_it_is_inflated(
    upload: Any, snapshot: Any, assert_error: Any, still_healthy: Callable[[], None]
) -> None:
    """25M rows in one batch: ~700 MB once decoded (about 6 GB with the customer keys'
    dictionary expanded) in a ~30 KB body. The guard reads the batch's declared size from its
    metadata and refuses it before pyarrow inflates it: the process does not grow by 100 MB
    (before the guard it peaked about 1 GB higher), and nothing is spent or stored."""
    body = arrow_zstd_bomb(25_000_000)
    assert len(body) < 64 * 1024
    before = snapshot()
    rss_before = rss_mib()
    started = time.monotonic()
    with peak_rss_mib() as peak:
        response = upload("bigmart", "loyalty", body, ARROW)
    error = assert_error(response, 422, "invalid_dataset")
    assert error["message"] == f"the file expands to more than {64 * 1024**2} bytes when decoded"
    assert peak[0] - rss_before < 100, (rss_before, peak[0])
    assert rss_mib() - rss_before < 100
    assert time.monotonic() - started < 5
    assert snapshot() == before
    still_healthy()


def test_a_parquet_column_name_that_is_not_utf8_is_a_422(
    base: pa.Table,
    upload: Any,
    snapshot: Any,
    assert_error: Any,
    still_healthy: Callable[[], None],
) -> None:
    """A footer whose column name is not UTF-8 (patched in place: same length) is refused as an
    unreadable file, not a server error."""
    sink = io.BytesIO()
    pq.write_table(base.rename_columns([*base.column_names[:-1], "zz_name"]), sink)
    body = sink.getvalue()
    assert body.count(b"zz_name") >= 1
    forged = body.replace(b"zz_name", b"zz_\x89\xfe\xff\x80")
    before = snapshot()
    response = upload("bigmart", "loyalty", forged, "application/vnd.apache.parquet")
    assert_error(response, 422, "invalid_dataset")
    assert snapshot() == before
    still_healthy()
