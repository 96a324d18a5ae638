"""Discrete Laplace noise on integer vectors, sampled by OpenDP.

Only OpenDP draws noise: no numpy or ``random`` sampling anywhere in the gateway. The features
enabled are ``contrib`` alone (never floating-point or honest-but-curious).

Example:
    >>> mech = LaplaceVector(sensitivity=1, epsilon=0.5)
    >>> mech.cost <= 0.5
    True
    >>> noisy = mech.release([120, 80, 0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from statistics import NormalDist
from typing import Any

import numpy as np
import opendp.domains as dp_domains
import opendp.measurements as dp_measurements
import opendp.metrics as dp_metrics
from opendp.mod import enable_features

enable_features("contrib")

_I64 = (-(2**63), 2**63 - 1)
Z95 = 1.959963984540054  # two-sided 95% normal quantile, for intervals of derived values


def discrete_laplace_halfwidth(scale: float, level: float = 0.95) -> int:
    """Smallest integer ``t`` with ``P(|X| <= t) >= level`` for discrete Laplace noise.

    ``P(X = k) ∝ exp(-|k| / scale)``, so ``P(|X| > t) = 2 α^(t+1) / (1 + α)`` with
    ``α = exp(-1/scale)``. The interval ``[v - t, v + t]`` covers the true value with
    probability at least ``level`` (slightly above it, since the noise is discrete).
    """
    if scale <= 0:
        return 0
    # Work with log α = -1/scale directly: α itself rounds towards 1 for large scales, and
    # α**t then drifts so far that a step-by-one search would never end (ε is the analyst's).
    log_alpha = -1.0 / scale
    log_tail = math.log((1.0 - level) * (1.0 + math.exp(log_alpha)) / 2.0)

    def covers(t: int) -> bool:
        return (t + 1) * log_alpha <= log_tail

    t = max(math.ceil(log_tail / log_alpha) - 1, 0)
    # The division is exact to a few ulps, so one step either way absorbs the rounding.
    if t > 0 and covers(t - 1):
        t -= 1
    elif not covers(t):
        t += 1
    return t


def discrete_laplace_variance(scale: float) -> float:
    """Variance of discrete Laplace noise: ``2α / (1 - α)^2`` with ``α = exp(-1/scale)``."""
    if scale <= 0:
        return 0.0
    alpha = math.exp(-1.0 / scale)
    one_minus_alpha = -math.expm1(-1.0 / scale)  # 1 - α without cancellation at large scales
    return 2.0 * alpha / one_minus_alpha / one_minus_alpha


class _IntegerNoise:
    """Discrete noise on an integer vector, with a scale OpenDP certifies for ``budget``.

    Subclasses give the OpenDP constructor, the first guess at the scale, and the interval
    maths; the scale is nudged up until OpenDP's own privacy map certifies at most ``budget``.
    """

    def __init__(self, sensitivity: int, budget: float) -> None:
        if sensitivity < 1 or not budget > 0:
            raise ValueError("sensitivity must be >= 1 and the privacy budget > 0")
        self.sensitivity = sensitivity
        scale = self._first_scale(sensitivity, budget)
        measurement = self._measurement(scale)
        while measurement.map(sensitivity) > budget:
            scale = math.nextafter(scale, math.inf)
            measurement = self._measurement(scale)
        self.scale = scale
        self._measurement_obj = measurement

    @staticmethod
    def _first_scale(sensitivity: int, budget: float) -> float:
        raise TypeError("abstract")

    @staticmethod
    def _measurement(scale: float) -> Any:
        raise TypeError("abstract")

    @property
    def cost(self) -> float:
        """The privacy loss (ε or ρ) certified by OpenDP's map for this sensitivity."""
        return float(self._measurement_obj.map(self.sensitivity))

    def release(self, exact: Sequence[int]) -> list[int]:
        """Add noise to every cell, in one OpenDP call. Call only after the cost is reserved.

        The cells go to OpenDP as one int64 array (its numpy input path: no per-cell
        conversion in Python); values beyond the int64 range are clamped to it first.
        """
        if not len(exact):
            return []
        cells = np.fromiter(
            (min(max(int(v), _I64[0]), _I64[1]) for v in exact), dtype=np.int64, count=len(exact)
        )
        return [int(v) for v in self._measurement_obj(cells)]


class LaplaceVector(_IntegerNoise):
    """ε-DP release of an integer vector whose L1 sensitivity is ``sensitivity``.

    The scale is ``sensitivity / epsilon`` (nudged up until OpenDP certifies ``epsilon``).
    """

    def __init__(self, sensitivity: int, epsilon: float) -> None:
        super().__init__(sensitivity, epsilon)
        self.epsilon = epsilon

    @staticmethod
    def _first_scale(sensitivity: int, budget: float) -> float:
        return sensitivity / budget

    @staticmethod
    def _measurement(scale: float) -> Any:
        domain = dp_domains.vector_domain(dp_domains.atom_domain(T="i64"))
        return dp_measurements.make_laplace(domain, dp_metrics.l1_distance(T="i64"), scale=scale)

    @cached_property
    def halfwidth95(self) -> int:
        return discrete_laplace_halfwidth(self.scale)

    @cached_property
    def variance(self) -> float:
        return discrete_laplace_variance(self.scale)


def discrete_gaussian_halfwidth(sigma: float, level: float = 0.95) -> int:
    """Smallest integer ``t`` with ``P(|X| <= t) >= level`` for discrete Gaussian noise.

    ``P(X = k) ∝ exp(-k² / 2σ²)``. Summed exactly for σ up to 500; beyond, the discrete and
    continuous Gaussians agree to far better than a unit, so the normal quantile is used.
    """
    if sigma <= 0:
        return 0
    if sigma > 500:
        return math.ceil(NormalDist().inv_cdf(0.5 + level / 2) * sigma)
    reach = math.ceil(40 * sigma) + 1
    masses = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(reach)]
    total = masses[0] + 2 * sum(masses[1:])
    covered = masses[0]
    t = 0
    while covered / total < level:
        t += 1
        covered += 2 * masses[t]
    return t


class GaussianVector(_IntegerNoise):
    """ρ-zCDP release of an integer vector whose L2 sensitivity is ``sensitivity``.

    Discrete Gaussian noise; σ is ``sensitivity / sqrt(2ρ)`` (nudged up until OpenDP
    certifies ``rho``).
    """

    def __init__(self, sensitivity: int, rho: float) -> None:
        super().__init__(sensitivity, rho)
        self.rho = rho

    @staticmethod
    def _first_scale(sensitivity: int, budget: float) -> float:
        return sensitivity / math.sqrt(2 * budget)

    @staticmethod
    def _measurement(scale: float) -> Any:
        domain = dp_domains.vector_domain(dp_domains.atom_domain(T="i64"))
        return dp_measurements.make_gaussian(domain, dp_metrics.l2_distance(T="i64"), scale=scale)

    @cached_property
    def halfwidth95(self) -> int:
        return discrete_gaussian_halfwidth(self.scale)

    @cached_property
    def variance(self) -> float:
        return self.scale * self.scale


VectorMechanism = LaplaceVector | GaussianVector


def vector_mechanism(measure: str, sensitivity: int, share: float) -> VectorMechanism:
    """Discrete Laplace for pure ε-DP (``measure == "epsilon"``), discrete Gaussian for zCDP."""
    if measure == "rho":
        return GaussianVector(sensitivity, share)
    return LaplaceVector(sensitivity, share)


def halfwidth(measure: str, sensitivity: int, share: float, level: float = 0.95) -> int:
    """The ``level`` half-width of the noise :func:`vector_mechanism` would add (no OpenDP)."""
    if measure == "rho":
        return discrete_gaussian_halfwidth(sensitivity / math.sqrt(2 * share), level)
    return discrete_laplace_halfwidth(sensitivity / share, level)
