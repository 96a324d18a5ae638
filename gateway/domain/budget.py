"""Privacy budget arithmetic and accounting periods (UTC calendar months)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

_TOLERANCE = 1e-9  # float slack when comparing sums of ε shares


@dataclass(frozen=True)
class Epsilon:
    """A non-negative, finite amount of pure-DP privacy loss."""

    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError("epsilon must be a finite number >= 0")

    def __add__(self, other: Epsilon) -> Epsilon:
        return Epsilon(self.value + other.value)

    def fits_within(self, total: Epsilon) -> bool:
        return self.value <= total.value + _TOLERANCE

    def left_of(self, total: Epsilon) -> Epsilon:
        """What remains of ``total`` after ``self`` was spent; never negative."""
        return Epsilon(max(0.0, total.value - self.value))


@dataclass(frozen=True)
class Period:
    """An accounting period: ``key`` names it in the ledger, ``resets_at`` ends it."""

    key: str
    resets_at: datetime | None

    @staticmethod
    def current(kind: str, now: datetime) -> Period:
        if kind == "none":
            return Period("all", None)
        now = now.astimezone(UTC)
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return Period(f"{now.year:04d}-{now.month:02d}", datetime(year, month, 1, tzinfo=UTC))
