"""Arrow IPC uploads read message by message, each record batch sized before it is decoded.

pyarrow's stream reader inflates a whole LZ4- or ZSTD-compressed record batch before anything
after it can measure the batch, so a 50 KiB body could make the gateway allocate gigabytes.
:class:`GuardedStream` sits between the upload and ``pyarrow.ipc.open_stream``: it reads each
message's framing, metadata and body itself, works out from the metadata what the message will
occupy once decoded (:func:`message_size`), adds that to a running total and refuses the upload
once the total passes the limit. Only messages that passed are handed on, byte for byte, so
pyarrow decodes exactly those and nothing else: schemas, dictionaries and dictionary deltas are
decoded by pyarrow itself (supported, not refused); only the sizing is done here. The Arrow file
format (``ARROW1``, a stream, a footer) is read as the stream it holds; its footer is not used.

The metadata is attacker controlled: every offset read from it is bounds-checked, and anything
out of range, negative or inconsistent is refused as ``InvalidDataset`` (422), never raised as
another exception. Refusals name sizes and limits, never a value from the file.

Example:
    >>> reader = pyarrow.ipc.open_stream(GuardedStream(body, limit=64 * 1024**2))
    >>> for batch in reader: ...  # every batch was sized before pyarrow decoded it
"""

from __future__ import annotations

import io
import struct
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.ipc as paipc

from gateway.domain.errors import InvalidDataset

__all__ = ["MAX_BUFFERS", "MAX_FIELD_NODES", "GuardedStream", "MessageSize", "message_size"]

MAX_FIELD_NODES = 4096
"""Fields (columns and their children) one message may describe; a customer table has tens."""
MAX_BUFFERS = 4 * MAX_FIELD_NODES
"""Buffers one message may describe (at most three a field, plus variadic string views)."""
ROW_FLOOR_BYTES = 16
"""What a stored row costs at least, whatever its buffers declare: its 16-byte token."""
NULL_CELL_BYTES = 8
"""What a cell of a null-typed column costs once cast to its policy type (no bytes in the file)."""

SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3  # Message.fbs: union MessageHeader
_FILE_MAGIC = b"ARROW1"
_CONTINUATION = 0xFFFFFFFF
_I32, _U32, _U16 = struct.Struct("<i"), struct.Struct("<I"), struct.Struct("<H")
_I64, _U8 = struct.Struct("<q"), struct.Struct("<B")
_PAIR = struct.Struct("<qq")  # FieldNode{length, null_count} and Buffer{offset, length}


def _unreadable() -> InvalidDataset:
    return InvalidDataset("the body is not a readable arrow file")


def _at(fmt: struct.Struct, buf: bytes | memoryview, pos: int) -> int:
    """One little-endian number at ``pos``; out of range is a refusal (unpack_from wraps < 0)."""
    if pos < 0 or pos + fmt.size > len(buf):
        raise _unreadable()
    value: int = fmt.unpack_from(buf, pos)[0]
    return value


class _Table:
    """A flatbuffer table: fields found through its vtable, every offset bounds-checked."""

    def __init__(self, buf: bytes, pos: int) -> None:
        vtable = pos - _at(_I32, buf, pos)  # soffset_t: the vtable lies at table - soffset
        size, self._inline = _at(_U16, buf, vtable), _at(_U16, buf, vtable + 2)
        if size < 4 or size % 2 or vtable + size > len(buf) or pos + self._inline > len(buf):
            raise _unreadable()
        self._buf, self._pos, self._vtable, self._slots = buf, pos, vtable, (size - 4) // 2

    def _field(self, slot: int) -> int | None:
        offset = _at(_U16, self._buf, self._vtable + 4 + 2 * slot) if slot < self._slots else 0
        if offset >= self._inline and offset:  # a field lies inside its table's inline part
            raise _unreadable()
        return self._pos + offset if offset else None

    def scalar(self, slot: int, fmt: struct.Struct, default: int = 0) -> int:
        at = self._field(slot)
        return default if at is None else _at(fmt, self._buf, at)

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return None if at is None else _Table(self._buf, at + _at(_U32, self._buf, at))

    def pairs(self, slot: int, most: int, what: str) -> list[tuple[int, int]]:
        """A vector of 16-byte structs (FieldNode or Buffer), at most ``most`` of them."""
        at = self._field(slot)
        if at is None:
            return []
        start = at + _at(_U32, self._buf, at)
        count = _at(_U32, self._buf, start)
        if count > most:
            raise InvalidDataset(f"an arrow message describes more than {most} {what}")
        if start + 4 + 16 * count > len(self._buf):
            raise _unreadable()
        return list(_PAIR.iter_unpack(self._buf[start + 4 : start + 4 + 16 * count]))


@dataclass(frozen=True)
class MessageSize:
    """One IPC message as its metadata describes it: kind, body size, rows, decoded bytes."""

    kind: int
    body_bytes: int
    rows: int
    decoded_bytes: int


def _header(metadata: bytes) -> tuple[int, int, _Table | None]:
    """Message.fbs: Message{version: 0, header_type: 1, header: 2, bodyLength: 3}."""
    message = _Table(metadata, _at(_U32, metadata, 0))
    kind, body = message.scalar(1, _U8), message.scalar(3, _I64)
    if body < 0:
        raise _unreadable()
    if kind == SCHEMA:
        return kind, body, None
    header = message.table(2)
    if kind == DICTIONARY_BATCH and header is not None:  # DictionaryBatch{id: 0, data: 1}
        header = header.table(1)
    if kind not in (DICTIONARY_BATCH, RECORD_BATCH) or header is None:
        raise _unreadable()  # tensors, or a batch without its RecordBatch table
    return kind, body, header


def _buffer_bytes(batch: _Table, body: bytes | memoryview, body_bytes: int) -> int:
    """RecordBatch{length: 0, nodes: 1, buffers: 2, compression: 3}: bytes once decoded.

    A compressed body (BodyCompression{codec: 0, method: 1}, set) starts every non-empty
    buffer with its uncompressed length as an int64, -1 when it was stored as is.
    """
    compressed = batch.table(3) is not None
    total = 0
    for offset, length in batch.pairs(2, MAX_BUFFERS, "buffers"):
        if offset < 0 or length < 0 or offset + length > body_bytes:
            raise _unreadable()
        if compressed and length:
            declared = _at(_I64, body, offset) if length >= 8 else -2
            if declared < -1:
                raise _unreadable()
            length = length - 8 if declared == -1 else declared
        total += length
    return total


def message_size(
    metadata: bytes, body: bytes | memoryview | pa.Buffer | None = None
) -> MessageSize:
    """What one IPC message will occupy once decoded, read from its flatbuffer metadata.

    ``metadata`` is the Message flatbuffer (no framing); ``body`` the message body, needed only
    for a compressed batch. A schema decodes to 0 bytes here (its size is its metadata's).

    Raises:
        InvalidDataset: metadata out of range or inconsistent, or too many fields or buffers.

    Example:
        >>> message = pyarrow.ipc.MessageReader.open_stream(source).read_next_message()
        >>> message_size(message.metadata.to_pybytes(), message.body).decoded_bytes
        0
    """
    kind, body_bytes, batch = _header(metadata)
    if batch is None:
        return MessageSize(kind, body_bytes, 0, 0)
    rows = batch.scalar(0, _I64)
    nodes = batch.pairs(1, MAX_FIELD_NODES, "fields")
    if rows < 0 or any(length < 0 or not 0 <= nulls <= length for length, nulls in nodes):
        raise _unreadable()
    view = memoryview(body if body is not None else b"").cast("B")
    if body is not None and len(view) < body_bytes:
        raise _unreadable()
    return MessageSize(kind, body_bytes, rows, _buffer_bytes(batch, view, body_bytes))


def _check_names(fields: pa.Schema | pa.DataType) -> None:
    """Decode every field name, nested ones too: a name that is not UTF-8 raises here."""
    if isinstance(fields, pa.DictionaryType):
        fields = fields.value_type
    for i in range(len(fields) if isinstance(fields, pa.Schema) else fields.num_fields):
        field = fields.field(i)
        _ = field.name
        _check_names(field.type)


class GuardedStream(io.RawIOBase):
    """The messages of the Arrow IPC stream (or file) in ``body`` that fit in ``limit`` bytes.

    A read-only file object for ``pyarrow.ipc.open_stream``. Each message is read whole from
    ``body`` and sized before a byte of it is handed on; the running total charges each
    record batch its decoded buffers, 8 bytes a row for each null-typed column (what casting
    it allocates) and at least 16 bytes a row, and each dictionary batch its buffers.

    Raises (from ``read``, so from pyarrow's reader, unchanged):
        InvalidDataset: the total would pass ``limit`` ("the file expands to more than N bytes
            when decoded"), or the framing or metadata is truncated, out of range or forged.
    """

    def __init__(self, body: BinaryIO, limit: int) -> None:
        super().__init__()
        self._body, self._limit = body, limit
        self._end = body.seek(0, io.SEEK_END)
        body.seek(0)
        self._pos = 0
        self._pending: deque[bytes] = deque()
        self._done = False
        self._null_columns: int | None = None  # known once the schema has passed
        self._spent = 0
        if self._end >= 8 and self._take(8)[:6] == _FILE_MAGIC:
            body.seek(self._end - 10)
            tail = body.read(10)
            footer = _at(_I32, tail, 0)
            if tail[4:] != _FILE_MAGIC or footer < 0 or self._end - 10 - footer < 8:
                raise _unreadable()
            self._end -= 10 + footer
            body.seek(8)
        else:
            body.seek(0)
            self._pos = 0

    def readable(self) -> bool:
        return True

    def _take(self, size: int) -> bytes:
        if size > self._end - self._pos:
            raise _unreadable()
        chunks = []
        while size:
            chunk = self._body.read(size)
            if not chunk:
                raise _unreadable()
            chunks.append(chunk)
            size -= len(chunk)
            self._pos += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _next_message(self) -> list[bytes]:
        if self._pos == self._end:  # a stream may end without its end-of-stream marker
            return self._finish([])
        prefix = self._take(4)
        length = _at(_I32, prefix, 0)
        if _at(_U32, prefix, 0) == _CONTINUATION:  # since format 0.15; before, the length alone
            prefix += self._take(4)
            length = _at(_I32, prefix, 4)
        if length == 0:
            return self._finish([prefix])
        if length < 0:
            raise _unreadable()
        metadata = self._take(length)
        kind, body_bytes, _ = _header(metadata)
        body = self._take(body_bytes)
        size = message_size(metadata, body)
        if (kind == SCHEMA) != (self._null_columns is None):
            raise _unreadable()  # one schema, first
        if kind == SCHEMA:
            try:
                schema = paipc.read_schema(pa.py_buffer(prefix + metadata))
                _check_names(schema)
            except (pa.ArrowException, OSError, ValueError):  # UnicodeDecodeError: names
                raise _unreadable() from None
            self._null_columns = sum(pa.types.is_null(field.type) for field in schema)
        elif kind == RECORD_BATCH:
            nulls = NULL_CELL_BYTES * size.rows * (self._null_columns or 0)
            self._spent += max(size.decoded_bytes + nulls, ROW_FLOOR_BYTES * size.rows)
        else:
            self._spent += size.decoded_bytes
        if self._spent > self._limit:
            raise InvalidDataset(f"the file expands to more than {self._limit} bytes when decoded")
        return [prefix, metadata, body]

    def _finish(self, last: list[bytes]) -> list[bytes]:
        if self._null_columns is None:
            raise _unreadable()  # no schema
        self._done = True
        return last

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes of passed messages (all of one message when ``size`` < 0)."""
        out: list[bytes] = []
        want = size
        while want:
            if not self._pending:
                if self._done:
                    break
                self._pending.extend(self._next_message())
                continue
            head = self._pending[0]
            if want < 0 or len(head) <= want:
                out.append(self._pending.popleft())
                want = want - len(head) if want > 0 else 0
            else:
                out.append(head[:want])
                self._pending[0] = head[want:]
                want = 0
        return out[0] if len(out) == 1 else b"".join(out)
