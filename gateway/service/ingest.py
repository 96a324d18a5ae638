"""Read an uploaded file batch by batch, check it against the policy, tokenise customer keys.

Formats: Parquet, CSV and Arrow IPC streams, all read in batches from the spooled upload.
Every refusal names the column and the rule, never a value from the file. Customer keys are
replaced by ``HMAC-SHA256(collaboration secret, key)`` truncated to 128 bits; raw keys are not
kept. Hidden columns are dropped at ingest: what the policy never lets anyone use is not stored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq

from gateway.domain.errors import InvalidDataset, UnsupportedMediaType
from gateway.domain.policy import ColumnRule, DatasetPolicy
from gateway.engine.compiler import TOKEN

PARQUET = "parquet"
CSV = "csv"
ARROW = "arrow"
MEDIA_TYPES = {
    "application/vnd.apache.parquet": PARQUET,
    "application/x-parquet": PARQUET,
    "text/csv": CSV,
    "application/vnd.apache.arrow.stream": ARROW,
}
TOKEN_BYTES = 16
_BATCH_ROWS = 65_536


def format_of(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be one of {', '.join(sorted(MEDIA_TYPES))}")
    return MEDIA_TYPES[media]


def _batches(
    path: Path, fmt: str, policy: DatasetPolicy
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Column names and a batch iterator; CSV columns are read as text and cast later."""
    try:
        if fmt == PARQUET:
            pf = pq.ParquetFile(path)
            return pf.schema_arrow.names, pf.iter_batches(batch_size=_BATCH_ROWS)
        if fmt == ARROW:
            return _arrow_batches(path)
        known = [policy.customer_key, *policy.columns]
        csv_reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in known}, strings_can_be_null=True
            ),
        )
        return csv_reader.schema.names, iter(csv_reader)
    except (pa.ArrowException, OSError):
        raise InvalidDataset(f"the body is not a readable {fmt} file") from None


def _arrow_batches(path: Path) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Arrow IPC: the stream format, or the file format that ``.arrow`` files often use."""
    try:
        stream = paipc.open_stream(pa.OSFile(str(path)))
        return stream.schema.names, iter(stream)
    except pa.ArrowInvalid:
        file_reader = paipc.open_file(pa.memory_map(str(path)))
        batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        return file_reader.schema.names, batches


def _check_columns(names: list[str], policy: DatasetPolicy) -> None:
    if len(set(names)) != len(names):
        raise InvalidDataset("the file repeats a column name")
    expected = {policy.customer_key, *policy.columns}
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise InvalidDataset(
            f"column {unknown[0]!r} is not described by the policy for {policy.id} "
            f"(path datasets.{policy.id}.columns)"
        )
    required = [policy.customer_key, *(c for c, r in policy.columns.items() if r.use != "hidden")]
    missing = [c for c in required if c not in names]
    if missing:
        raise InvalidDataset(f"column {missing[0]!r} is missing (policy dataset {policy.id})")


def _cast(column: pa.Array, name: str, target: pa.DataType, wanted: str) -> pa.Array:
    source = column.type
    if pa.types.is_dictionary(source):
        column = column.dictionary_decode()
        source = column.type
    ok = (
        pa.types.is_string(source)
        or pa.types.is_large_string(source)
        or (target != pa.string() and (pa.types.is_integer(source) or pa.types.is_null(source)))
        or (
            target == pa.float64() and (pa.types.is_floating(source) or pa.types.is_decimal(source))
        )
        or (target == pa.string() and pa.types.is_integer(source) and wanted == "key")
    )
    if not ok:
        raise InvalidDataset(f"column {name!r} has type {source}; the policy wants {wanted}")
    try:
        return pc.cast(column, target)
    except pa.ArrowException:
        raise InvalidDataset(f"column {name!r}: some values are not valid {wanted}") from None


def _conform_column(column: pa.Array, rule: ColumnRule) -> pa.Array:
    if rule.use == "dimension":
        target = pa.int64() if rule.type == "int" else pa.string()
        return _cast(column, rule.name, target, rule.type)
    target = pa.int64() if rule.type == "int" else pa.float64()
    out = _cast(column, rule.name, target, rule.type)
    if out.null_count and not rule.nullable:
        raise InvalidDataset(f"column {rule.name!r} has empty values; the policy marks it required")
    if rule.type == "float" and not pc.all(pc.is_finite(out.fill_null(0.0))).as_py():
        raise InvalidDataset(f"column {rule.name!r} has non-finite values (NaN or infinity)")
    return out


def _tokens(keys: pa.Array, secret: bytes, name: str) -> pa.Array:
    if keys.null_count:
        raise InvalidDataset(f"column {name!r} (customer key) has empty values")
    key_strings = _cast(keys, name, pa.string(), "key").to_pylist()
    digest = hashlib.sha256
    return pa.array(
        [hmac.new(secret, k.encode(), digest).digest()[:TOKEN_BYTES] for k in key_strings],
        type=pa.binary(TOKEN_BYTES),
    )


def ingest(
    path: Path, fmt: str, policy: DatasetPolicy, secret: bytes
) -> tuple[pa.Table, list[str]]:
    """Validate and tokenise the file at ``path``; return the stored table and dropped columns.

    Raises:
        InvalidDataset: unknown or missing columns, wrong types, empty keys or measures, no rows.
    """
    names, batches = _batches(path, fmt, policy)
    _check_columns(names, policy)
    kept = [c for c, rule in policy.columns.items() if rule.use != "hidden"]
    dropped = [c for c, rule in policy.columns.items() if rule.use == "hidden" and c in names]
    out: list[pa.RecordBatch] = []
    try:
        for batch in batches:
            arrays = [_tokens(batch.column(policy.customer_key), secret, policy.customer_key)]
            arrays += [_conform_column(batch.column(c), policy.columns[c]) for c in kept]
            out.append(pa.RecordBatch.from_arrays(arrays, names=[TOKEN, *kept]))
    except pa.ArrowException:
        raise InvalidDataset(f"the body is not a readable {fmt} file") from None
    if not out or sum(b.num_rows for b in out) == 0:
        raise InvalidDataset("the file has no rows")
    return pa.Table.from_batches(out), dropped
