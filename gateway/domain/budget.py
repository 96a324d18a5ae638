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


def rho_to_epsilon(rho: float, delta: float) -> float:
    """(ε, δ)-DP implied by ρ-zCDP: ``ε = ρ + 2·sqrt(ρ·ln(1/δ))`` (Bun & Steinke 2016)."""
    if rho <= 0:
        return 0.0
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def epsilon_to_rho(epsilon: float, delta: float) -> float:
    """The largest ρ whose (ε, δ) equivalent is at most ``epsilon`` (inverse of the above)."""
    if epsilon <= 0:
        return 0.0
    log = math.log(1.0 / delta)
    return (math.sqrt(log + epsilon) - math.sqrt(log)) ** 2


@dataclass(frozen=True)
class QueryCost:
    """What one query spends, in both measures the ledger keeps, plus δ.

    A pure ε-DP query is also ε²/2-zCDP; a ρ-zCDP query is recorded with its (ε, δ)
    equivalent at the policy's δ. So a policy may switch mechanism without forgetting spend.
    """

    epsilon: float
    rho: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epsilon", "rho", "delta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")

    @staticmethod
    def pure(epsilon: float, delta: float = 0.0) -> QueryCost:
        return QueryCost(epsilon, epsilon * epsilon / 2, delta)

    @staticmethod
    def zcdp(rho: float, policy_delta: float, delta: float = 0.0) -> QueryCost:
        return QueryCost(rho_to_epsilon(rho, policy_delta), rho, delta)

    def amount(self, measure: str) -> float:
        return self.rho if measure == "rho" else self.epsilon


def fits(spent: float, cost: float, total: float) -> bool:
    return spent + cost <= total + _TOLERANCE


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
