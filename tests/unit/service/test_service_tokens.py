"""Tokens are the standard HMAC-SHA256 (cut to 16 bytes), whichever side computes them.

A batch is split between a Python loop and DuckDB; both halves, and the whole, must equal
``hmac.new(secret, key, sha256).digest()[:16]`` for any secret length (short, one block, more
than a block: then the key is hashed first) and any key (empty, non-ASCII, longer than a
SHA-256 block). Rows per customer are counted exactly, also when tokens share their first
64 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np
import pyarrow as pa
import pytest

from gateway.service.tokens import PARALLEL_MIN_ROWS, RowsPerCustomer, Tokeniser


def reference(secret: bytes, keys: list[str]) -> list[bytes]:
    return [hmac.new(secret, k.encode(), hashlib.sha256).digest()[:16] for k in keys]


KEYS = [f"C{i:08d}" for i in range(PARALLEL_MIN_ROWS + 5000)] + [
    "",
    "é-ü-中",
    "x" * 200,
    "C00000001",
]


@pytest.mark.parametrize("secret_bytes", [1, 32, 64, 65, 200])
def test_tokens_are_hmac_sha256_on_both_sides_of_the_split(secret_bytes: int) -> None:
    secret = os.urandom(secret_bytes)
    expected = reference(secret, KEYS)
    with Tokeniser(secret) as tokenise:
        both = tokenise(pa.array(KEYS))  # large: split between Python and DuckDB
        assert 0.1 <= tokenise.duckdb_share <= 0.8
        python_only = tokenise(pa.array(KEYS[:100]))  # small: Python alone
        sliced = tokenise(pa.array(KEYS).slice(3, PARALLEL_MIN_ROWS + 2))  # an offset view
    assert both.type == pa.binary(16)
    assert both.to_pylist() == expected
    assert python_only.to_pylist() == expected[:100]
    assert sliced.to_pylist() == expected[3 : PARALLEL_MIN_ROWS + 5]
    with Tokeniser(secret, parallel=False) as serial:
        assert serial(pa.array(KEYS)).to_pylist() == expected


def fixed(words: list[tuple[int, int]]) -> pa.FixedSizeBinaryArray:
    raw = np.array(words, dtype=np.uint64).tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(words), [None, pa.py_buffer(raw)]
    )


def test_rows_per_customer_is_exact() -> None:
    counter = RowsPerCustomer()
    assert counter.max_rows() == 0
    counter.add(fixed([(1, 1), (2, 2), (3, 3)]))
    counter.add(fixed([(1, 2), (4, 4)]))  # (1, 2) shares its first word with (1, 1) only
    assert counter.max_rows() == 1
    counter = RowsPerCustomer()
    batch = fixed([(5, 5), (1, 1), (5, 5), (7, 7), (5, 5)])
    counter.add(batch.slice(1))
    counter.add(batch.slice(0, 1))
    counter.add(fixed([(1, 1), (1, 2)]))
    assert counter.max_rows() == 3  # (5, 5) three times; (1, 1) twice
