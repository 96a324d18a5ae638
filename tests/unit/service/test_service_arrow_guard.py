"""The Arrow IPC guard sizes every message from its metadata before pyarrow decodes it.

On real pyarrow-written streams (uncompressed, LZ4, ZSTD; nulls, strings, dictionaries and
their deltas, a null column; the file format and the pre-0.15 framing) the size read from the
metadata is at least what the decoded batch holds and within 2x + 1 KiB of it, and the guard
hands pyarrow the stream unchanged. Forged metadata (offsets out of range, negative lengths,
huge declared sizes, too many buffers, random bytes, cut streams) is an ``InvalidDataset``,
never another exception, and a declared expansion past the limit is refused before decoding.
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as paipc
import pytest
import yaml

from gateway.demo.data import generate_demo_tables
from gateway.domain.errors import InvalidDataset
from gateway.domain.policy import DatasetPolicy, parse_policy
from gateway.service.arrow_guard import (
    MAX_BUFFERS,
    RECORD_BATCH,
    GuardedStream,
    MessageSize,
    message_size,
)
from gateway.service.ingest import ingest
from gateway.service.tokens import AES_CMAC, TokenKey

ROWS = 12_345  # distinctive: found in metadata (lengths) and bodies (uncompressed sizes)
CODECS = [None, "lz4", "zstd"]
POLICY = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"


def varied(rows: int = ROWS) -> pa.Table:
    """Nulls, strings (short and large), a dictionary, a null column, ints, floats, bools."""
    rng = np.random.default_rng(5)
    missing = rng.random(rows) < 0.2
    return pa.table(
        {
            "key": pa.array([f"customer-{i:07d}" for i in range(rows)]),
            "note": pa.array(
                [
                    None if m else "x" * int(n)
                    for m, n in zip(missing, rng.integers(0, 40, rows), strict=True)
                ],
                pa.large_string(),
            ),
            "region": pa.array(rng.choice(["north", "south", "east", "west"], rows)),
            "store": pa.array(rng.choice(["S001", "S002", None], rows)).dictionary_encode(),
            "spend": pa.array(rng.normal(100, 30, rows), mask=missing),
            "visits": pa.array(rng.integers(0, 50, rows).astype(np.int8)),
            "vip": pa.array(rng.random(rows) < 0.1),
            "empty": pa.nulls(rows),
        }
    )


def stream(table: pa.Table, codec: str | None = None, chunk: int = 5_000, **opts: Any) -> bytes:
    sink = pa.BufferOutputStream()
    options = paipc.IpcWriteOptions(compression=codec, **opts)
    with paipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=chunk)
    return bytes(sink.getvalue().to_pybytes())


def messages(body: bytes) -> list[tuple[str, bytes, pa.Buffer]]:
    reader = paipc.MessageReader.open_stream(pa.py_buffer(body))
    out = []
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return out
        out.append((message.type, message.metadata.to_pybytes(), message.body))


def guarded(body: bytes, limit: int = 1 << 30) -> pa.Table:
    return paipc.open_stream(GuardedStream(io.BytesIO(body), limit)).read_all()


# ---- sizes of real streams -------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_the_size_from_metadata_covers_the_decoded_batch_and_is_close_to_it(
    codec: str | None,
) -> None:
    table = varied()
    body = stream(table, codec)
    decoded = paipc.open_stream(body).read_all().to_batches()
    sizes = [(kind, message_size(meta, data)) for kind, meta, data in messages(body)]
    assert sizes[0][1] == MessageSize(1, 0, 0, 0)
    dictionaries = sum(s.decoded_bytes for kind, s in sizes if kind == "dictionary")
    batches = [s for kind, s in sizes if kind == "record batch"]
    assert len(batches) == len(decoded) == 3
    for size, batch in zip(batches, decoded, strict=True):
        assert size.kind == RECORD_BATCH and size.rows == batch.num_rows
        held = sum(buffer.size for column in batch.columns for buffer in column.buffers() if buffer)
        assert held <= size.decoded_bytes <= 2 * held + 1024
        assert batch.nbytes <= size.decoded_bytes + dictionaries <= 2 * batch.nbytes + 1024
    assert 0 < dictionaries <= 1024


@pytest.mark.parametrize("codec", CODECS)
def test_the_guard_hands_pyarrow_the_stream_unchanged(codec: str | None) -> None:
    table = varied()
    assert guarded(stream(table, codec)).equals(table)
    assert guarded(stream(table, codec, use_legacy_format=True)).equals(table)
    sink = pa.BufferOutputStream()
    options = paipc.IpcWriteOptions(compression=codec)
    with paipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=5_000)
    assert guarded(bytes(sink.getvalue().to_pybytes())).equals(table)


def test_dictionary_deltas_are_decoded_by_pyarrow_and_charged() -> None:
    values = [["north", "south"], ["north", "south", "east"], ["north", "south", "east", "west"]]
    schema = pa.schema([("region", pa.dictionary(pa.int32(), pa.string()))])
    sink = pa.BufferOutputStream()
    options = paipc.IpcWriteOptions(compression="zstd", emit_dictionary_deltas=True)
    with paipc.new_stream(sink, schema, options=options) as writer:
        for words in values:
            indices = pa.array(np.arange(1000) % len(words), pa.int32())
            column = pa.DictionaryArray.from_arrays(indices, pa.array(words))
            writer.write_batch(pa.record_batch([column], schema=schema))
    body = bytes(sink.getvalue().to_pybytes())
    kinds = [kind for kind, _, _ in messages(body)]
    assert kinds.count("dictionary") == 3  # the first, then two deltas
    table = guarded(body)
    expected = [w for words in values for w in (words * 1000)[:1000]]
    assert table.column("region").to_pylist() == expected


# ---- the running total ---------------------------------------------------------------------


def test_the_limit_is_the_running_total_of_the_batches() -> None:
    floats = pa.table({"a": np.ones(3000), "b": np.ones(3000), "c": np.ones(3000)})
    body = stream(floats, chunk=1000)  # three batches of 24,000 bytes each
    assert guarded(body, limit=72_000).num_rows == 3000
    with pytest.raises(InvalidDataset, match="the file expands to more than 71999 bytes"):
        guarded(body, limit=71_999)


def test_a_null_column_is_charged_what_casting_it_takes() -> None:
    table = pa.table({"a": np.ones(1000), "b": np.ones(1000), "c": np.ones(1000)})
    body = stream(table.append_column("z", pa.nulls(1000)), chunk=1000)
    assert guarded(body, limit=32_000).num_rows == 1000  # 24 bytes a row + 8 for the null
    with pytest.raises(InvalidDataset, match="expands to more than"):
        guarded(body, limit=31_999)


def test_narrow_rows_are_charged_at_least_a_token_each() -> None:
    body = stream(pa.table({"k": pa.array(np.zeros(1000, np.int8))}), chunk=1000)
    assert guarded(body, limit=16_000).num_rows == 1000
    with pytest.raises(InvalidDataset, match="expands to more than"):
        guarded(body, limit=15_999)


def test_a_compressed_batch_declaring_a_terabyte_is_refused_before_it_is_inflated() -> None:
    body = stream(pa.table({"x": np.zeros(ROWS)}), "zstd", chunk=ROWS)
    forged = replace_once(body, struct.pack("<q", 8 * ROWS), struct.pack("<q", 1 << 40))
    with pytest.raises(InvalidDataset, match="expands to more than 1073741824 bytes"):
        guarded(forged)


# ---- forged metadata ---------------------------------------------------------------------


def replace_once(body: bytes, old: bytes, new: bytes) -> bytes:
    assert body.count(old) >= 1
    at = body.index(old)
    return body[:at] + new + body[at + len(old) :]


def plain() -> bytes:
    """One float64 column of ROWS zeros, uncompressed, one batch."""
    return stream(pa.table({"x": np.zeros(ROWS)}), chunk=ROWS)


def unreadable(body: bytes) -> str:
    with pytest.raises(InvalidDataset) as refused:
        guarded(body)
    return str(refused.value)


def test_forged_lengths_and_offsets_are_refused() -> None:
    body = plain()
    schema_end = 8 + len(messages(body)[0][1])
    batch_meta = messages(body)[1][1]
    cases = {
        "negative rows": replace_once(body, struct.pack("<q", ROWS), struct.pack("<q", -1)),
        "buffer past the body": replace_once(
            body, struct.pack("<qq", 0, 8 * ROWS), struct.pack("<qq", 8, 8 * ROWS)
        ),
        "negative buffer offset": replace_once(
            body, struct.pack("<qq", 0, 8 * ROWS), struct.pack("<qq", -8, 8 * ROWS)
        ),
        "body past the end": replace_once(
            body, struct.pack("<q", 8 * ROWS), struct.pack("<q", 1 << 50)
        ),
        "metadata past the end": body[:4] + struct.pack("<i", 2**31 - 1) + body[8:],
        "negative metadata length": body[:4] + struct.pack("<i", -9) + body[8:],
        "batch before the schema": body[schema_end:],
        "two schemas": body[:schema_end] + body,
    }
    assert struct.pack("<q", ROWS) in batch_meta
    # bodyLength (Message table) comes before the buffers vector: the first 8 * ROWS is it
    pairs = struct.pack("<qq", 0, 8 * ROWS)
    assert body.index(struct.pack("<q", 8 * ROWS)) < body.index(pairs) - 8
    for name, forged in cases.items():
        assert unreadable(forged) == "the body is not a readable arrow file", name


def test_rows_beyond_what_the_body_declares_are_refused_before_decoding() -> None:
    forged = plain().replace(struct.pack("<q", ROWS), struct.pack("<q", 1 << 40))
    assert "expands to more than" in unreadable(forged)


def test_too_many_buffers_are_refused_from_the_count() -> None:
    body = plain()
    pairs = struct.pack("<qq", 0, 0) + struct.pack("<qq", 0, 8 * ROWS)  # validity, data
    at = body.index(pairs)
    assert struct.unpack_from("<I", body, at - 4)[0] == 2
    forged = body[: at - 4] + struct.pack("<I", MAX_BUFFERS + 1) + body[at:]
    assert unreadable(forged) == f"an arrow message describes more than {MAX_BUFFERS} buffers"


def test_random_metadata_is_refused_never_raised_as_another_exception() -> None:
    rng = random.Random(20240611)
    real = [meta for codec in CODECS for _, meta, _ in messages(stream(varied(300), codec))]
    for trial in range(3000):
        meta = bytearray(rng.choice(real))
        if trial % 3 == 0:
            meta = bytearray(rng.randbytes(rng.randrange(64)))
        elif trial % 3 == 1:
            for _ in range(rng.randint(1, 6)):
                meta[rng.randrange(len(meta))] = rng.randrange(256)
        else:
            meta = meta[: rng.randrange(len(meta))]
        try:
            size = message_size(bytes(meta), rng.randbytes(rng.randrange(256)))
        except InvalidDataset as refused:
            assert str(refused).startswith(("the body is not", "an arrow message describes"))
        else:
            assert size.body_bytes >= 0 and size.rows >= 0 and size.decoded_bytes >= 0


def test_a_cut_stream_is_refused_or_read_up_to_a_whole_message() -> None:
    body = stream(varied(300), "zstd", chunk=100)
    for cut in range(0, len(body), 7):
        try:
            guarded(body[:cut])
        except InvalidDataset as refused:
            assert str(refused) == "the body is not a readable arrow file"


def test_a_forged_file_footer_is_refused() -> None:
    sink = pa.BufferOutputStream()
    table = varied(100)
    with paipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    body = bytes(sink.getvalue().to_pybytes())
    for footer in (-1, len(body), 2**31 - 1):
        forged = body[:-10] + struct.pack("<i", footer) + body[-6:]
        assert unreadable(forged) == "the body is not a readable arrow file"


# ---- through ingest ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loyalty() -> tuple[DatasetPolicy, pa.Table]:
    policy = parse_policy(yaml.safe_load(POLICY.read_text())).datasets["bigmart.loyalty"]
    return policy, generate_demo_tables(customers=600).loyalty


def run_ingest(body: bytes, policy: DatasetPolicy) -> list[pa.RecordBatch]:
    stored: list[pa.RecordBatch] = []
    ingest(io.BytesIO(body), "arrow", policy, TokenKey(AES_CMAC, b"s" * 32), stored.append)
    return stored


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_and_dictionary_encoded_uploads_store_what_a_plain_one_does(
    codec: str | None, loyalty: tuple[DatasetPolicy, pa.Table]
) -> None:
    policy, table = loyalty
    expected = pa.Table.from_batches(run_ingest(stream(table), policy))
    encoded = table.set_column(1, "region", table.column("region").dictionary_encode())
    stored = pa.Table.from_batches(run_ingest(stream(encoded, codec, chunk=128), policy))
    assert stored.equals(expected) and stored.num_rows == 600


def test_mangled_uploads_are_invalid_datasets_never_other_errors(
    loyalty: tuple[DatasetPolicy, pa.Table],
) -> None:
    policy, table = loyalty
    rng = random.Random(7)
    bodies = [stream(table.slice(0, 200), codec, chunk=50) for codec in CODECS]
    for trial in range(240):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        with contextlib.suppress(InvalidDataset):
            run_ingest(bytes(body if trial % 2 else body[: rng.randrange(len(body))]), policy)
