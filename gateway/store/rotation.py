"""Master-key rotation: re-wrap every secret in the catalog under a new master key.

What the master key protects is small: each dataset version's data key, each collaboration's
tokenisation secret and the gateway's own secrets (the audit signing key). Rotation re-wraps
those in one catalog transaction; the encrypted dataset files are not touched, because their
data keys do not change. Either every secret is re-wrapped or none is.

The rotation records itself in the audit chain, in the same transaction: one
``master_key.rotated`` event per collaboration (visible to its members: how many of its data
keys and tokenisation secrets were re-wrapped) and one gateway-level event with the totals.
Events name keys only by public fingerprints (:attr:`Keyring.key_id` for the master keys, 8 hex
digits of SHA-256 of the public key for the audit signing key: :attr:`AuditLog.key_id`), never
by key material, and are signed with the gateway's audit key like every other event.

Example:
    >>> counts = rotate_master_key(db, Keyring(old_key), Keyring(new_key))
    >>> sorted(counts)
    ['audit_events', 'data_keys', 'gateway_secrets', 'token_secrets']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.domain.model import dataset_key_aad
from gateway.store.audit import AuditLog
from gateway.store.crypto import DecryptionFailed, Keyring, token_secret_aad
from gateway.store.db import Database

AUDIT_SIGNING_KEY = "audit-signing-key"
"""The gateway secret holding the audit signing key (as ``service.context`` stores it)."""
ROTATED = "master_key.rotated"


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
    secrets), so a re-wrapped secret still cannot be moved to another row. The audit events
    (see the module) are appended in the same transaction, before ``before_commit`` runs.

    Raises:
        DecryptionFailed: a secret does not unwrap with ``old`` (wrong current key); nothing
            has changed.
    """
    counts = {"data_keys": 0, "token_secrets": 0, "gateway_secrets": 0, "audit_events": 0}
    data_keys: Counter[str] = Counter()
    token_secrets: Counter[str] = Counter()
    signing_key: bytes | None = None
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
            data_keys[collab] += 1
        for collab, wrapped in tx.execute(
            "SELECT id, token_secret FROM collaborations ORDER BY id"
        ):
            aad = token_secret_aad(collab)
            tx.execute(
                "UPDATE collaborations SET token_secret = ? WHERE id = ?",
                (_rewrap(old, new, bytes(wrapped), aad), collab),
            )
            counts["token_secrets"] += 1
            token_secrets[collab] += 1
        for name, wrapped in tx.execute("SELECT name, wrapped FROM gateway_secrets ORDER BY name"):
            aad = str(name).encode()
            rewrapped = _rewrap(old, new, bytes(wrapped), aad)
            tx.execute("UPDATE gateway_secrets SET wrapped = ? WHERE name = ?", (rewrapped, name))
            counts["gateway_secrets"] += 1
            if name == AUDIT_SIGNING_KEY:
                signing_key = new.unwrap(rewrapped, aad)
        if signing_key is not None:
            audit = AuditLog(tx, Ed25519PrivateKey.from_private_bytes(signing_key))
            keys = {
                "old_master_key": old.key_id,
                "new_master_key": new.key_id,
                "audit_signing_key": audit.key_id,
            }
            counts["audit_events"] = _record(tx, audit, keys, counts, data_keys, token_secrets)
        if before_commit is not None:
            before_commit()
    return counts


def _record(
    tx: Database,
    audit: AuditLog,
    keys: dict[str, str],
    counts: dict[str, int],
    data_keys: Counter[str],
    token_secrets: Counter[str],
) -> int:
    """Append the rotation's audit events inside ``tx``; return how many.

    ``keys`` holds the fingerprints of the keys involved (never key material).
    """
    at = datetime.now(UTC)
    members: dict[str, list[str]] = {}
    for collab, org in tx.execute("SELECT collaboration, org FROM members ORDER BY 1, 2"):
        members.setdefault(str(collab), []).append(str(org))
    events = 0
    for collab in sorted(token_secrets):
        details = {"data_keys": data_keys[collab], "token_secrets": token_secrets[collab], **keys}
        audit.append_within(
            tx,
            at=at,
            collaboration=collab,
            actor_org=None,
            actor_role=None,
            action=ROTATED,
            visible_to=tuple(members.get(collab, ())),
            details={**details, "outcome": "rewrapped"},
        )
        events += 1
    totals = {k: counts[k] for k in ("data_keys", "token_secrets", "gateway_secrets")}
    audit.append_within(
        tx,
        at=at,
        collaboration=None,
        actor_org=None,
        actor_role=None,
        action=ROTATED,
        visible_to=(),
        details={**totals, **keys, "collaborations": events, "outcome": "rewrapped"},
    )
    return events + 1
