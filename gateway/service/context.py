"""The gateway's assembled parts, built once at start-up and handed to every use case."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from gateway.config import Settings
from gateway.domain.model import Principal
from gateway.domain.policy import Policy
from gateway.engine.hot import HotDatasets
from gateway.service.tokens import TokenKey
from gateway.store.audit import AuditLog
from gateway.store.catalog import Catalog
from gateway.store.crypto import Keyring, token_secret_aad
from gateway.store.db import Database
from gateway.store.files import DatasetFiles
from gateway.store.ledger import Ledger

_SIGNING_KEY = "audit-signing-key"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything a use case needs; the only mutable state is in the store."""

    settings: Settings
    db: Database
    catalog: Catalog
    ledger: Ledger
    audit: AuditLog
    files: DatasetFiles
    keyring: Keyring
    clock: Callable[[], datetime] = utc_now
    policy_cache: dict[tuple[str, int], Policy] = field(default_factory=dict)
    token_keys: dict[str, TokenKey] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hot: HotDatasets = field(default_factory=lambda: HotDatasets(capacity_bytes=0))
    """Decrypted datasets kept in memory for queries (gateway/engine/hot.py)."""

    def close(self) -> None:
        self.hot.close()
        self.db.close()

    def token_key(self, collab_id: str) -> TokenKey:
        """The collaboration's token scheme and secret, unwrapped once and kept in memory."""
        with self.lock:
            if collab_id not in self.token_keys:
                scheme, wrapped = self.catalog.wrapped_token_secret(collab_id)
                secret = self.keyring.unwrap(wrapped, token_secret_aad(collab_id))
                self.token_keys[collab_id] = TokenKey(scheme, secret)
            return self.token_keys[collab_id]


def record(
    services: Services,
    actor: Principal | None,
    collaboration: str | None,
    action: str,
    *,
    visible_to: tuple[str, ...],
    details: dict[str, Any],
) -> None:
    """Append an audit event by ``actor`` (None for the operator's offline commands)."""
    services.audit.append(
        at=services.clock(),
        collaboration=collaboration,
        actor_org=actor.org if actor else None,
        actor_role=actor.role if actor else None,
        action=action,
        visible_to=visible_to,
        details=details,
    )


def _signing_key(catalog: Catalog, keyring: Keyring) -> Ed25519PrivateKey:
    aad = _SIGNING_KEY.encode()
    wrapped = catalog.gateway_secret(_SIGNING_KEY)
    if wrapped is None:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        catalog.set_gateway_secret(_SIGNING_KEY, keyring.wrap(raw, aad))
        return key
    return Ed25519PrivateKey.from_private_bytes(keyring.unwrap(wrapped, aad))


def open_services(settings: Settings, clock: Callable[[], datetime] = utc_now) -> Services:
    """Open (or create) the store under ``settings.data_dir``.

    Raises:
        ConfigurationError: when no usable master key is configured.
    """
    keyring = Keyring(settings.load_master_key())
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.catalog_path)
    catalog = Catalog(db)
    return Services(
        settings=settings,
        db=db,
        catalog=catalog,
        ledger=Ledger(db),
        audit=AuditLog(db, _signing_key(catalog, keyring)),
        files=DatasetFiles(settings.datasets_dir, keyring),
        keyring=keyring,
        clock=clock,
        hot=HotDatasets(settings.hot_cache_bytes, query_memory_limit=settings.query_memory_limit),
    )
