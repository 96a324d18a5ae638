"""Selection mechanisms from OpenDP: partition selection of private group keys, and quantiles.

* :class:`PartitionSelection` wraps ``make_laplace_threshold`` (``make_gaussian_threshold`` in
  zCDP mode): every group's count gets discrete noise and only groups whose noisy count clears
  a threshold are released.
  The threshold is the smallest that keeps δ within the policy's, and never below the
  policy's ``min_group_size``.
* :class:`QuantileSelector` wraps ``make_noisy_max`` (report noisy min of rank scores, i.e. the
  exponential mechanism over a candidate grid). The scores are computed from per-bin counts
  that DuckDB produced, with the same definition as OpenDP's ``make_quantile_score_candidates``.

Every search below only reads OpenDP's privacy maps; no data is involved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np
import opendp.domains as dp_domains
import opendp.measurements as dp_measurements
import opendp.measures as dp_measures
import opendp.metrics as dp_metrics
from numpy.typing import NDArray

from gateway.dp.noise import (
    discrete_gaussian_halfwidth,
    discrete_laplace_halfwidth,
    discrete_laplace_variance,
)

_SEARCH_STEPS = 200
_NUDGES = 32


def _smallest_scale(cost: Any, epsilon: float, start: float) -> float:
    """Smallest noise scale (within 1e-9 relative) whose certified ε is at most ``epsilon``.

    ``start`` is the textbook scale; OpenDP's map, rounded outwards, usually certifies it or a
    value a few ulps above, so that is tried first (two or three maps); otherwise bisection.
    Either way the result's certified cost is at most ``epsilon`` (OpenDP's own map says so).
    """
    scale = start
    for _ in range(_NUDGES):
        if cost(scale) <= epsilon:
            if cost(scale * (1 - 1e-9)) > epsilon:
                return scale
            break
        scale = math.nextafter(scale, math.inf)
    lo, hi = start / 4, start * 4
    while cost(hi) > epsilon:
        hi *= 2
    while lo > 0 and cost(lo) <= epsilon:
        lo /= 2
    for _ in range(_SEARCH_STEPS):
        if hi - lo <= hi * 1e-9:
            break
        mid = (lo + hi) / 2
        if cost(mid) <= epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def group_label(key: tuple[str | int, ...]) -> str:
    """A group key as one string (OpenDP's threshold maps are keyed by strings)."""
    return json.dumps(list(key), separators=(",", ":"))


class PartitionSelection:
    """(ε, δ)-DP release of the counts of groups whose keys are private.

    One customer touches at most ``l0`` groups with at most ``rows`` rows in all (and in each).
    ``epsilon`` is the loss share in the policy's measure: ε, or ρ when ``measure == "rho"``.
    """

    def __init__(
        self,
        l0: int,
        rows: int,
        epsilon: float,
        delta: float,
        floor: int,
        measure: str = "epsilon",
    ) -> None:
        self.d_in = (l0, rows, rows)
        self.epsilon = epsilon
        self.delta_target = delta
        self.measure = measure
        domain = dp_domains.map_domain(
            dp_domains.atom_domain(T=str), dp_domains.atom_domain(T="i64")
        )
        distance = dp_metrics.absolute_distance(T="i64")
        if measure == "rho":
            metric = dp_metrics.l02inf_distance(distance)
            make = dp_measurements.make_gaussian_threshold
        else:
            metric = dp_metrics.l01inf_distance(distance)
            make = dp_measurements.make_laplace_threshold

        def build(scale: float, threshold: int) -> Any:
            return make(domain, metric, scale=scale, threshold=threshold)

        big = 2**62
        self.scale = _smallest_scale(
            lambda s: build(s, big).map(self.d_in)[0], epsilon, rows * l0 / epsilon
        )
        low, high = rows, big  # OpenDP refuses a threshold below the l∞ distance
        if build(self.scale, high).map(self.d_in)[1] > delta:
            raise ValueError("no threshold reaches the policy's delta")
        while low < high:
            mid = (low + high) // 2
            if build(self.scale, mid).map(self.d_in)[1] <= delta:
                high = mid
            else:
                low = mid + 1
        # OpenDP 0.16 releases a group when its noisy count is >= the threshold, but its privacy
        # map bounds P(noise > threshold - l∞): one step short. A group held by one customer
        # (count l∞) is released with probability P(noise >= threshold - l∞), which is the
        # map's δ at threshold - 1 (measured in tests/unit/dp/test_dp_selection.py). So the
        # mechanism runs one above the threshold the search found, and is certified there.
        self.threshold = max(low + 1, floor)
        self._measurement = build(self.scale, self.threshold)
        self._certified = build(self.scale, self.threshold - 1)

    @property
    def cost(self) -> tuple[float, float]:
        eps, delta = self._certified.map(self.d_in)
        return float(eps), float(delta)

    @cached_property
    def halfwidth95(self) -> int:
        if self.measure == "rho":
            return discrete_gaussian_halfwidth(self.scale)
        return discrete_laplace_halfwidth(self.scale)

    @cached_property
    def variance(self) -> float:
        return self.scale**2 if self.measure == "rho" else discrete_laplace_variance(self.scale)

    def release(self, exact: Mapping[str, int]) -> dict[str, int]:
        """Noisy counts of the groups that clear the threshold. Call after reserving."""
        if not exact:
            return {}
        return {str(k): int(v) for k, v in self._measurement(dict(exact)).items()}


class QuantileSelector:
    """ε-DP choice of a grid point near the ``q``-quantile, one group at a time.

    Score of grid point ``j`` (bins below it: ``lt``, at or above it: ``ge``), with
    ``q = a / b``: ``|(b - a) · lt - a · ge|``. One row moves ``lt`` or ``ge`` by one, so a
    customer with ``rows`` rows moves every score by at most ``rows · max(a, b - a)``.
    """

    def __init__(
        self, q: float, sensitivity: int, epsilon: float, candidates: int, measure: str = "epsilon"
    ) -> None:
        fraction = Fraction(q).limit_denominator(10_000)
        self.a, self.b = fraction.numerator, fraction.denominator
        self.sensitivity = sensitivity
        self.candidates = candidates
        space = (
            dp_domains.vector_domain(dp_domains.atom_domain(T="i64")),
            dp_metrics.linf_distance(T="i64"),
        )
        output = (
            dp_measures.zero_concentrated_divergence()
            if measure == "rho"
            else dp_measures.max_divergence()
        )

        def build(scale: float) -> Any:
            return dp_measurements.make_noisy_max(*space, output, scale=scale, negate=True)

        start = (
            sensitivity / math.sqrt(2 * epsilon) if measure == "rho" else 2 * sensitivity / epsilon
        )
        self.scale = _smallest_scale(lambda s: build(s).map(sensitivity), epsilon, start)
        self._measurement = build(self.scale)

    @property
    def cost(self) -> float:
        return float(self._measurement.map(self.sensitivity))

    @property
    def rank_error95(self) -> float:
        """With probability ≥ 95%, the chosen point's rank misses the best grid point's by at
        most this many rows (the best point's rank is q·n up to ties in the data)."""
        return self.scale * math.log((self.candidates + 1) / 0.05) / self.b

    def scores(self, bin_counts: Mapping[int, int] | NDArray[np.int64]) -> NDArray[np.int64]:
        """Exact integer scores of every grid point (numpy arithmetic on int64, no sampling).

        ``bin_counts`` maps bin ``j`` (rows between grid points ``j`` and ``j + 1``) to its row
        count, or is the dense vector of all ``candidates`` bin counts.
        """
        counts = np.zeros(self.candidates + 1, dtype=np.int64)
        if isinstance(bin_counts, np.ndarray):
            counts[1 : len(bin_counts) + 1] = bin_counts  # bin j is below every grid point > j
        else:
            for j, n in bin_counts.items():
                counts[j + 1] += n
        below = np.cumsum(counts)
        total = int(below[-1])
        scores: NDArray[np.int64] = np.abs((self.b - self.a) * below - self.a * (total - below))
        return scores

    def select(self, bin_counts: Mapping[int, int] | NDArray[np.int64]) -> int:
        """Index of the chosen grid point (0 … candidates). Call after reserving.

        The scores go to OpenDP as one int64 array (its numpy input path).
        """
        return int(self._measurement(self.scores(bin_counts)))
