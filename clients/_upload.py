"""Turning an upload source into a streamed request body, shared by both clients.

A file is never read whole: it is sent in ``CHUNK_SIZE`` pieces from a generator (sync) or an
async generator whose reads run in a worker thread (async), so memory stays flat whatever the
file size. A pyarrow Table or pandas DataFrame is written once as Parquet into an in-memory
Arrow buffer (compressed, usually smaller than the table) and streamed from there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
CHUNK_SIZE = 64 * 1024

_BY_SUFFIX = {
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".csv": CSV,
    ".arrow": ARROW_STREAM,
    ".arrows": ARROW_STREAM,
}
_PARQUET_TYPES = frozenset({PARQUET, "application/x-parquet"})

UploadSource: TypeAlias = "str | os.PathLike[str] | pa.Table | pd.DataFrame"
"""A file path (Parquet, CSV or Arrow IPC stream), a pyarrow Table or a pandas DataFrame."""

Progress: TypeAlias = Callable[[int], None]
"""Called after each chunk with the number of bytes sent so far."""


@dataclass(frozen=True)
class UploadBody:
    """What will be streamed: exactly one of ``path`` and ``buffer``, its type and length."""

    content_type: str
    length: int
    path: Path | None = None
    buffer: Any = None  # a pyarrow Buffer holding Parquet bytes


def _is_dataframe(source: object) -> bool:
    # A DataFrame can only exist if pandas is already imported; never import it here.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


def prepare_upload(source: UploadSource, content_type: str | None = None) -> UploadBody:
    """Check the source and decide its media type and length, before any request is made.

    Raises:
        FileNotFoundError: The path does not name an existing file.
        ValueError: The media type cannot be told from the suffix, or ``content_type``
            contradicts a table source (which is always sent as Parquet).
        TypeError: The source is none of the accepted kinds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no file to upload at {str(path)!r}")
        media_type = content_type or _BY_SUFFIX.get(path.suffix.lower())
        if media_type is None:
            raise ValueError(
                f"cannot tell the media type of {path.name!r} from its suffix; name it "
                f"{'/'.join(_BY_SUFFIX)} or pass content_type="
            )
        return UploadBody(media_type, path.stat().st_size, path=path)
    if content_type is not None and content_type not in _PARQUET_TYPES:
        raise ValueError(f"a table is uploaded as Parquet, not as {content_type!r}")
    if _is_dataframe(source):
        table = pa.Table.from_pandas(source, preserve_index=False)
    elif isinstance(source, pa.Table):
        table = source
    else:
        raise TypeError(
            "upload source must be a file path, a pyarrow.Table or a pandas.DataFrame, "
            f"not {type(source).__name__}"
        )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    buffer = sink.getvalue()
    return UploadBody(content_type or PARQUET, buffer.size, buffer=buffer)


def iter_chunks(body: UploadBody, progress: Progress | None = None) -> Iterator[bytes]:
    """Yield the body in chunks of at most ``CHUNK_SIZE`` bytes, reporting progress."""
    sent = 0
    for chunk in _raw_chunks(body):
        yield chunk
        sent += len(chunk)
        if progress is not None:
            progress(sent)


def _raw_chunks(body: UploadBody) -> Iterator[bytes]:
    if body.path is not None:
        with body.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                yield chunk
        return
    for offset in range(0, body.length, CHUNK_SIZE):
        yield body.buffer.slice(offset, min(CHUNK_SIZE, body.length - offset)).to_pybytes()


async def aiter_chunks(body: UploadBody, progress: Progress | None = None) -> AsyncIterator[bytes]:
    """Async form of :func:`iter_chunks`; file reads run in a worker thread."""
    sent = 0
    if body.path is not None:
        async with await anyio.open_file(body.path, "rb") as stream:
            while chunk := await stream.read(CHUNK_SIZE):
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent)
        return
    for chunk in _raw_chunks(body):
        yield chunk
        sent += len(chunk)
        if progress is not None:
            progress(sent)
