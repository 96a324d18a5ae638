"""The audit trail: append-only, hash-chained events with an Ed25519-signed chain head.

Each event's hash covers its content and the previous event's hash, so changing, removing or
reordering any event breaks every later link. The head (last sequence number and hash) is signed
with the gateway's Ed25519 key after every append, so truncating the chain is detected too.
Events hold plans, names, ε and outcomes: never rows, exact aggregates or customer tokens.

The chain is one for the whole gateway, so an event's sequence number counts every event of
every organisation before it. An organisation therefore reads its events in its own terms
(:meth:`AuditLog.visible_events`): numbered 1, 2, 3 … among the events of the collaboration it
may see, with a :attr:`AuditEvent.fingerprint` in place of the chain hashes. Neither tells how
many hidden events lie between two of its own (see :class:`VisibleEvent`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.store.db import Database

GENESIS = "0" * 64
_FINGERPRINT_LABEL = "insight-gateway-audit-fingerprint"
_COLUMNS = (
    'seq, "at", collaboration, actor_org, actor_role, action, visible_to, details_json, '
    "prev_hash, hash"
)


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: str
    collaboration: str | None
    actor_org: str | None
    actor_role: str | None
    action: str
    visible_to: tuple[str, ...]
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def fingerprint(self) -> str:
        """A stable reference to this chain entry that reveals nothing about other entries.

        SHA-256 of a fixed label and the entry's chain hash. The chain hash itself is not shown
        to organisations: it covers the global sequence number and the previous entry's hash, so
        with an event's readable content anyone could search the few plausible sequence numbers
        and learn the gateway's total activity, or test whether two of their own events are
        adjacent in the chain. The fingerprint cannot be inverted to a chain hash, so neither
        test can be run; the operator, who holds the chain, maps a fingerprint back to its entry.
        """
        return hashlib.sha256(f"{_FINGERPRINT_LABEL}:{self.hash}".encode()).hexdigest()


@dataclass(frozen=True)
class VisibleEvent:
    """An audit event as one organisation reads it: ``position`` is its ordinal (1, 2, 3 …)
    among the events of the collaboration that the organisation may see, in chain order.

    The global sequence number and the chain hashes are left out: gaps in the one and links
    in the other would count other organisations' events (see :attr:`AuditEvent.fingerprint`).
    """

    position: int
    event: AuditEvent

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "seq": self.position,
            "at": e.at,
            "collaboration": e.collaboration,
            "actor": {"org": e.actor_org, "role": e.actor_role},
            "action": e.action,
            "details": e.details,
            "hash": e.fingerprint,
        }


def _event_of(r: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        int(r[0]), r[1], r[2], r[3], r[4], r[5], tuple(r[6]), json.loads(r[7]), r[8], r[9]
    )


def _event_hash(
    prev_hash: str,
    seq: int,
    at: str,
    collab: str | None,
    org: str | None,
    role: str | None,
    action: str,
    visible_to: tuple[str, ...],
    details_json: str,
) -> str:
    body = json.dumps(
        [prev_hash, seq, at, collab, org, role, action, list(visible_to), details_json],
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    """The verdict on the audit chain: ``first_bad`` and ``reason`` are None when ``ok``."""

    ok: bool
    events: int
    first_bad: int | None
    reason: str | None


def _head_message(seq: int, digest: str) -> bytes:
    return f"insight-gateway-audit-head:{seq}:{digest}".encode()


class AuditLog:
    def __init__(self, db: Database, signing_key: Ed25519PrivateKey) -> None:
        self.db = db
        self._key = signing_key

    @property
    def key_id(self) -> str:
        """The signing key's public fingerprint: 8 hex digits of SHA-256 of the public key."""
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:8]

    def append(
        self,
        *,
        at: datetime,
        collaboration: str | None,
        actor_org: str | None,
        actor_role: str | None,
        action: str,
        visible_to: tuple[str, ...],
        details: dict[str, Any],
    ) -> AuditEvent:
        """Append one event and re-sign the chain head, atomically."""
        with self.db.transaction() as tx:
            return self.append_within(
                tx,
                at=at,
                collaboration=collaboration,
                actor_org=actor_org,
                actor_role=actor_role,
                action=action,
                visible_to=visible_to,
                details=details,
            )

    def append_within(
        self,
        tx: Database,
        *,
        at: datetime,
        collaboration: str | None,
        actor_org: str | None,
        actor_role: str | None,
        action: str,
        visible_to: tuple[str, ...],
        details: dict[str, Any],
    ) -> AuditEvent:
        """Append one event and re-sign the head inside ``tx``, a transaction the caller holds.

        The event commits or rolls back with the caller's other changes (master-key rotation
        records itself this way: the event exists exactly when the rotation does).
        """
        details_json = json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)
        visible = tuple(sorted(set(visible_to)))
        stamp = at.isoformat()
        last = tx.one("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
        digest = _event_hash(
            prev,
            seq,
            stamp,
            collaboration,
            actor_org,
            actor_role,
            action,
            visible,
            details_json,
        )
        tx.execute(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                stamp,
                collaboration,
                actor_org,
                actor_role,
                action,
                list(visible),
                details_json,
                prev,
                digest,
            ),
        )
        signature = self._key.sign(_head_message(seq, digest))
        tx.execute(
            "INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?, ?)", (seq, digest, signature)
        )
        return AuditEvent(
            seq, stamp, collaboration, actor_org, actor_role, action, visible, details, prev, digest
        )

    def events(
        self, collaboration: str, visible_to: str | None, limit: int = 1000, after_seq: int = 0
    ) -> list[AuditEvent]:
        """Events of a collaboration by global sequence number, optionally only those visible
        to one organisation: the operator's view (organisations read :meth:`visible_events`)."""
        sql = f"SELECT {_COLUMNS} FROM audit_events WHERE collaboration = ? AND seq > ?"
        params: list[Any] = [collaboration, after_seq]
        if visible_to is not None:
            sql += " AND list_contains(visible_to, ?)"
            params.append(visible_to)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [_event_of(r) for r in self.db.execute(sql, params)]

    def visible_events(
        self, collaboration: str, org: str, limit: int = 1000, after: int = 0
    ) -> list[VisibleEvent]:
        """The collaboration's events that ``org`` may see, numbered 1, 2, 3 … in chain order;
        the page holds those numbered ``after + 1`` to ``after + limit``.

        The numbering depends only on which events ``org`` may see, so nothing another
        organisation does, in this collaboration or any other, shifts or gaps it.

        Example:
            >>> page = log.visible_events("cx", "acme", limit=3, after=10)  # doctest: +SKIP
            >>> [v.position for v in page]  # doctest: +SKIP
            [11, 12, 13]
        """
        visible = "collaboration = ? AND list_contains(visible_to, ?)"
        sql = f"SELECT {_COLUMNS} FROM audit_events WHERE {visible}"
        params: list[Any] = [collaboration, org]
        if after > 0:  # past the event numbered ``after``; none at all if there is no such event
            sql += (
                f" AND seq > (SELECT seq FROM audit_events WHERE {visible}"
                " ORDER BY seq LIMIT 1 OFFSET ?)"
            )
            params += [collaboration, org, after - 1]
        rows = self.db.execute(f"{sql} ORDER BY seq LIMIT ?", [*params, limit])
        return [VisibleEvent(after + i, _event_of(r)) for i, r in enumerate(rows, start=1)]

    def visible_extent(
        self, collaboration: str, org: str, from_seq: int | None
    ) -> tuple[int, int | None]:
        """How many of a collaboration's events ``org`` may see, and the position (as
        :meth:`visible_events` numbers them) of the first of those at or after the global
        ``from_seq`` (``None`` when ``from_seq`` is ``None`` or no such event)."""
        row = self.db.one(
            "SELECT count(*), count(*) FILTER (WHERE seq < ?), count(*) FILTER (WHERE seq >= ?)"
            " FROM audit_events WHERE collaboration = ? AND list_contains(visible_to, ?)",
            (from_seq or 0, from_seq or 0, collaboration, org),
        )
        count, before, from_there = (int(v) for v in row) if row else (0, 0, 0)
        if from_seq is None or from_there == 0:
            return count, None
        return count, before + 1

    def verify(self) -> tuple[bool, int, int | None]:
        """Check every link and the signed head. Returns ``(ok, events, first_bad_seq)``."""
        result = self.check()
        return result.ok, result.events, result.first_bad

    def check(self) -> ChainCheck:
        """Check the whole chain and say where and why it breaks.

        ``first_bad`` is the lowest sequence number that cannot be trusted: a changed entry, the
        first missing one in a gap, the first one cut from the tail (the signed head names a
        later entry), the first one appended after the signed head, or the last entry when the
        head's signature does not verify under the gateway's key.

        Example:
            >>> log.check()  # doctest: +SKIP
            ChainCheck(ok=False, events=41, first_bad=7, reason='entry 7 is missing')
        """
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq")
        count = len(rows)
        hashes: dict[int, str] = {}
        prev, expected_seq = GENESIS, 1
        for r in rows:
            seq = int(r[0])
            if seq != expected_seq:
                return ChainCheck(False, count, expected_seq, f"entry {expected_seq} is missing")
            if r[8] != prev:
                reason = f"entry {seq} does not link to entry {seq - 1}"
                return ChainCheck(False, count, seq, reason)
            digest = _event_hash(prev, seq, r[1], r[2], r[3], r[4], r[5], tuple(r[6]), r[7])
            if r[9] != digest:
                return ChainCheck(False, count, seq, f"entry {seq} does not match its hash")
            hashes[seq] = digest
            prev, expected_seq = digest, seq + 1
        return self._check_head(count, hashes)

    def _check_head(self, count: int, hashes: dict[int, str]) -> ChainCheck:
        head = self.db.one("SELECT seq, hash, signature FROM audit_head WHERE id = 1")
        last = count  # the links held, so the entries are exactly 1..count
        if head is None:
            if count == 0:
                return ChainCheck(True, 0, None, None)
            return ChainCheck(False, count, last, "the signed chain head is missing")
        head_seq, head_hash = int(head[0]), str(head[1])
        try:
            self._key.public_key().verify(bytes(head[2]), _head_message(head_seq, head_hash))
        except InvalidSignature:
            reason = "the chain head's signature does not verify under the gateway's key"
            return ChainCheck(False, count, max(last, 1), reason)
        if head_seq > last:
            reason = f"entries {last + 1}..{head_seq} are missing (the signed head is {head_seq})"
            return ChainCheck(False, count, last + 1, reason)
        if hashes.get(head_seq) != head_hash:
            reason = f"entry {head_seq} differs from the one the head signed"
            return ChainCheck(False, count, head_seq, reason)
        if head_seq < last:
            reason = f"entries {head_seq + 1}..{last} were added after the signed head"
            return ChainCheck(False, count, head_seq + 1, reason)
        return ChainCheck(True, count, None, None)
