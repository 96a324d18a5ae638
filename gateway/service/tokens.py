"""Customer tokens: ``HMAC-SHA256(collaboration secret, key)`` truncated to 128 bits, in bulk.

Tokenising is the costliest step of an upload, one HMAC per row, and a Python loop over rows
holds the GIL (hashlib releases it only for inputs of 2 KiB and more, never for a short key).
So a batch is split in two and tokenised on two cores at once:

* the head in Python: the standard HMAC (RFC 2104) from hashlib's SHA-256, started from the
  two precomputed pad states, so each key costs two SHA-256 compressions and no key schedule;
* the tail in DuckDB, in a worker thread (DuckDB runs without the GIL), with the same formula
  written in SQL: ``sha256(opad || sha256(ipad || key))``, truncated to 16 bytes.

Both give bit-identical tokens (a test checks them against ``hmac``). The split follows the
measured speed of each side, so both finish a batch at about the same time. DuckDB works in
memory only: it cannot spill the keys to disk, read files or load extensions.

Example:
    >>> with Tokeniser(secret) as tokenise:
    ...     tokens = tokenise(pa.array(["C00000001", "C00000002"]))
    >>> tokens[0].as_py() == hmac.new(secret, b"C00000001", hashlib.sha256).digest()[:16]
    True
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOKEN_BYTES = 16
TOKEN_TYPE = pa.binary(TOKEN_BYTES)
_SHA256_BLOCK = 64
PARALLEL_MIN_ROWS = 16_384
"""Batches smaller than this are tokenised in Python alone (a DuckDB call costs ~1 ms)."""
_HMAC_SQL = "SELECT unhex(left(sha256($opad || unhex(sha256($ipad || k))), 32)) AS token FROM keys"


class Tokeniser:
    """Turns customer keys (UTF-8 text) into tokens under one collaboration's secret.

    Holds a worker thread and an in-memory DuckDB connection: use it in a ``with`` block (or
    call :meth:`close`).
    """

    def __init__(self, secret: bytes, *, parallel: bool = True) -> None:
        key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._ipad = bytes(b ^ 0x36 for b in key)
        self._opad = bytes(b ^ 0x5C for b in key)
        self._inner = hashlib.sha256(self._ipad)
        self._outer = hashlib.sha256(self._opad)
        self._parallel = parallel
        self._pool: ThreadPoolExecutor | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self.duckdb_share = 0.4
        """The fraction of each large batch given to DuckDB; follows the measured speeds."""

    def __call__(self, keys: pa.Array) -> pa.FixedSizeBinaryArray:
        """Tokens of ``keys`` (a string or binary array without nulls), in order."""
        binary = pc.cast(keys, pa.binary())
        if not self._parallel or len(binary) < PARALLEL_MIN_ROWS:
            return _fixed(self._python(binary), len(binary))
        split = int(len(binary) * (1.0 - self.duckdb_share))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokens")
        tail = self._pool.submit(self._duckdb, binary.slice(split))
        started = time.perf_counter()
        head = self._python(binary.slice(0, split))
        python_s = (time.perf_counter() - started) / max(split, 1)
        tail_tokens, duckdb_s = tail.result()
        self._rebalance(python_s, duckdb_s / max(len(binary) - split, 1))
        return _fixed(head + tail_tokens, len(binary))

    def _python(self, keys: pa.Array) -> bytes:
        values: list[bytes] = keys.to_pylist()
        inner, outer = self._inner.copy, self._outer.copy
        out = bytearray(TOKEN_BYTES * len(values))
        view = memoryview(out)
        at = 0
        for value in values:
            h = inner()
            h.update(value)
            g = outer()
            g.update(h.digest())
            view[at : at + TOKEN_BYTES] = g.digest()[:TOKEN_BYTES]
            at += TOKEN_BYTES
        return bytes(out)

    def _duckdb(self, keys: pa.Array) -> tuple[bytes, float]:
        """Tokens of ``keys`` computed by DuckDB, and the seconds it took."""
        started = time.perf_counter()
        if self._con is None:
            self._con = _connect()
        self._con.register("keys", pa.table({"k": keys}))
        try:
            params = {"ipad": self._ipad, "opad": self._opad}
            result = self._con.sql(_HMAC_SQL, params=params).to_arrow_table()
        finally:
            self._con.unregister("keys")
        tokens = result.column(0).combine_chunks()
        offsets = np.frombuffer(tokens.buffers()[1], dtype=np.int32)
        first, last = int(offsets[tokens.offset]), int(offsets[tokens.offset + len(tokens)])
        if tokens.type != pa.binary() or last - first != TOKEN_BYTES * len(tokens):
            raise RuntimeError("DuckDB returned tokens of an unexpected shape")
        raw = tokens.buffers()[2][first:last].to_pybytes()
        return raw, time.perf_counter() - started

    def _rebalance(self, python_per_row: float, duckdb_per_row: float) -> None:
        target = python_per_row / (python_per_row + duckdb_per_row)
        share = 0.5 * self.duckdb_share + 0.5 * target
        self.duckdb_share = min(0.8, max(0.1, share))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Tokeniser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect() -> duckdb.DuckDBPyConnection:
    """One thread, in memory only: no spilling (the keys are plaintext), no files, no extensions."""
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": 1,
            "memory_limit": "512MB",
        },
    )
    con.execute("SET temp_directory = ''")
    con.execute("SET enable_external_access = false")
    return con


def _fixed(tokens: bytes, rows: int) -> pa.FixedSizeBinaryArray:
    return pa.FixedSizeBinaryArray.from_buffers(TOKEN_TYPE, rows, [None, pa.py_buffer(tokens)])


class RowsPerCustomer:
    """The largest number of rows any one token has, over tokens given batch by batch.

    Tokens are kept as two 64-bit words each (16 bytes a row). The common case, one row per
    customer, is settled by sorting the first words once, in place; only tokens whose first
    word repeats are then counted exactly, on both words. Peak memory: the tokens plus one
    copy of their first words.
    """

    def __init__(self) -> None:
        self._words: list[np.ndarray] = []

    def add(self, tokens: pa.FixedSizeBinaryArray) -> None:
        data = tokens.buffers()[1]
        assert data is not None
        words = np.frombuffer(data, dtype=np.uint64, count=2 * (tokens.offset + len(tokens)))
        self._words.append(words[2 * tokens.offset :].reshape(-1, 2).copy())

    def max_rows(self) -> int:
        """The largest number of rows of one customer (0 when no token was added)."""
        if not self._words:
            return 0
        first = np.concatenate([w[:, 0] for w in self._words])
        first.sort()
        repeated = np.unique(first[1:][first[1:] == first[:-1]])
        del first
        if len(repeated) == 0:
            return 1
        candidates = np.concatenate([w[np.isin(w[:, 0], repeated)] for w in self._words])
        _, counts = np.unique(candidates, axis=0, return_counts=True)
        return int(counts.max())
