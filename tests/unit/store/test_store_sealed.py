"""Sealed streams, the upload spool and dataset files: round trips and every kind of tampering.

Chunks are made small (1 KiB) here so that many-chunk streams stay tiny; the format is the
same whatever the chunk size (it is in the header, itself authenticated).
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.domain.model import DatasetVersion
from gateway.store.crypto import DecryptionFailed, Keyring
from gateway.store.files import DatasetFiles
from gateway.store.sealed import (
    HEADER_BYTES,
    MAGIC,
    TAG_BYTES,
    SealedReader,
    SealedWriter,
    is_sealed,
    open_sealed,
)
from gateway.store.spool import UploadSpool

CHUNK = 1024
AAD = b"acme-bigmart-cx/bigmart.loyalty/v1"
NOW = datetime.now(UTC)
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5]


def seal(data: bytes, key: bytes, aad: bytes = AAD, pieces: int = 1) -> bytes:
    sink = io.BytesIO()
    with SealedWriter(sink, key, aad, chunk_bytes=CHUNK) as writer:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
    return sink.getvalue()


def opens(blob: bytes, key: bytes, aad: bytes = AAD) -> bytes:
    """The plaintext, read both ways (whole, and through the seekable reader), checked equal."""
    whole = open_sealed(blob, key, aad).to_pybytes()
    with SealedReader(io.BytesIO(blob), key, aad) as reader:
        assert reader.read() == whole
    return whole


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_round_trip_whatever_the_size_and_the_writes(size: int, pieces: int) -> None:
    key = AESGCM.generate_key(bit_length=256)
    data = os.urandom(size)
    blob = seal(data, key, pieces=pieces)
    assert is_sealed(blob[:HEADER_BYTES]) and blob.startswith(MAGIC)
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER_BYTES + size + chunks * TAG_BYTES
    assert opens(blob, key) == data


def test_the_reader_seeks_anywhere() -> None:
    key = AESGCM.generate_key(bit_length=256)
    data = os.urandom(5 * CHUNK + 17)
    with SealedReader(io.BytesIO(seal(data, key)), key, AAD) as reader:
        assert reader.size == len(data) and reader.seekable()
        for at, length in [(0, 10), (CHUNK - 3, 7), (4 * CHUNK, 2 * CHUNK), (len(data) - 1, 9)]:
            reader.seek(at)
            assert reader.read(length) == data[at : at + length]
        reader.seek(-20, io.SEEK_END)
        assert reader.read() == data[-20:]
        assert reader.read(5) == b""


TAMPERINGS = [
    "a flipped ciphertext byte",
    "a changed header",
    "two chunks swapped",
    "cut at a chunk boundary",
    "cut inside a chunk",
    "the last chunk repeated",
    "a chunk dropped",
    "not sealed at all",
]


def tamperings(blob: bytes) -> dict[str, bytes]:
    """Ways to change a sealed stream of at least three full chunks, each of which must fail."""
    stride = CHUNK + TAG_BYTES
    last = (len(blob) - HEADER_BYTES) % stride
    first, second = HEADER_BYTES, HEADER_BYTES + stride
    flipped = bytearray(blob)
    flipped[second + 5] ^= 0x01
    header = bytearray(blob)
    header[HEADER_BYTES - 1] ^= 0x01  # the chunk size in the header
    swapped = (
        blob[:first] + blob[second : second + stride] + blob[first:second] + blob[second + stride :]
    )
    return {
        "a flipped ciphertext byte": bytes(flipped),
        "a changed header": bytes(header),
        "two chunks swapped": swapped,
        "cut at a chunk boundary": blob[: HEADER_BYTES + 2 * stride],
        "cut inside a chunk": blob[:-7],
        "the last chunk repeated": blob + blob[-last:],
        "a chunk dropped": blob[:first] + blob[second:],
        "not sealed at all": b"PAR1" + blob[4:],
    }


@pytest.mark.parametrize("case", TAMPERINGS)
def test_any_change_to_a_stream_fails_to_open(case: str) -> None:
    key = AESGCM.generate_key(bit_length=256)
    data = os.urandom(3 * CHUNK + 100)
    changes = tamperings(seal(data, key))
    assert list(changes) == TAMPERINGS
    bad = changes[case]
    with pytest.raises(DecryptionFailed):
        open_sealed(bad, key, AAD)
    with pytest.raises(DecryptionFailed), SealedReader(io.BytesIO(bad), key, AAD) as reader:
        reader.read()


def test_a_wrong_key_or_name_fails() -> None:
    key = AESGCM.generate_key(bit_length=256)
    blob = seal(b"x" * 3000, key)
    for other_key, aad in [(AESGCM.generate_key(bit_length=256), AAD), (key, AAD + b"2")]:
        with pytest.raises(DecryptionFailed):
            open_sealed(blob, other_key, aad)
        with pytest.raises(DecryptionFailed):
            SealedReader(io.BytesIO(blob), other_key, aad)


def test_an_unfinished_writer_leaves_a_stream_that_does_not_open() -> None:
    key = AESGCM.generate_key(bit_length=256)
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), SealedWriter(sink, key, AAD, chunk_bytes=CHUNK) as writer:
        writer.write(os.urandom(3 * CHUNK + 1))
        raise RuntimeError("the writer dies")
    with pytest.raises(DecryptionFailed):
        open_sealed(sink.getvalue(), key, AAD)


def test_the_spool_is_sealed_private_and_removed(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    body = b"customer_key,region\nC-secret-1,north\n" * 100_000  # 3.6 MB: several chunks
    with UploadSpool(directory) as spool:
        for start in range(0, len(body), 65_536):
            spool.write(body[start : start + 65_536])
        assert spool.size == len(body)
        on_disk = spool.path.read_bytes()
        assert on_disk.startswith(MAGIC) and b"C-secret" not in on_disk
        assert spool.path.stat().st_mode & 0o777 == 0o600
        assert directory.stat().st_mode & 0o777 == 0o700
        with spool.reader() as reader:
            assert reader.read() == body
            reader.seek(len(body) - 5)
            assert reader.read() == body[-5:]
        path = spool.path
    assert not path.exists() and list(directory.iterdir()) == []
    with pytest.raises(ValueError):
        spool.reader()


def test_dataset_files_round_trip_and_read_the_single_message_format(
    tmp_path: Path,
) -> None:
    root = tmp_path / "datasets"
    keyring = Keyring(os.urandom(32))
    files = DatasetFiles(root, keyring)
    table = pa.table(
        {
            "_token": pa.array([os.urandom(16) for _ in range(5000)], pa.binary(16)),
            "region": ["north", "south"] * 2500,
            "spend": [float(i) for i in range(5000)],
        }
    )

    def version(number: int, wrapped: bytes) -> DatasetVersion:
        return DatasetVersion(
            "c", "o.d", number, f"c/o.d/v{number}.parquet.enc", wrapped, 5000, 1, {}, "k", NOW
        )

    wrapped = files.write("c/o.d/v1.parquet.enc", table, b"c/o.d/v1")
    assert (root / "c/o.d/v1.parquet.enc").read_bytes().startswith(MAGIC)
    assert DatasetFiles(root, keyring).read(version(1, wrapped)).equals(table)
    # A file of the earlier format: one AES-GCM message over the whole Parquet file.
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    old_wrapped, blob = keyring.seal(buffer.getvalue(), b"c/o.d/v2")
    (root / "c/o.d/v2.parquet.enc").write_bytes(blob)
    assert DatasetFiles(root, keyring).read(version(2, old_wrapped)).equals(table)
    with pytest.raises(DecryptionFailed):  # bound to its version: v1's file is not v2
        DatasetFiles(root, keyring).read(version(2, wrapped))


def test_a_dataset_writer_that_is_not_committed_leaves_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "datasets"
    files = DatasetFiles(root, Keyring(os.urandom(32)))
    batch = pa.record_batch({"a": list(range(100))})
    with pytest.raises(RuntimeError), files.writer("c/o.d/v1.parquet.enc", b"aad") as writer:
        writer.write(batch)
        raise RuntimeError("ingest refused")
    with files.writer("c/o.d/v1.parquet.enc", b"aad") as writer, pytest.raises(ValueError):
        writer.commit()  # no rows
    assert [p for p in root.rglob("*") if p.is_file()] == []
