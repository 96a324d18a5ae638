"""Encrypted dataset files: Parquet sealed in AES-256-GCM chunks, decrypted into memory only.

Each dataset version has its own random data key, stored only wrapped by the master key; the
dataset id and version are the associated data of both the wrapped key and every chunk, so a
file moved under another version's name does not decrypt. A version is written as it is
ingested (batch by batch, through :class:`DatasetWriter`), so a large upload is never held
whole in memory; it is read back whole, into Arrow, for the query engine.

Files written before the chunked format (one AES-GCM message: nonce, ciphertext, tag) are
still read: the chunked format starts with a magic and a format byte.

Example:
    >>> files = DatasetFiles(root, keyring)
    >>> with files.writer("c/acme.survey/v1.parquet.enc", aad) as writer:
    ...     writer.write(batch)
    ...     wrapped_key = writer.commit()
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.domain.model import DatasetVersion
from gateway.store.crypto import Keyring
from gateway.store.sealed import HEADER_BYTES, SealedWriter, is_sealed, open_sealed

ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group: what the readers parallelise over."""
COMPRESSION = "lz4"
"""LZ4 rather than zstd: files about 30% larger, written faster and read 2-4x faster (the
query engine decrypts and decodes a version on every cold start)."""


class DatasetWriter:
    """One dataset version being written: Arrow batches in, a sealed Parquet file out.

    Batches are gathered into row groups of :data:`ROW_GROUP_ROWS` rows, encoded and sealed
    as they come; at most one row group is held here. The file takes its final name only in
    :meth:`commit`; leaving the ``with`` block without committing removes what was written.
    """

    def __init__(self, path: Path, keyring: Keyring, aad: bytes) -> None:
        data_key = AESGCM.generate_key(bit_length=256)
        self.wrapped_key = keyring.wrap(data_key, aad)
        self.path = path
        self.rows = 0
        self._partial = path.with_suffix(".partial")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._file: BinaryIO = os.fdopen(os.open(self._partial, flags, 0o600), "wb")
        self._sealed = SealedWriter(self._file, data_key, aad)
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._done = False

    def write(self, batch: pa.RecordBatch) -> None:
        """Add ``batch``; every batch must have the schema of the first."""
        if self._done:
            raise ValueError("the dataset file is already committed or aborted")
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        if self._parquet is None:
            self._parquet = _parquet_writer(self._sealed, table.schema)
        self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))

    def commit(self) -> bytes:
        """Finish the file, make it durable under its final name; return the wrapped data key.

        Raises:
            ValueError: no row was written.
        """
        if self.rows == 0:
            raise ValueError("a dataset file needs at least one row")
        self._flush_row_group()
        assert self._parquet is not None
        self._parquet.close()
        self._sealed.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)
        self._done = True
        return self.wrapped_key

    def abort(self) -> None:
        """Drop what was written (idempotent; nothing happens after a commit)."""
        if self._done:
            return
        self._done = True
        self._pending = []
        self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _parquet_writer(sink: SealedWriter, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary-encode text columns only (dimensions: few distinct values); skip statistics
    for binary columns (tokens: random, unique, never filtered on)."""
    text = [f.name for f in schema if pa.types.is_string(f.type)]
    stats = [f.name for f in schema if not pa.types.is_fixed_size_binary(f.type)]
    return pq.ParquetWriter(
        sink, schema, compression=COMPRESSION, use_dictionary=text, write_statistics=stats
    )


class DatasetFiles:
    """Writes sealed dataset files under ``root`` and reads them back as Arrow tables.

    Decrypted tables are cached in memory (never on disk), a few versions at a time.
    """

    def __init__(self, root: Path, keyring: Keyring, cache_size: int = 8) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keyring = keyring
        self._cache: OrderedDict[str, pa.Table] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def writer(self, relative: str, aad: bytes) -> DatasetWriter:
        """A writer for a new file at ``root/relative``, sealed under a fresh data key."""
        return DatasetWriter(self.root / relative, self._keyring, aad)

    def write(self, relative: str, table: pa.Table, aad: bytes) -> bytes:
        """Seal ``table`` as Parquet at ``root/relative``; return the wrapped data key.

        The file is written to a temporary name and renamed, so a crash leaves no half file
        under the final name.
        """
        with self.writer(relative, aad) as writer:
            for batch in table.to_batches():
                writer.write(batch)
            return writer.commit()

    def read(self, dv: DatasetVersion) -> pa.Table:
        """The dataset version as an Arrow table (from the cache when it is there).

        Raises:
            DecryptionFailed: wrong master key, a tampered, cut or swapped file.
        """
        cache_key = f"{dv.collaboration}/{dv.dataset}/{dv.version}"
        with self._lock:
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return self._cache[cache_key]
        table = self._load(dv)
        with self._lock:
            self._cache[cache_key] = table
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return table

    def _load(self, dv: DatasetVersion) -> pa.Table:
        blob = (self.root / dv.file).read_bytes()
        if is_sealed(blob[:HEADER_BYTES]):
            data_key = self._keyring.unwrap(dv.wrapped_key, dv.aad)
            return pq.read_table(pa.BufferReader(open_sealed(blob, data_key, dv.aad)))
        plaintext = self._keyring.open(dv.wrapped_key, blob, dv.aad)  # the single-message format
        return pq.read_table(io.BytesIO(plaintext))

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)
