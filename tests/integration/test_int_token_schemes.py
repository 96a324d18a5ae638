"""Token schemes: new collaborations tokenise with AES-256-CMAC; older ones keep HMAC-SHA256.

A collaboration's scheme is fixed when it is created and recorded in the catalog, so tokens
stored by an earlier release still match new uploads: a catalog written before schemes were
recorded reads as ``hmac-sha256-128`` (what it was tokenised with). test_int_token_legacy.py
checks that such a collaboration keeps tokenising new uploads with HMAC after a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from gateway.service.context import Services
from gateway.service.tokens import AES_CMAC, HMAC_SHA256, TokenKey
from gateway.store.catalog import Catalog
from gateway.store.db import Database

DEMO = "acme-bigmart-cx"


def stored_tokens(services: Services, dataset: str) -> set[bytes]:
    table = services.files.read(services.catalog.latest_datasets(DEMO)[dataset])
    return set(table["_token"].to_pylist())


def expected_tokens(key: TokenKey, raw: list[str]) -> set[bytes]:
    return {key.token(k.encode()) for k in raw}


def test_a_new_collaboration_stores_cmac_tokens(services: Services, demo_tables: Any) -> None:
    key = services.token_key(DEMO)
    assert key.scheme == AES_CMAC
    loyalty = demo_tables.loyalty["customer_key"].to_pylist()
    assert stored_tokens(services, "bigmart.loyalty") == expected_tokens(key, loyalty)
    hmac_key = TokenKey(HMAC_SHA256, key.secret)
    assert not stored_tokens(services, "bigmart.loyalty") & expected_tokens(hmac_key, loyalty)


def test_a_catalog_from_before_token_schemes_reads_as_hmac(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE collaborations (id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, "
        "token_secret BLOB NOT NULL, created_at TIMESTAMPTZ NOT NULL)"
    )
    old.execute(
        "INSERT INTO collaborations VALUES (?, ?, ?, ?)",
        ["old-collab", "Old", b"wrapped", datetime(2026, 1, 1, tzinfo=UTC)],
    )
    old.close()
    db = Database(path)
    try:
        catalog = Catalog(db)
        assert catalog.wrapped_token_secret("old-collab") == (HMAC_SHA256, b"wrapped")
        catalog.add_collaboration("new-collab", "New", (), b"w2", datetime.now(UTC), AES_CMAC)
        assert catalog.wrapped_token_secret("new-collab") == (AES_CMAC, b"w2")
    finally:
        db.close()
