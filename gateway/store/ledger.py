"""The privacy-budget ledger: reservations are written before any noise is drawn."""

from __future__ import annotations

import uuid
from datetime import datetime

from gateway.domain.budget import QueryCost, fits
from gateway.domain.errors import BudgetExceeded
from gateway.store.db import Database

_MEASURES = {"epsilon": "epsilon", "rho": "rho"}  # column names, never caller input


class Ledger:
    """Per collaboration, analyst organisation and period: privacy loss reserved and spent.

    Each entry records ε, ρ and δ; a pure-DP policy composes ε, a zCDP policy composes ρ.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def spent(self, collab_id: str, org: str, period: str, measure: str = "epsilon") -> float:
        row = self.db.one(
            f"SELECT COALESCE(SUM({_MEASURES[measure]}), 0) FROM ledger "
            "WHERE collaboration = ? AND org = ? AND period = ?",
            (collab_id, org, period),
        )
        return float(row[0]) if row else 0.0

    def reserve(
        self,
        collab_id: str,
        org: str,
        period: str,
        cost: QueryCost,
        measure: str,
        total: float,
        query_id: str,
        at: datetime,
    ) -> float:
        """Reserve ``cost`` in one transaction that refuses to overspend ``total``.

        A reservation counts as spent from the moment it is written: a crash before the release
        leaves it spent, which is the safe side. Returns what is spent (in ``measure``), this
        reservation included.

        Raises:
            BudgetExceeded: with spent, asked and left in the message; nothing is written.
        """
        asked = cost.amount(measure)
        with self.db.transaction() as tx:
            row = tx.one(
                f"SELECT COALESCE(SUM({_MEASURES[measure]}), 0) FROM ledger "
                "WHERE collaboration = ? AND org = ? AND period = ?",
                (collab_id, org, period),
            )
            spent = float(row[0]) if row else 0.0
            if not fits(spent, asked, total):
                left = max(0.0, total - spent)
                raise BudgetExceeded(
                    f"privacy budget exceeded for {org} in period {period}: spent "
                    f"{spent:.6g}, asked {asked:.6g}, left {left:.6g} of {total:.6g} ({measure})"
                )
            tx.execute(
                "INSERT INTO ledger (entry_id, collaboration, org, period, epsilon, query_id, "
                "status, created_at, delta, rho) VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                (
                    uuid.uuid4().hex,
                    collab_id,
                    org,
                    period,
                    cost.epsilon,
                    query_id,
                    at,
                    cost.delta,
                    cost.rho,
                ),
            )
        return spent + asked

    def mark_released(self, query_id: str) -> None:
        self.db.execute("UPDATE ledger SET status = 'released' WHERE query_id = ?", (query_id,))
