"""Pseudonymisation is a deterministic keyed hash and refuses weak secrets."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pytest

from clients import pseudonymise_keys
from clients.pseudonymise import pseudonymise_table

SECRET = b"partners-shared-secret-32-bytes!"


def test_tokens_are_hex_hmac_sha256_of_str() -> None:
    expected = hmac.new(SECRET, b"c-1", hashlib.sha256).hexdigest()
    assert pseudonymise_keys(["c-1"], SECRET) == [expected]
    assert pseudonymise_keys([1234], SECRET) == pseudonymise_keys(["1234"], SECRET)


def test_deterministic_and_order_preserving() -> None:
    keys = ["c-3", "c-1", "c-2", "c-1"]
    first = pseudonymise_keys(keys, SECRET)
    assert first == pseudonymise_keys(iter(keys), SECRET)
    assert first[1] == first[3]
    assert len(set(first)) == 3
    assert all(len(t) == 64 and int(t, 16) >= 0 for t in first)


def test_a_different_secret_gives_different_tokens() -> None:
    other = b"another-secret-of-32-bytes-long!"
    assert pseudonymise_keys(["c-1"], SECRET) != pseudonymise_keys(["c-1"], other)


@pytest.mark.parametrize("secret", [b"", b"x", b"fifteen-bytes!!"])
def test_short_secrets_are_refused(secret: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        pseudonymise_keys(["c-1"], secret)
    with pytest.raises(ValueError, match="16 bytes"):
        pseudonymise_table(pa.table({"k": ["c-1"]}), "k", secret)


def test_sixteen_bytes_is_enough() -> None:
    assert len(pseudonymise_keys(["c-1"], b"0123456789abcdef")) == 1


def test_text_secret_is_refused() -> None:
    with pytest.raises(TypeError, match="bytes"):
        pseudonymise_keys(["c-1"], "a-text-secret-that-is-long")  # type: ignore[arg-type]


def test_null_key_is_refused() -> None:
    with pytest.raises(ValueError, match="null"):
        pseudonymise_keys(["c-1", None], SECRET)


def test_table_column_is_replaced_in_place() -> None:
    table = pa.table({"spend": [1.0, 2.0], "customer_key": [11, 12], "region": ["n", "s"]})
    out = pseudonymise_table(table, "customer_key", SECRET)
    assert out.column_names == ["spend", "customer_key", "region"]
    assert out.schema.field("customer_key").type == pa.string()
    assert out.column("customer_key").to_pylist() == pseudonymise_keys([11, 12], SECRET)
    assert out.column("spend").to_pylist() == [1.0, 2.0]
    assert table.column("customer_key").to_pylist() == [11, 12]


def test_table_with_chunked_column() -> None:
    table = pa.concat_tables([pa.table({"k": ["a", "b"]}), pa.table({"k": ["c"]})])
    out = pseudonymise_table(table, "k", SECRET)
    assert out.column("k").to_pylist() == pseudonymise_keys(["a", "b", "c"], SECRET)


def test_missing_column() -> None:
    with pytest.raises(KeyError, match="customer_key"):
        pseudonymise_table(pa.table({"k": ["a"]}), "customer_key", SECRET)


def test_null_in_table_is_refused() -> None:
    with pytest.raises(ValueError, match="null"):
        pseudonymise_table(pa.table({"k": ["a", None]}), "k", SECRET)


def test_dataframe_gives_a_dataframe_with_the_same_tokens() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"customer_key": ["c-1", "c-2"], "spend": [1.0, 2.0]}, index=[7, 9])
    out = pseudonymise_table(frame, "customer_key", SECRET)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["customer_key", "spend"]
    assert list(out.index) == [7, 9]
    assert out["customer_key"].tolist() == pseudonymise_keys(["c-1", "c-2"], SECRET)
    assert frame["customer_key"].tolist() == ["c-1", "c-2"]
    with pytest.raises(KeyError, match="customer_id"):
        pseudonymise_table(frame, "customer_id", SECRET)


def test_other_table_kinds_are_refused() -> None:
    with pytest.raises(TypeError, match="pyarrow.Table or pandas.DataFrame"):
        pseudonymise_table({"customer_key": ["c-1"]}, "customer_key", SECRET)
