"""Overlapping the stages of an ingest: read the next batch ahead, store the last one behind.

Parsing (pyarrow), encoding and sealing (Parquet, zstd, AES-GCM) release the GIL; the checks
and the Python half of tokenising hold it. Run in one thread, each waits for the others; here
the read and the store each get a thread of their own, with at most ``depth`` batches between
stages, so memory stays bounded and the second core has work while Python tokenises.

Errors cross threads unchanged: a reader's exception is raised by the consumer's ``next``, a
store's by the next ``put`` or by ``finish``.

Example:
    >>> with ReadAhead(batches) as ahead, StoreBehind(writer.write) as behind:
    ...     for batch in ahead:
    ...         behind.put(check(batch))
    ...     behind.finish()
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadAhead(Generic[T]):
    """Iterates ``source`` in a worker thread, at most ``depth`` items ahead of the consumer."""

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-read", daemon=True)
        self._thread.start()

    def _offer(self, item: tuple[object, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._offer((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._offer((_END, exc))
            return
        self._offer((_END, None))

    def __iter__(self) -> Iterator[T]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the reader and wait for it (it no longer touches the source afterwards)."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreBehind(Generic[T]):
    """Calls ``store`` on each item in a worker thread, in order, at most ``depth`` pending."""

    def __init__(self, store: Callable[[T], None], depth: int = 2) -> None:
        self._store = store
        self._depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-store")
        self._pending: deque[Future[None]] = deque()

    def put(self, item: T) -> None:
        """Queue ``item``; waits while ``depth`` items are pending; raises a store's error."""
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._store, item))

    def finish(self) -> None:
        """Wait until every item is stored; raises the first store error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()

    def __enter__(self) -> StoreBehind[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
