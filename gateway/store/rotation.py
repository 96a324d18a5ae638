"""Master-key rotation: re-wrap every secret in the catalog under a new master key.

What the master key protects is small: each dataset version's data key, each collaboration's
tokenisation secret and the gateway's own secrets (the audit signing key). Rotation re-wraps
those in one catalog transaction; the encrypted dataset files are not touched, because their
data keys do not change. Either every secret is re-wrapped or none is.

Example:
    >>> counts = rotate_master_key(db, Keyring(old_key), Keyring(new_key))
    >>> sorted(counts)
    ['data_keys', 'gateway_secrets', 'token_secrets']
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.model import dataset_key_aad
from gateway.store.crypto import DecryptionFailed, Keyring, token_secret_aad
from gateway.store.db import Database


def _rewrap(old: Keyring, new: Keyring, wrapped: bytes, aad: bytes) -> bytes:
    """``wrapped`` re-wrapped under ``new``, checked to unwrap to the same secret."""
    secret = old.unwrap(wrapped, aad)
    rewrapped = new.wrap(secret, aad)
    if new.unwrap(rewrapped, aad) != secret:
        raise DecryptionFailed("re-wrapped secret does not round-trip")
    return rewrapped


def rotate_master_key(
    db: Database,
    old: Keyring,
    new: Keyring,
    before_commit: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Re-wrap every wrapped secret under ``new`` in one transaction; return counts by kind.

    The associated data of each secret is kept (``<collaboration>/<dataset>/v<version>`` for
    data keys, ``token-secret/<collaboration>`` for tokenisation secrets, the name for gateway
    secrets), so a re-wrapped secret still cannot be moved to another row.

    Raises:
        DecryptionFailed: a secret does not unwrap with ``old`` (wrong current key); nothing
            has changed.
    """
    counts = {"data_keys": 0, "token_secrets": 0, "gateway_secrets": 0}
    with db.transaction() as tx:
        for collab, dataset, version, wrapped in tx.execute(
            "SELECT collaboration, dataset, version, wrapped_key FROM dataset_versions "
            "ORDER BY collaboration, dataset, version"
        ):
            aad = dataset_key_aad(collab, dataset, version)
            tx.execute(
                "UPDATE dataset_versions SET wrapped_key = ? "
                "WHERE collaboration = ? AND dataset = ? AND version = ?",
                (_rewrap(old, new, bytes(wrapped), aad), collab, dataset, version),
            )
            counts["data_keys"] += 1
        for collab, wrapped in tx.execute(
            "SELECT id, token_secret FROM collaborations ORDER BY id"
        ):
            aad = token_secret_aad(collab)
            tx.execute(
                "UPDATE collaborations SET token_secret = ? WHERE id = ?",
                (_rewrap(old, new, bytes(wrapped), aad), collab),
            )
            counts["token_secrets"] += 1
        for name, wrapped in tx.execute("SELECT name, wrapped FROM gateway_secrets ORDER BY name"):
            tx.execute(
                "UPDATE gateway_secrets SET wrapped = ? WHERE name = ?",
                (_rewrap(old, new, bytes(wrapped), str(name).encode()), name),
            )
            counts["gateway_secrets"] += 1
        if before_commit is not None:
            before_commit()
    return counts
