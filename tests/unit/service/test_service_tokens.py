"""Tokens are a standard keyed PRF, bit for bit, whichever code path computes them.

* ``aes256-cmac-128`` (new collaborations): the bulk tokeniser, which lays a batch out as a
  matrix of AES blocks, must equal ``cryptography``'s own CMAC for every key: empty, one byte,
  exactly one or several blocks, one byte past a block, non-ASCII, over 256 bytes (one by
  one), in batches of equal and of mixed lengths, sliced views, string, large
  string and binary arrays. The core is checked against NIST SP 800-38B's AES-256 examples,
  and one known answer pins the whole scheme (HKDF included): a change to it would silently
  break joins with every token already stored.
* ``hmac-sha256-128`` (collaborations created by earlier releases): a batch is split between
  a Python loop and DuckDB; both halves, and the whole, must equal ``hmac.new(secret, key,
  sha256).digest()[:16]`` for any secret length and any key.

Rows per customer are counted exactly, also when tokens share their first 64 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.service.tokens import (
    AES_CMAC,
    HMAC_SHA256,
    MATRIX_POSITIONS,
    PARALLEL_MIN_ROWS,
    CmacTokeniser,
    HmacTokeniser,
    RowsPerCustomer,
    TokenKey,
)


def reference(secret: bytes, keys: list[str]) -> list[bytes]:
    return [hmac.new(secret, k.encode(), hashlib.sha256).digest()[:16] for k in keys]


def cmac_of(aes_key: bytes, key: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(aes_key))
    mac.update(key)
    return mac.finalize()


KEYS = [f"C{i:08d}" for i in range(PARALLEL_MIN_ROWS + 5000)] + [
    "",
    "é-ü-中",
    "x" * 200,
    "C00000001",
]

NIST_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
NIST_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
NIST_TAGS = {  # SP 800-38B, appendix D.3 (AES-256), examples 9-12
    0: "028962f61b7bf89efc6b551f4667d983",
    16: "28a7023f452e8f82bd4bf28d8c37c35c",
    40: "aaf3d8f1de5640c232f5b169b9c911e6",
    64: "e1992190549f6ed5696a2c056c315410",
}


def test_the_bulk_cmac_gives_the_nist_examples_in_one_batch() -> None:
    keys = [NIST_MESSAGE[:n] for n in NIST_TAGS]
    with CmacTokeniser(NIST_KEY) as tokenise:
        tokens = tokenise(pa.array(keys, pa.binary()))
    assert [t.hex() for t in tokens.to_pylist()] == list(NIST_TAGS.values())


def test_the_cmac_scheme_is_pinned() -> None:
    """HKDF-SHA256 of the secret, then AES-256-CMAC of the key's UTF-8 bytes: a known answer."""
    key = TokenKey(AES_CMAC, bytes(range(32)))
    info = b"insight-gateway/tokens/aes256-cmac-128"
    aes_key = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(key.secret)
    with key.tokeniser() as tokenise:
        got = tokenise(pa.array(["C00000001"]))[0].as_py()
    assert got == key.token(b"C00000001") == cmac_of(aes_key, b"C00000001")
    assert got.hex() == "624f8eefb9333c4385f6f5a2b61058b2"


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 200])
def test_bulk_cmac_equals_cmac_for_batches_of_one_length(length: int) -> None:
    aes_key = os.urandom(32)
    keys = [os.urandom(length) for _ in range(300)]
    with CmacTokeniser(aes_key) as tokenise:
        tokens = tokenise(pa.array(keys, pa.binary()))
    assert tokens.type == pa.binary(16)
    assert tokens.to_pylist() == [cmac_of(aes_key, k) for k in keys]


def test_bulk_cmac_equals_cmac_for_mixed_keys_and_views() -> None:
    rng = random.Random(7)
    aes_key = os.urandom(32)
    sizes = [0, 1, 15, 16, 17, 32, 47, 64, 65, 70, 300, 1100]
    keys = [os.urandom(rng.choice(sizes)) for _ in range(3000)]  # every tier, 1 to 69 blocks
    keys += [k.encode() for k in KEYS[-4:]]
    expected = [cmac_of(aes_key, k) for k in keys]
    array = pa.array(keys, pa.binary())
    with CmacTokeniser(aes_key) as tokenise:
        assert tokenise(array).to_pylist() == expected
        assert tokenise(array.slice(5, 2000)).to_pylist() == expected[5:2005]
        assert tokenise(array.slice(10, 0)).to_pylist() == []
        assert tokenise(pa.array(keys, pa.large_binary())).to_pylist() == expected
        text = ["C00000001", "é-ü-中", "", "x" * 70, "C1"]
        want = [cmac_of(aes_key, t.encode()) for t in text]
        assert tokenise(pa.array(text)).to_pylist() == want
        assert tokenise(pa.array(text, pa.large_string())).to_pylist() == want
        assert tokenise(pa.array([""] * 5)).to_pylist() == [cmac_of(aes_key, b"")] * 5


@pytest.mark.parametrize("blocks", [MATRIX_POSITIONS, MATRIX_POSITIONS + 1, 300])
def test_bulk_cmac_of_long_keys_as_a_matrix_or_one_by_one(blocks: int) -> None:
    """Keys up to MATRIX_POSITIONS blocks go through the matrix; longer ones one by one."""
    aes_key = os.urandom(32)
    keys = [os.urandom(16 * blocks - 1 + i % 3) for i in range(40)] + [b"C1", b""]
    with CmacTokeniser(aes_key) as tokenise:
        assert tokenise(pa.array(keys, pa.binary())).to_pylist() == [
            cmac_of(aes_key, k) for k in keys
        ]


@pytest.mark.parametrize("scheme", [AES_CMAC, HMAC_SHA256])
def test_token_keys_tokenise_like_their_reference(scheme: str) -> None:
    key = TokenKey(scheme, os.urandom(32))
    with key.tokeniser() as tokenise:
        tokens = tokenise(pa.array(KEYS))
    assert tokens.to_pylist() == [key.token(k.encode()) for k in KEYS]
    assert "secret" in repr(key) and key.secret.hex() not in repr(key)
    assert TokenKey(scheme, key.secret) == key


def test_schemes_give_different_tokens_and_unknown_schemes_are_refused() -> None:
    secret = os.urandom(32)
    assert TokenKey(AES_CMAC, secret).token(b"C1") != TokenKey(HMAC_SHA256, secret).token(b"C1")
    with pytest.raises(ValueError, match="unknown token scheme"):
        TokenKey("md5", secret)


@pytest.mark.parametrize("secret_bytes", [1, 32, 64, 65, 200])
def test_tokens_are_hmac_sha256_on_both_sides_of_the_split(secret_bytes: int) -> None:
    secret = os.urandom(secret_bytes)
    expected = reference(secret, KEYS)
    with HmacTokeniser(secret) as tokenise:
        both = tokenise(pa.array(KEYS))  # large: split between Python and DuckDB
        assert 0.1 <= tokenise.duckdb_share <= 0.8
        python_only = tokenise(pa.array(KEYS[:100]))  # small: Python alone
        sliced = tokenise(pa.array(KEYS).slice(3, PARALLEL_MIN_ROWS + 2))  # an offset view
    assert both.type == pa.binary(16)
    assert both.to_pylist() == expected
    assert python_only.to_pylist() == expected[:100]
    assert sliced.to_pylist() == expected[3 : PARALLEL_MIN_ROWS + 5]
    with HmacTokeniser(secret, parallel=False) as serial:
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
