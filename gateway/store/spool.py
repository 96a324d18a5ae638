"""The upload spool: an upload body kept on disk only sealed, under a key held only in memory.

A body is streamed to the spool as it arrives (it may be larger than memory) and parsed from
it afterwards. The spool file is a sealed stream (:mod:`gateway.store.sealed`) under a fresh
AES-256-GCM key that this object alone holds and that is never written anywhere; the upload
id is the associated data. The parsers read the body back through a seekable decrypting file
object, so no plaintext copy of an upload ever reaches the disk, and once the object is
closed (or the process dies) the spool file is unreadable noise. Closing also removes it.

Example:
    >>> with UploadSpool(settings.upload_tmp_dir) as spool:
    ...     for chunk in body:
    ...         spool.write(chunk)
    ...     with spool.reader() as body_file:
    ...         table = pyarrow.parquet.read_table(body_file)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store.sealed import Bytes, SealedReader, SealedWriter


class UploadSpool:
    """One upload's body, sealed on disk under ``directory`` (created 0700, file 0600)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.upload_id = os.urandom(16).hex()
        self._key = AESGCM.generate_key(bit_length=256)
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".sealed")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self._writer = SealedWriter(self._file, self._key, self._aad)
        self._size = 0
        self._closed = False

    @property
    def _aad(self) -> bytes:
        return f"upload/{self.upload_id}".encode()

    @property
    def size(self) -> int:
        """Plaintext bytes received so far."""
        return self._size

    def write(self, data: Bytes) -> None:
        """Append ``data`` to the body (sealed a chunk at a time as it fills)."""
        if self._closed:
            raise ValueError("the spool is closed")
        self._writer.write(data)
        self._size += len(data)

    def finish(self) -> None:
        """Seal the last chunk: the body is complete (idempotent)."""
        if not self._writer.closed:
            self._writer.close()
            self._file.flush()

    def reader(self) -> SealedReader:
        """A seekable, read-only file object over the plaintext body; finishes the body first.

        Raises:
            DecryptionFailed: the spool file was changed on disk.
        """
        if self._closed:
            raise ValueError("the spool is closed")
        self.finish()
        return SealedReader(self.path.open("rb"), self._key, self._aad)

    def close(self) -> None:
        """Remove the spool file and forget the key (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._key = b""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> UploadSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
