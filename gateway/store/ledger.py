"""The privacy-budget ledger: reservations are written before any noise is drawn."""

from __future__ import annotations

import uuid
from datetime import datetime

from gateway.domain.budget import Epsilon
from gateway.domain.errors import BudgetExceeded
from gateway.store.db import Database


class Ledger:
    """Per collaboration, analyst organisation and period: ε reserved and spent."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def spent(self, collab_id: str, org: str, period: str) -> Epsilon:
        row = self.db.one(
            "SELECT COALESCE(SUM(epsilon), 0) FROM ledger "
            "WHERE collaboration = ? AND org = ? AND period = ?",
            (collab_id, org, period),
        )
        return Epsilon(float(row[0]) if row else 0.0)

    def reserve(
        self,
        collab_id: str,
        org: str,
        period: str,
        cost: Epsilon,
        total: Epsilon,
        query_id: str,
        at: datetime,
    ) -> Epsilon:
        """Reserve ``cost`` in one transaction that refuses to overspend ``total``.

        A reservation counts as spent from the moment it is written: a crash before the release
        leaves it spent, which is the safe side. Returns what is spent, this one included.

        Raises:
            BudgetExceeded: with spent, asked and left in the message; nothing is written.
        """
        with self.db.transaction() as tx:
            row = tx.one(
                "SELECT COALESCE(SUM(epsilon), 0) FROM ledger "
                "WHERE collaboration = ? AND org = ? AND period = ?",
                (collab_id, org, period),
            )
            spent = Epsilon(float(row[0]) if row else 0.0)
            if not (spent + cost).fits_within(total):
                left = spent.left_of(total)
                raise BudgetExceeded(
                    f"privacy budget exceeded for {org} in period {period}: spent "
                    f"{spent.value:.6g}, asked {cost.value:.6g}, left {left.value:.6g} "
                    f"of {total.value:.6g}"
                )
            tx.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?)",
                (uuid.uuid4().hex, collab_id, org, period, cost.value, query_id, at),
            )
        return spent + cost

    def mark_released(self, query_id: str) -> None:
        self.db.execute("UPDATE ledger SET status = 'released' WHERE query_id = ?", (query_id,))
