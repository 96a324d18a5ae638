"""Encrypted dataset files: Parquet bytes sealed with AES-256-GCM, decrypted into memory only."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.domain.model import DatasetVersion
from gateway.store.crypto import Keyring


class DatasetFiles:
    """Writes sealed dataset files under ``root`` and reads them back as Arrow tables.

    Decrypted tables are cached in memory (never on disk), a few versions at a time.
    """

    def __init__(self, root: Path, keyring: Keyring, cache_size: int = 8) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keyring = keyring
        self._cache: OrderedDict[str, pa.Table] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def write(self, relative: str, table: pa.Table, aad: bytes) -> bytes:
        """Seal ``table`` as Parquet at ``root/relative``; return the wrapped data key.

        The file is written to a temporary name and renamed, so a crash leaves no half file
        under the final name.
        """
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        wrapped, blob = self._keyring.seal(buffer.getvalue(), aad)
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".partial")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return wrapped

    def read(self, dv: DatasetVersion) -> pa.Table:
        cache_key = f"{dv.collaboration}/{dv.dataset}/{dv.version}"
        with self._lock:
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return self._cache[cache_key]
        blob = (self.root / dv.file).read_bytes()
        plaintext = self._keyring.open(dv.wrapped_key, blob, dv.aad)
        table = pq.read_table(io.BytesIO(plaintext))
        with self._lock:
            self._cache[cache_key] = table
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return table

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)
