"""Sealed streams: a byte stream encrypted in fixed-size AES-256-GCM chunks, read back at random.

Both the upload spool and the stored dataset files use this format, so a body of any size is
encrypted (and decrypted) a chunk at a time and never held whole, in the clear, on disk.

Format (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, with AES-GCM from
``cryptography``; nothing here is a home-made primitive)::

    header  = b"IGWSEAL" || format version (1 byte) || chunk size (4 bytes, big-endian)
    chunk i = AES-256-GCM(key, nonce_i, plaintext_i, associated data = header || aad)
    nonce_i = i (11 bytes, big-endian) || final flag (1 byte: 1 on the last chunk, else 0)

Every chunk but the last holds exactly ``chunk size`` bytes of plaintext; the last holds 0 to
``chunk size`` bytes (0 only when the whole stream is empty) and carries the final flag. So:

* a reordered, repeated or altered chunk fails its tag (the index is in the nonce);
* a stream cut at a chunk boundary fails, because its new last chunk was sealed as non-final;
* a stream moved under another name fails, because ``aad`` names what it is (the upload id,
  or the dataset id and version);
* each key seals one stream only (a fresh random key per upload and per dataset version), so
  a nonce is never used twice under one key.

Example:
    >>> key = AESGCM.generate_key(bit_length=256)
    >>> sink = io.BytesIO()
    >>> with SealedWriter(sink, key, aad=b"example") as writer:
    ...     writer.write(b"hello, " * 3)
    >>> open_sealed(sink.getvalue(), key, aad=b"example").to_pybytes()
    b'hello, hello, hello, '
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store.crypto import DecryptionFailed

if TYPE_CHECKING:
    from typing_extensions import Buffer

MAGIC = b"IGWSEAL"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20
"""Plaintext bytes per chunk: large enough that per-chunk costs vanish, small enough to stream."""
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + 4
_MAX_CHUNK_BYTES = 1 << 26

Bytes = bytes | bytearray | memoryview


def _header(chunk_bytes: int) -> bytes:
    return MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">I", chunk_bytes)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def is_sealed(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a sealed stream of this format."""
    return head[: len(MAGIC) + 1] == MAGIC + bytes([FORMAT_VERSION])


class SealedWriter:
    """A write-only file object that seals what it is given into ``sink``, chunk by chunk.

    Plaintext is buffered until a whole chunk is there; ``close`` seals the rest as the final
    chunk. Until then the stream does not open (its last chunk is not final), so a writer that
    dies half-way leaves nothing that decrypts. Usable wherever a binary file is expected
    (``pyarrow.parquet.ParquetWriter`` writes straight into it).
    """

    def __init__(
        self, sink: BinaryIO, key: bytes, aad: bytes, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        if not 0 < chunk_bytes <= _MAX_CHUNK_BYTES:
            raise ValueError("chunk size out of range")
        header = _header(chunk_bytes)
        self._sink = sink
        self._aead = AESGCM(key)
        self._ad = header + aad
        self._chunk = chunk_bytes
        self._buffer = bytearray()
        self._index = 0
        self._written = 0
        self._closed = False
        sink.write(header)

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Plaintext bytes written so far (what a file-format writer counts offsets in)."""
        return self._written

    def write(self, data: Bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed sealed stream")
        view = memoryview(data).cast("B")
        size = len(view)
        self._written += size
        if not self._buffer and len(view) >= self._chunk:
            whole = len(view) - len(view) % self._chunk
            if whole == len(view):  # keep one chunk back: it may be the final one
                whole -= self._chunk
            for start in range(0, whole, self._chunk):
                self._seal(view[start : start + self._chunk], final=False)
            view = view[whole:]
        self._buffer += view
        while len(self._buffer) > self._chunk:
            self._seal(memoryview(self._buffer)[: self._chunk], final=False)
            del self._buffer[: self._chunk]
        return size

    def _seal(self, plaintext: Bytes, final: bool) -> None:
        self._sink.write(self._aead.encrypt(_nonce(self._index, final), plaintext, self._ad))
        self._index += 1

    def flush(self) -> None:
        """Nothing to do: only whole chunks reach the sink before ``close``."""

    def close(self) -> None:
        """Seal what is buffered as the final chunk. The sink stays open (its owner closes it)."""
        if self._closed:
            return
        self._seal(bytes(self._buffer), final=True)
        self._buffer = bytearray()
        self._closed = True

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # an unfinished stream must not look finished
            self._closed = True


class _Layout:
    """Where each chunk of a sealed stream of ``sealed_size`` bytes lies, and its plaintext size."""

    def __init__(self, header: bytes, sealed_size: int) -> None:
        if not is_sealed(header) or len(header) < HEADER_BYTES:
            raise DecryptionFailed("not a sealed stream of a known format")
        self.chunk: int = struct.unpack(">I", header[len(MAGIC) + 1 : HEADER_BYTES])[0]
        if not 0 < self.chunk <= _MAX_CHUNK_BYTES:
            raise DecryptionFailed("not a sealed stream of a known format")
        body = sealed_size - HEADER_BYTES
        stride = self.chunk + TAG_BYTES
        self.chunks = max(1, -(-body // stride))
        last = body - (self.chunks - 1) * stride - TAG_BYTES
        if last < 0 or (last == 0 and self.chunks > 1):
            raise DecryptionFailed("the sealed stream is truncated")
        self.size: int = (self.chunks - 1) * self.chunk + last
        self.header = header[:HEADER_BYTES]

    def span(self, index: int) -> tuple[int, int]:
        """Offset and length of chunk ``index``'s ciphertext (tag included)."""
        start = HEADER_BYTES + index * (self.chunk + TAG_BYTES)
        plain = min(self.chunk, self.size - index * self.chunk)
        return start, plain + TAG_BYTES


def _open_chunk(
    aead: AESGCM, ad: bytes, layout: _Layout, index: int, ciphertext: Bytes, out: Bytes
) -> None:
    try:
        aead.decrypt_into(_nonce(index, index == layout.chunks - 1), ciphertext, ad, out)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("decryption failed: wrong key or tampered data") from exc


def open_sealed(sealed: Bytes, key: bytes, aad: bytes) -> pa.Buffer:
    """Decrypt a whole sealed stream held in memory into one (pyarrow) buffer.

    The plaintext is written in place, chunk by chunk, into a single buffer: no intermediate
    copies, so reading a dataset costs one pass over it.

    Raises:
        DecryptionFailed: wrong key or ``aad``, a changed, reordered or missing chunk, a cut
            stream, or bytes that are not a sealed stream.
    """
    view = memoryview(sealed).cast("B")
    layout = _Layout(bytes(view[:HEADER_BYTES]), len(view))
    aead = AESGCM(key)
    ad = layout.header + aad
    out = bytearray(layout.size)
    target = memoryview(out)
    for index in range(layout.chunks):
        start, length = layout.span(index)
        offset = index * layout.chunk
        plain = length - TAG_BYTES
        _open_chunk(
            aead, ad, layout, index, view[start : start + length], target[offset : offset + plain]
        )
    return pa.py_buffer(out)


class SealedReader(io.RawIOBase):
    """A read-only, seekable file object over a sealed stream; chunks are decrypted on demand.

    The reader owns ``source`` and closes it.

    Parquet readers seek to the footer and then to each column chunk; CSV and Arrow stream
    readers read front to back. Either way at most one decrypted chunk is held here. Every
    byte returned has been authenticated; the final chunk is checked when the stream is
    opened, so a cut stream is refused before any byte is parsed.

    Raises:
        DecryptionFailed: on open or on any read, for a wrong key or tampered data.
    """

    def __init__(self, source: BinaryIO, key: bytes, aad: bytes) -> None:
        super().__init__()
        self._source = source
        source.seek(0, io.SEEK_END)
        sealed_size = source.tell()
        source.seek(0)
        self._layout = _Layout(source.read(HEADER_BYTES), sealed_size)
        self._aead = AESGCM(key)
        self._ad = self._layout.header + aad
        self._pos = 0
        self._cached_index = -1
        self._cached = bytearray()
        self._chunk_plain(self._layout.chunks - 1)  # the final flag: a cut stream fails here

    @property
    def size(self) -> int:
        """Plaintext bytes in the stream."""
        return self._layout.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._layout.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _chunk_plain(self, index: int) -> memoryview:
        if index != self._cached_index:
            start, length = self._layout.span(index)
            self._source.seek(start)
            ciphertext = self._source.read(length)
            if len(ciphertext) != length:
                raise DecryptionFailed("the sealed stream is truncated")
            plain = bytearray(length - TAG_BYTES)
            _open_chunk(self._aead, self._ad, self._layout, index, ciphertext, plain)
            self._cached, self._cached_index = plain, index
        return memoryview(self._cached)

    def readinto(self, buffer: Buffer) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target) and self._pos < self._layout.size:
            index, offset = divmod(self._pos, self._layout.chunk)
            plain = self._chunk_plain(index)[offset:]
            take = min(len(plain), len(target) - done)
            target[done : done + take] = plain[:take]
            done += take
            self._pos += take
        return done

    def close(self) -> None:
        """Forget the decrypted chunk and close the source."""
        self._cached = bytearray()
        self._cached_index = -1
        self._source.close()
        super().close()
