"""Read an uploaded file batch by batch, check it against the policy, tokenise customer keys.

Formats: Parquet, CSV and Arrow IPC streams, all read in batches from the spooled upload (a
seekable file object: the spool's decrypting reader, so the parsers never see a plaintext
file). Every refusal names the column and the rule, never a value from the file. Customer keys
are replaced by 128-bit tokens, a keyed PRF under the collaboration's secret (see
:mod:`gateway.service.tokens`); raw keys are not kept. Hidden columns are dropped at ingest:
what the policy never lets anyone use is not stored.

One pass, bounded memory: each batch is read, checked, tokenised and handed to ``store`` (the
dataset file writer) before the next is read; nothing holds the whole upload. Per-batch checks
beyond the column rules plug in as :data:`BatchCheck` functions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq

from gateway.domain.errors import InvalidDataset, UnsupportedMediaType
from gateway.domain.policy import ColumnRule, DatasetPolicy
from gateway.engine.compiler import TOKEN
from gateway.service.arrow_guard import GuardedStream
from gateway.service.pipeline import ReadAhead, StoreBehind
from gateway.service.tokens import TOKEN_BYTES, RowsPerCustomer, Tokenise, TokenKey

PARQUET = "parquet"
CSV = "csv"
ARROW = "arrow"
MEDIA_TYPES = {
    "application/vnd.apache.parquet": PARQUET,
    "application/x-parquet": PARQUET,
    "text/csv": CSV,
    "application/vnd.apache.arrow.stream": ARROW,
}
__all__ = ["TOKEN_BYTES", "BatchCheck", "Ingested", "format_of", "ingest"]

_BATCH_ROWS = 131_072
CSV_BLOCK_BYTES = 1 << 22
"""The longest CSV line (header included) that is read; longer lines are refused."""
COLUMN_MARGIN = 8
"""Columns a file may hold beyond those its policy describes before it is refused unread."""
DEFAULT_MAX_DECODED_BYTES = 8 * 1024**3
MAX_EXPANSION = 1_000
"""How many times its own size a body may expand to when decoded. Customer tables expand 4-8
times (the demo's tables as Parquet, snappy to zstd); a decompression bomb expands tens of
thousands of times, and without this bound would be decoded and tokenised up to
``max_decoded_bytes`` (8 GiB: 90 s of two cores for a 254 KiB file) before being refused."""
MIN_DECODED_ALLOWANCE = 64 * 1024**2
"""Decoded bytes any body may reach, however small it is."""


def format_of(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be one of {', '.join(sorted(MEDIA_TYPES))}")
    return MEDIA_TYPES[media]


def _max_columns(policy: DatasetPolicy) -> int:
    return len(policy.columns) + 1 + COLUMN_MARGIN


def _too_many_columns(count: int, policy: DatasetPolicy) -> InvalidDataset:
    return InvalidDataset(
        f"the file has too many columns ({count}; the policy for {policy.id} describes "
        f"{len(policy.columns) + 1})"
    )


def _decoded_limit(body: BinaryIO, max_decoded_bytes: int) -> int:
    """The bomb guard for ``body``: ``max_decoded_bytes``, and MAX_EXPANSION times its size."""
    size = body.seek(0, io.SEEK_END)
    body.seek(0)
    return min(max_decoded_bytes, max(MIN_DECODED_ALLOWANCE, MAX_EXPANSION * size))


def _csv_header_check(body: BinaryIO, policy: DatasetPolicy) -> None:
    """Refuse, before pyarrow parses anything, a header longer than a block or too wide."""
    head = body.read(CSV_BLOCK_BYTES + 1)
    body.seek(0)
    end = head.find(b"\n")
    if end < 0 and len(head) > CSV_BLOCK_BYTES:
        raise InvalidDataset(f"a line is longer than {CSV_BLOCK_BYTES} bytes")
    line = head if end < 0 else head[:end]
    try:
        fields = next(csv.reader(io.StringIO(line.decode("utf-8"))), [])
    except (UnicodeDecodeError, csv.Error):
        raise InvalidDataset("the body is not a readable csv file (UTF-8 expected)") from None
    if len(fields) > _max_columns(policy):
        raise _too_many_columns(len(fields), policy)


def _parquet_batches(
    body: BinaryIO, policy: DatasetPolicy, limit: int
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    pf = pq.ParquetFile(body)
    meta = pf.metadata
    if meta.num_columns > _max_columns(policy):
        raise _too_many_columns(meta.num_columns, policy)
    if meta.num_rows < 0 or meta.num_row_groups < 0:
        raise InvalidDataset("the body is not a readable parquet file")
    schema = pf.schema_arrow
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    # Strings stay dictionary-encoded while read, so a column of one value repeated many times
    # (a decompression bomb) is measured by ``_decoded_bytes`` before it is expanded.
    pf = pq.ParquetFile(body, read_dictionary=strings)
    # Hidden columns are never decoded: they are dropped anyway (unknown ones are refused).
    read = [n for n in schema.names if n not in policy.columns or policy.columns[n].use != "hidden"]
    # The footer declares each column chunk's size once decompressed: a bomb that declares more
    # than the allowance is refused before a page is inflated (one giant cell would otherwise
    # be decompressed whole, a batch being at least one row).
    wanted = set(read)
    declared = sum(
        group.column(j).total_uncompressed_size
        for group in (meta.row_group(i) for i in range(meta.num_row_groups))
        for j in range(group.num_columns)
        if group.column(j).path_in_schema in wanted
    )
    if declared > limit:
        raise InvalidDataset(f"the file expands to more than {limit} bytes when decoded")
    batches = pf.iter_batches(batch_size=_BATCH_ROWS, columns=read)
    return schema.names, _counted(batches, meta.num_rows)


def _counted(batches: Iterator[pa.RecordBatch], declared: int) -> Iterator[pa.RecordBatch]:
    """The batches, then a refusal if the footer declared a different number of rows."""
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        yield batch
    if rows != declared:
        raise InvalidDataset("the parquet footer does not match the data (forged or truncated)")


def _batches(
    body: BinaryIO, fmt: str, policy: DatasetPolicy, limit: int
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Column names and a batch iterator; CSV columns are read as text and cast later."""
    try:
        if fmt == PARQUET:
            return _parquet_batches(body, policy, limit)
        if fmt == ARROW:
            return _arrow_batches(body, limit)
        _csv_header_check(body, policy)
        known = [policy.customer_key, *policy.columns]
        csv_reader = pacsv.open_csv(
            body,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in known}, strings_can_be_null=True
            ),
        )
        return csv_reader.schema.names, iter(csv_reader)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(fmt, exc) from None


def _unreadable(fmt: str, exc: BaseException) -> InvalidDataset:
    """The refusal for a file pyarrow cannot read; pyarrow's message is not echoed (data)."""
    if fmt == CSV and "straddling" in str(exc):
        return InvalidDataset(f"a line is longer than {CSV_BLOCK_BYTES} bytes")
    if fmt == CSV and "UTF8" in str(exc).replace("-", "").upper():
        return InvalidDataset("the body is not a readable csv file (UTF-8 expected)")
    return InvalidDataset(f"the body is not a readable {fmt} file")


def _decoded_bytes(batch: pa.RecordBatch) -> int:
    """Bytes the batch takes once every dictionary column is expanded."""
    total = 0
    for column in batch.columns:
        if isinstance(column, pa.DictionaryArray) and (
            pa.types.is_string(column.type.value_type) or pa.types.is_binary(column.type.value_type)
        ):
            lengths = pc.binary_length(column.dictionary)
            value_bytes = pc.sum(pc.take(lengths, column.indices)).as_py() or 0
            total += int(value_bytes) + 8 * len(column)
        else:
            total += column.nbytes
    return total


def _arrow_batches(body: BinaryIO, limit: int) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Arrow IPC: the stream format, or the file format that ``.arrow`` files often use.

    Each message is sized from its metadata before pyarrow decodes it (a compressed batch is
    otherwise inflated whole before ``_decoded_bytes`` sees it): see :mod:`arrow_guard`.
    """
    stream = paipc.open_stream(GuardedStream(body, limit))
    return stream.schema.names, _validated(stream)


def _validated(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, each checked in full: offsets, UTF-8 and dictionary indices in range (a
    forged batch is refused here, not read out of bounds later; ~25 ms a million rows)."""
    for batch in batches:
        batch.validate(full=True)
        yield batch


def _check_columns(names: list[str], policy: DatasetPolicy) -> None:
    if len(set(names)) != len(names):
        raise InvalidDataset("the file repeats a column name")
    expected = {policy.customer_key, *policy.columns}
    unknown = [i for i, n in enumerate(names, start=1) if n not in expected]
    if unknown:  # the name is not echoed: a column name in a file may be data
        raise InvalidDataset(
            f"column {unknown[0]} of the file is not described by the policy for {policy.id} "
            f"(path datasets.{policy.id}.columns)"
        )
    keys = [policy.customer_key] if policy.customer_key else []  # aggregate datasets have none
    required = [*keys, *(c for c, r in policy.columns.items() if r.use != "hidden")]
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
        out = _cast(column, rule.name, target, rule.type)
        if target == pa.string() and pc.any(pc.match_substring(out, "\x00")).as_py():
            raise InvalidDataset(f"column {rule.name!r} has a NUL character in a text value")
        return out
    target = pa.int64() if rule.type == "int" else pa.float64()
    out = _cast(column, rule.name, target, rule.type)
    if out.null_count and not rule.nullable:
        raise InvalidDataset(f"column {rule.name!r} has empty values; the policy marks it required")
    if rule.type == "float" and not pc.all(pc.is_finite(out), min_count=0).as_py():
        raise InvalidDataset(f"column {rule.name!r} has non-finite values (NaN or infinity)")
    return out


def _tokens(keys: pa.Array, tokenise: Tokenise, name: str) -> pa.Array:
    if keys.null_count:
        raise InvalidDataset(f"column {name!r} (customer key) has empty values")
    return tokenise(_cast(keys, name, pa.string(), "key"))


class _StoreFailed(Exception):
    """Carries an error of ``store`` past the handler that maps reading errors to refusals."""


def _reported(store: Callable[[pa.RecordBatch], None]) -> Callable[[pa.RecordBatch], None]:
    def run(batch: pa.RecordBatch) -> None:
        try:
            store(batch)
        except Exception as exc:
            raise _StoreFailed() from exc

    return run


BatchCheck = Callable[[pa.RecordBatch, DatasetPolicy], None]
"""A check run on every stored batch (token first, then the kept columns, policy types) before
it is stored; it refuses the upload by raising a GatewayError (e.g. ``InvalidDataset``)."""


@dataclass(frozen=True)
class Ingested:
    """What an ingest stored: rows, rows of the busiest customer, columns and their types."""

    rows: int
    max_rows_per_customer: int
    schema: dict[str, str]
    dropped: tuple[str, ...]


def ingest(
    body: BinaryIO,
    fmt: str,
    policy: DatasetPolicy,
    token_key: TokenKey,
    store: Callable[[pa.RecordBatch], None],
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    checks: Sequence[BatchCheck] = (),
) -> Ingested:
    """Validate and tokenise the upload in ``body`` batch by batch, handing each to ``store``.

    ``body`` is a readable, seekable binary file object. Stored batches hold the token column
    first, then the policy's non-hidden columns cast to their policy types. When this raises,
    ``store`` may have received some batches: the caller discards them.

    Raises:
        InvalidDataset: unknown or missing columns, wrong types, empty keys or measures, no rows,
            too many columns, a line longer than a CSV block, a file that does not decode (bad
            encoding, NUL in a text value, truncated or forged) or that expands beyond
            ``max_decoded_bytes`` or MAX_EXPANSION times its size; or whatever a check in
            ``checks`` raises.
    """
    limit = _decoded_limit(body, max_decoded_bytes)
    names, batches = _batches(body, fmt, policy, limit)
    if len(names) > _max_columns(policy):
        raise _too_many_columns(len(names), policy)
    _check_columns(names, policy)
    kept = [c for c, rule in policy.columns.items() if rule.use != "hidden"]
    dropped = tuple(c for c, rule in policy.columns.items() if rule.use == "hidden" and c in names)
    per_customer = RowsPerCustomer()
    rows = decoded = 0
    schema: dict[str, str] = {}
    try:
        with (
            token_key.tokeniser() as tokenise,
            ReadAhead(batches) as ahead,
            StoreBehind(_reported(store)) as behind,
        ):
            for batch in ahead:
                decoded += _decoded_bytes(batch)
                if decoded > limit:
                    raise InvalidDataset(
                        f"the file expands to more than {limit} bytes when decoded"
                    )
                if batch.num_rows == 0:
                    continue
                key = policy.customer_key  # empty for an aggregate dataset: no token column
                arrays = [_tokens(batch.column(key), tokenise, key)] if key else []
                arrays += [_conform_column(batch.column(c), policy.columns[c]) for c in kept]
                stored = pa.RecordBatch.from_arrays(arrays, names=[TOKEN, *kept] if key else kept)
                for check in checks:
                    check(stored, policy)
                if key:
                    per_customer.add(arrays[0])
                behind.put(stored)
                rows += stored.num_rows
                schema = schema or {f.name: str(f.type) for f in stored.schema if f.name != TOKEN}
            behind.finish()
    except _StoreFailed as failed:  # the store's own error (e.g. a full disk), not the file's
        assert failed.__cause__ is not None
        raise failed.__cause__ from None
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(fmt, exc) from None
    if rows == 0:
        raise InvalidDataset("the file has no rows")
    return Ingested(rows, per_customer.max_rows(), schema, dropped)
