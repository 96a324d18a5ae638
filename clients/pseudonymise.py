"""Client-side pseudonymisation of customer keys before upload.

Partners who share a secret replace each raw customer key by ``HMAC-SHA256(secret, str(key))``
in hex, so the same customer gets the same token at every partner and the raw key never leaves
the partner's machine. The gateway re-keys whatever arrives with its own per-collaboration
secret, so these tokens are never stored as they are uploaded.

Partners must agree on the key's text form: ``str(1234)`` is ``"1234"`` but ``str(1234.0)`` is
``"1234.0"``, so cast key columns to the same type (usually string or integer) first.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["MIN_SECRET_BYTES", "pseudonymise_keys", "pseudonymise_table"]

MIN_SECRET_BYTES = 16
"""Shortest secret accepted: 128 bits, so tokens cannot be reversed by guessing the secret."""


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray | memoryview):
        raise TypeError("secret must be bytes, e.g. secrets.token_bytes(32)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret must be at least {MIN_SECRET_BYTES} bytes long (got {len(secret)})"
        )


def pseudonymise_keys(values: Iterable[object], secret: bytes) -> list[str]:
    """Replace each customer key by the hex HMAC-SHA256 of its ``str()`` under ``secret``.

    Guaranteed: deterministic for a given secret (the same key always maps to the same
    64-character lowercase hex token, at every partner), order-preserving, and keyed (without
    the secret the token cannot be recomputed from a guessed key).

    Args:
        values: The raw customer keys; ``None`` is refused.
        secret: The secret the partners share, at least 16 bytes.

    Returns:
        One token per key, in the same order.

    Raises:
        TypeError: ``secret`` is not bytes.
        ValueError: ``secret`` is shorter than 16 bytes, or a key is ``None``.

    Example:
        >>> tokens = pseudonymise_keys(["c-1", "c-2"], b"0123456789abcdef")
        >>> len(tokens[0])
        64
    """
    _check_secret(secret)
    keyed = hmac.new(bytes(secret), digestmod=hashlib.sha256)  # the secret is absorbed once
    tokens: list[str] = []
    for value in values:
        if value is None:
            raise ValueError("a null customer key cannot be pseudonymised")
        mac = keyed.copy()
        mac.update(str(value).encode("utf-8"))
        tokens.append(mac.hexdigest())
    return tokens


def pseudonymise_table(
    table: pa.Table | pd.DataFrame, column: str, secret: bytes
) -> pa.Table | pd.DataFrame:
    """Return ``table`` with ``column`` replaced, in place, by its pseudonymised string tokens.

    The input is not modified; the column keeps its position and name and becomes a string
    column of :func:`pseudonymise_keys` tokens. A pandas DataFrame gives a DataFrame back
    (index kept), a pyarrow Table a Table.

    Args:
        table: The customer-level table to upload (``pyarrow.Table`` or ``pandas.DataFrame``).
        column: The customer-key column.
        secret: The secret the partners share, at least 16 bytes.

    Raises:
        KeyError: ``column`` is not in the table.
        TypeError: ``secret`` is not bytes, or ``table`` is neither kind of table.
        ValueError: ``secret`` is too short, or the column holds a null.

    Example:
        >>> t = pa.table({"customer_key": [1, 2], "spend": [10.0, 20.0]})
        >>> pseudonymise_table(t, "customer_key", b"0123456789abcdef").column_names
        ['customer_key', 'spend']
    """
    import pyarrow as pa

    _check_secret(secret)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(table, pandas.DataFrame):
        if column not in table.columns:
            raise KeyError(f"the table has no column named {column!r}")
        frame = table.copy()
        frame[column] = pseudonymise_keys(table[column].tolist(), secret)
        return frame
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table or pandas.DataFrame, not {type(table)}")
    index = table.schema.get_field_index(column)
    if index < 0:
        raise KeyError(f"the table has no single column named {column!r}")
    tokens = pseudonymise_keys(table.column(index).to_pylist(), secret)
    return table.set_column(index, pa.field(column, pa.string()), pa.array(tokens, pa.string()))
