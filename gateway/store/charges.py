"""Reading the ledger's charges one by one, for budget history (the ledger itself lives in
:mod:`gateway.store.ledger`, which alone writes it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.store.db import Database


@dataclass(frozen=True)
class Charge:
    """One reservation as the ledger holds it: when, in which period, and how much."""

    period: str
    at: datetime
    epsilon: float
    rho: float


def charges(db: Database, collab_id: str, org: str) -> list[Charge]:
    """Every reservation of ``org`` in ``collab_id``, oldest first; reads only.

    A reservation counts from the moment it is written, released or not, as in
    :meth:`gateway.store.ledger.Ledger.spent`.

    Example:
        >>> charges(services.db, "acme-bigmart-cx", "acme")[0].epsilon  # doctest: +SKIP
        0.5
    """
    rows = db.execute(
        "SELECT period, created_at, epsilon, rho FROM ledger "
        "WHERE collaboration = ? AND org = ? ORDER BY created_at, rowid",
        (collab_id, org),
    )
    return [Charge(str(r[0]), r[1].astimezone(UTC), float(r[2]), float(r[3] or 0.0)) for r in rows]
