"""The embedded catalog database (DuckDB file) and its schema.

One connection, one lock: DuckDB allows a single writer per file, and serialising the gateway's
small catalog transactions keeps budget reservations trivially race-free.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, org VARCHAR NOT NULL, role VARCHAR NOT NULL,
    secret_hash VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL, revoked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS collaborations (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, token_secret BLOB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
ALTER TABLE collaborations ADD COLUMN IF NOT EXISTS token_scheme VARCHAR DEFAULT 'hmac-sha256-128';
CREATE TABLE IF NOT EXISTS members (
    collaboration VARCHAR NOT NULL, org VARCHAR NOT NULL, PRIMARY KEY (collaboration, org));
CREATE TABLE IF NOT EXISTS policy_versions (
    collaboration VARCHAR NOT NULL, version INTEGER NOT NULL, document VARCHAR NOT NULL,
    status VARCHAR NOT NULL, proposed_by VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (collaboration, version));
ALTER TABLE policy_versions ADD COLUMN IF NOT EXISTS required_json VARCHAR DEFAULT '[]';
CREATE TABLE IF NOT EXISTS policy_decisions (
    collaboration VARCHAR NOT NULL, version INTEGER NOT NULL, org VARCHAR NOT NULL,
    decision VARCHAR NOT NULL, decided_by VARCHAR NOT NULL, decided_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (collaboration, version, org));
CREATE TABLE IF NOT EXISTS dataset_versions (
    collaboration VARCHAR NOT NULL, dataset VARCHAR NOT NULL, version INTEGER NOT NULL,
    file VARCHAR NOT NULL, wrapped_key BLOB NOT NULL, rows BIGINT NOT NULL,
    max_rows_per_customer BIGINT NOT NULL, schema_json VARCHAR NOT NULL,
    uploaded_by VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (collaboration, dataset, version));
CREATE TABLE IF NOT EXISTS ledger (
    entry_id VARCHAR PRIMARY KEY, collaboration VARCHAR NOT NULL, org VARCHAR NOT NULL,
    period VARCHAR NOT NULL, epsilon DOUBLE NOT NULL, query_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL);
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS delta DOUBLE DEFAULT 0;
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS rho DOUBLE DEFAULT 0;
CREATE TABLE IF NOT EXISTS releases (
    collaboration VARCHAR NOT NULL, org VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL,
    query_id VARCHAR NOT NULL, release_json VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (collaboration, org, fingerprint));
CREATE TABLE IF NOT EXISTS audit_events (
    seq BIGINT PRIMARY KEY, "at" VARCHAR NOT NULL, collaboration VARCHAR,
    actor_org VARCHAR, actor_role VARCHAR, action VARCHAR NOT NULL, visible_to VARCHAR[] NOT NULL,
    details_json VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS gateway_secrets (
    name VARCHAR PRIMARY KEY, wrapped BLOB NOT NULL);
"""


class CatalogUnavailable(Exception):
    """The catalog file cannot be opened (most often: another gateway holds its lock)."""


class Database:
    """A DuckDB catalog file with a lock around every statement and transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._con = duckdb.connect(
                str(path),
                config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
            )
        except duckdb.IOException:
            raise CatalogUnavailable(
                f"cannot open {path}: is another gateway running on this data directory?"
            ) from None
        path.chmod(0o600)
        self._lock = threading.RLock()
        with self._lock:
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute(SCHEMA)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run several statements atomically; rolls back on any exception."""
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._con.close()
