"""Hot datasets: decrypted dataset versions kept as DuckDB tables in one in-memory database.

Decrypting a version and handing its Arrow table to a new DuckDB connection costs more than
most queries do; the hot database pays that once per dataset version and keeps the result as
native DuckDB tables, laid out for the bounded SQL of :mod:`gateway.engine.compiler`:

* the customer token (16 bytes) becomes one ``UHUGEINT``: joins and per-customer bounding
  hash 128-bit integers instead of byte strings (the same bits, so equal tokens stay equal and
  different tokens different);
* a text column with at most :data:`MAX_ENUM_VALUES` distinct values becomes an ``ENUM`` of
  exactly the values the data holds, in text order: grouping and filtering compare small
  integer codes, and every comparison with text gives the answer it gave on the text;
* each bounded measure gets a fixed-point copy, clamped to the policy's bounds and rounded to
  integer units (:class:`FixedPoint`), so sums read integers instead of clamping per query.

Privacy and safety: the database is in memory with no temp directory, so DuckDB can never
spill decrypted rows to disk (it fails a query instead), and external access (files, network)
is off before any data is loaded. The tables hold only what the encrypted store holds; they
are never returned to a caller, only read by compiled queries whose results go to the DP layer.

A version is loaded on its second use: the first query runs on a per-query connection over the
decrypted Arrow tables, so a version queried once costs no load and evicts nothing, and the
first query after start-up is not slowed by building tables. Entries are keyed by dataset
version *and* layout: a new upload is a new version, and a policy change that moves a
measure's bounds is a new layout, so a stale table is never read. Older entries of a dataset
are dropped as soon as a newer one is loaded (or :meth:`HotDatasets.retain` is told which
versions are current), the least recently used go when the memory cap would be exceeded, and
a dataset larger than the cap is not kept at all (the caller falls back to a per-query
connection).

Example:
    >>> hot = HotDatasets(capacity_bytes=2 * 1024**3)
    >>> with hot.pin({"bigmart.loyalty": (key, load, layout)}) as tables:
    ...     cursor = hot.cursor()  # read tables["bigmart.loyalty"].name, then close the cursor
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.domain.policy import DatasetPolicy

TOKEN = "_token"  # the customer-token column of stored datasets (gateway/service/ingest.py)
MAX_ENUM_VALUES = 65_535
PERFECT_HASH_BITS = 22
"""Group keys of up to this many bits aggregate in a perfect hash table (array indexed by the
key) rather than a hash table: quantile grids (up to 2^15 points) by a few groups fit."""


@dataclass(frozen=True, order=True)
class FixedPoint:
    """A measure clamped to ``[lo, hi]`` fixed-point units (``round(value * scale)``).

    Null stays null. The expression is exactly the one the compiler uses inline, so a query
    reads the same integers from the hot column as it would compute itself.
    """

    column: str
    lo: int
    hi: int
    scale: int

    @property
    def name(self) -> str:
        return f"_fx:{self.column}:{self.lo}:{self.hi}:{self.scale}"

    def expression(self, ref: str) -> str:
        lo, hi = self.lo / self.scale, self.hi / self.scale
        clamped = f"LEAST(GREATEST(CAST({ref} AS DOUBLE), {lo!r}), {hi!r})"
        fixed = f"CAST(ROUND({clamped} * {self.scale}) AS {_int_type(self.lo, self.hi)})"
        # GREATEST and LEAST skip a null argument: a null value must stay null, not the bound.
        return f"CASE WHEN {ref} IS NULL THEN NULL ELSE {fixed} END"


def _int_type(lo: int, hi: int) -> str:
    for name, bits in (("SMALLINT", 16), ("INTEGER", 32)):
        if -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1):
            return name
    return "BIGINT"


def layout_of(policy: DatasetPolicy) -> frozenset[FixedPoint]:
    """The fixed-point columns a dataset's policy calls for (bounds as the checker sets them)."""
    fixed = set()
    for name, rule in policy.columns.items():
        if rule.use == "measure" and rule.bounds is not None:
            scale = rule.scale
            lo = math.ceil(rule.bounds[0] * scale)
            hi = math.floor(rule.bounds[1] * scale)
            if lo <= hi:
                fixed.add(FixedPoint(name, lo, hi, scale))
    return frozenset(fixed)


@dataclass(frozen=True)
class HotTable:
    """One dataset version in the hot database: its SQL name and what its layout offers."""

    name: str
    nbytes: int
    token: bool  # the token column is a UHUGEINT
    enums: frozenset[str]  # text columns stored as ENUM
    fixed: frozenset[FixedPoint]
    types: tuple[str, ...] = ()  # the ENUM types to drop with the table

    def fixed_column(self, column: str, lo: int, hi: int, scale: int) -> str | None:
        """The hot column holding ``column`` clamped to ``[lo, hi]`` at ``scale``, if any."""
        wanted = FixedPoint(column, lo, hi, scale)
        return wanted.name if wanted in self.fixed else None


HotKey = tuple[str, ...]
"""(collaboration, dataset, version, layout digest): what identifies one hot table."""


@dataclass
class _Entry:
    table: HotTable
    pins: int = 0
    stale: bool = False


_SEEN_KEPT = 1024  # keys remembered for admission (a few bytes each)


@dataclass
class HotDatasets:
    """The hot database and its entries; safe to use from several threads.

    ``capacity_bytes`` caps the (estimated) memory of the tables kept; 0 keeps none.
    ``admit_after``: a version is loaded on its n-th use (2 by default: a version queried
    once, such as a fresh upload checked once, costs no load and evicts nothing; the first
    query after start-up is not slowed by building tables it may never use again).
    """

    capacity_bytes: int
    query_memory_limit: str = "4GB"
    threads: int | None = None
    admit_after: int = 2
    _entries: OrderedDict[HotKey, _Entry] = field(default_factory=OrderedDict)
    _seen: OrderedDict[HotKey, int] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loading: dict[HotKey, threading.Lock] = field(default_factory=dict)
    _reserved: int = 0
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _db: duckdb.DuckDBPyConnection | None = None

    # -- the database -----------------------------------------------------------------------

    def _database(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._db is None:
                limit = self.capacity_bytes + size_in_bytes(self.query_memory_limit)
                config: dict[str, str | bool | int | float | list[str]] = {
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "memory_limit": f"{max(limit // 1024**2, 64)}MB",
                }
                if self.threads:
                    config["threads"] = self.threads
                db = duckdb.connect(":memory:", config=config)
                db.execute("SET temp_directory = ''")
                db.execute("SET enable_external_access = false")
                self._db = db
            return self._db

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the hot database (one per query; close it after use)."""
        db = self._database()
        with self._lock:
            cursor = db.cursor()
        cursor.execute(f"SET perfect_ht_threshold = {PERFECT_HASH_BITS}")
        return cursor

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- entries ----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.table.nbytes for e in self._entries.values())

    def loaded_keys(self) -> list[HotKey]:
        """The keys of the tables held, least recently used first."""
        with self._lock:
            return list(self._entries)

    @contextmanager
    def pin(
        self, wanted: Mapping[str, tuple[HotKey, Callable[[], pa.Table], frozenset[FixedPoint]]]
    ) -> Iterator[dict[str, HotTable] | None]:
        """Hot tables for ``wanted`` (dataset id -> key, loader, layout), pinned while in use.

        Loads what is missing, several datasets at once (``loader`` returns the decrypted Arrow
        table). Yields None when a dataset is not admitted yet (fewer than ``admit_after``
        uses) or the datasets do not fit under the cap together: the caller then runs on a
        per-query connection instead. Pinned tables are never dropped; a table superseded
        while pinned is dropped when its last pin goes.
        """
        pinned: list[HotKey] = []
        try:
            tables: dict[str, HotTable] = {}
            missing = []
            loaded: list[HotTable | None] = []
            for dataset_id, (key, load, layout) in wanted.items():
                table = self._pin_loaded(key)
                if table is None:
                    missing.append((dataset_id, key, load, layout))
                else:
                    pinned.append(key)
                    tables[dataset_id] = table
            if not all([self._admitted(key) for _, key, _, _ in missing]):
                yield None
                return
            if len(missing) == 1:
                dataset_id, key, load, layout = missing[0]
                loaded = [self._acquire(key, load, layout)]
            elif missing:
                with ThreadPoolExecutor(len(missing), thread_name_prefix="hot-load") as pool:
                    futures = [pool.submit(self._acquire, k, f, lay) for _, k, f, lay in missing]
                    wait(futures)
                for future, (_, key, _, _) in zip(futures, missing, strict=True):
                    if future.exception() is None and future.result() is not None:
                        pinned.append(key)  # released below even if a sibling failed
                loaded = [future.result() for future in futures]  # raises a load's error
            for (dataset_id, key, _, _), table in zip(missing, loaded, strict=True):
                if table is None:
                    yield None
                    return
                if len(missing) == 1:
                    pinned.append(key)
                tables[dataset_id] = table
            yield tables
        finally:
            for key in pinned:
                self._release(key)

    def retain(self, collaboration: str, current: Mapping[str, int]) -> None:
        """Drop entries of the datasets in ``current`` that hold another version than it."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                known = key[0] == collaboration and key[1] in current
                if known and key[2] != str(current[key[1]]):
                    entry.stale = True
            dropped = self._sweep()
        self._drop(dropped)

    def _admitted(self, key: HotKey) -> bool:
        """Count a use of ``key``; True from its ``admit_after``-th use on."""
        if self.capacity_bytes <= 0:
            return False
        with self._lock:
            uses = self._seen.pop(key, 0) + 1
            self._seen[key] = uses
            while len(self._seen) > _SEEN_KEPT:
                self._seen.popitem(last=False)
            return uses >= self.admit_after

    def _pin_loaded(self, key: HotKey) -> HotTable | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.stale:
                return None
            entry.pins += 1
            self._entries.move_to_end(key)
            return entry.table

    def _acquire(
        self, key: HotKey, load: Callable[[], pa.Table], layout: frozenset[FixedPoint]
    ) -> HotTable | None:
        """The pinned hot table of ``key``, loaded if needed; None when it cannot be kept."""
        if self.capacity_bytes <= 0:
            return None
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per key: a second query for it waits, then finds it loaded
            table = self._pin_loaded(key)
            if table is not None:
                return table
            try:
                source = load()
                size = _estimate(source, layout)
                if not self._make_room(size):
                    return None
                try:
                    table = self._create(source, layout)
                finally:
                    with self._lock:
                        self._reserved -= size
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                for other_key, other in self._entries.items():
                    if other_key[:2] == key[:2]:
                        other.stale = True  # an older version or layout of the same dataset
                self._entries[key] = _Entry(table, pins=1)
                dropped = self._sweep()
            self._drop(dropped)
            return table

    def _release(self, key: HotKey) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.pins -= 1
            dropped = self._sweep()
        self._drop(dropped)

    def _sweep(self) -> list[HotTable]:
        """Unlink stale, unpinned entries (call with the lock held); the caller drops them."""
        dropped = []
        for key, entry in list(self._entries.items()):
            if entry.stale and entry.pins <= 0:
                dropped.append(entry.table)
                del self._entries[key]
        return dropped

    def _make_room(self, needed: int) -> bool:
        """Reserve ``needed`` bytes, dropping least recently used unpinned tables if need be.

        False (nothing reserved) when even that leaves too little room under the cap.
        """
        with self._lock:
            used = self._reserved + sum(e.table.nbytes for e in self._entries.values())
            if needed > self.capacity_bytes:
                return False
            evictable = [e for e in self._entries.values() if e.pins <= 0 and not e.stale]
            freeable = sum(e.table.nbytes for e in evictable)
            if used - freeable + needed > self.capacity_bytes:
                return False
            for entry in evictable:  # least recently used first
                if used + needed <= self.capacity_bytes:
                    break
                entry.stale = True
                used -= entry.table.nbytes
            self._reserved += needed
            dropped = self._sweep()
        self._drop(dropped)
        return True

    def _drop(self, tables: list[HotTable]) -> None:
        if not tables or self._db is None:
            return
        cursor = self.cursor()
        try:
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {_quote(table.name)}")
                for type_name in table.types:
                    cursor.execute(f"DROP TYPE IF EXISTS {_quote(type_name)}")
        finally:
            cursor.close()

    def _create(self, source: pa.Table, layout: frozenset[FixedPoint]) -> HotTable:
        serial = next(self._serial)
        name = f"hot{serial}"
        view = f"_load{serial}"
        columns: list[str] = []
        arrays: dict[str, pa.ChunkedArray | pa.Array] = {}
        token = False
        enums: set[str] = set()
        types: list[str] = []
        cursor = self.cursor()
        try:
            for i, column_name in enumerate(source.column_names):
                column = source.column(column_name)
                ref = f"{view}.{_quote(column_name)}"
                if column_name == TOKEN and _is_token(column):
                    hi, lo = _token_halves(column)
                    arrays["_hi"], arrays["_lo"] = hi, lo
                    columns.append(
                        f"(CAST({view}._hi AS UHUGEINT) << 64) | CAST({view}._lo AS UHUGEINT) "
                        f"AS {_quote(TOKEN)}"
                    )
                    token = True
                    continue
                arrays[column_name] = column
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    values = pc.unique(column).drop_null()
                    if 0 < len(values) <= MAX_ENUM_VALUES:
                        type_name = f"{name}_e{i}"
                        ordered = pc.take(values, pc.array_sort_indices(values))
                        cursor.register(f"{view}_v", pa.table({"v": ordered}))
                        cursor.execute(
                            f"CREATE TYPE {_quote(type_name)} AS ENUM (SELECT v FROM {view}_v)"
                        )
                        cursor.unregister(f"{view}_v")
                        types.append(type_name)
                        enums.add(column_name)
                        columns.append(
                            f"CAST({ref} AS {_quote(type_name)}) AS {_quote(column_name)}"
                        )
                        continue
                columns.append(f"{ref} AS {_quote(column_name)}")
            fixed = {f for f in layout if f.column in source.column_names}
            for f in sorted(fixed):
                columns.append(f"{f.expression(f'{view}.{_quote(f.column)}')} AS {_quote(f.name)}")
            cursor.register(view, pa.table(arrays))
            try:
                select = ", ".join(columns)
                cursor.execute(f"CREATE TABLE {_quote(name)} AS SELECT {select} FROM {view}")
            finally:
                cursor.unregister(view)
        except BaseException:
            for type_name in types:
                cursor.execute(f"DROP TYPE IF EXISTS {_quote(type_name)}")
            raise
        finally:
            cursor.close()
        return HotTable(
            name=name,
            nbytes=_estimate(source, layout),
            token=token,
            enums=frozenset(enums),
            fixed=frozenset(fixed),
            types=tuple(types),
        )


_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def size_in_bytes(size: str) -> int:
    """A DuckDB memory size (``"4GB"``, ``"512 MiB"``) in bytes.

    Example:
        >>> size_in_bytes("4GB")
        4000000000
    """
    text = size.strip().lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :] or "b"
    if unit not in _UNITS or not digits:
        raise ValueError(f"not a memory size: {size!r}")
    return int(float(digits) * _UNITS[unit])


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _is_token(column: pa.ChunkedArray) -> bool:
    return bool(
        pa.types.is_fixed_size_binary(column.type)
        and column.type.byte_width == 16
        and column.null_count == 0
    )


def _token_halves(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The 16-byte tokens as two unsigned 64-bit halves (a view of the same bytes)."""
    parts = []
    for chunk in column.chunks:
        raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        start = chunk.offset * 16
        parts.append(raw[start : start + len(chunk) * 16].view(np.uint64).reshape(-1, 2))
    pairs = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)
    return pa.array(pairs[:, 0]), pa.array(pairs[:, 1])


def _estimate(source: pa.Table, layout: frozenset[FixedPoint]) -> int:
    """Bytes the hot table takes, estimated from the Arrow table (an upper bound in practice:
    DuckDB compresses text and small integers)."""
    fixed = sum(8 for f in layout if f.column in source.column_names)
    return int(source.nbytes) + fixed * int(source.num_rows)
