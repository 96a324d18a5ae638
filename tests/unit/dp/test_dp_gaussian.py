"""zCDP mode: discrete Gaussian noise from OpenDP, certified ρ, and its stated intervals."""

from __future__ import annotations

import math

import pytest

from gateway.domain.budget import epsilon_to_rho, rho_to_epsilon
from gateway.dp.noise import GaussianVector, discrete_gaussian_halfwidth, halfwidth


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 10.0, 123.4, 499.0])
def test_halfwidth_is_the_smallest_covering_integer(sigma: float) -> None:
    t = discrete_gaussian_halfwidth(sigma)
    reach = int(60 * sigma) + 2
    mass = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(reach)]
    total = mass[0] + 2 * sum(mass[1:])

    def covered(u: int) -> float:
        return (mass[0] + 2 * sum(mass[1 : u + 1])) / total

    assert covered(t) >= 0.95
    assert t == 0 or covered(t - 1) < 0.95


def test_large_sigma_uses_the_normal_quantile() -> None:
    assert discrete_gaussian_halfwidth(10_000.0) == math.ceil(1.959963984540054 * 10_000)


@pytest.mark.parametrize(("sensitivity", "rho"), [(1, 0.01), (7, 0.5), (200_000, 0.003)])
def test_certified_rho_is_at_most_the_share(sensitivity: int, rho: float) -> None:
    mech = GaussianVector(sensitivity, rho)
    assert mech.cost <= rho
    assert mech.cost == pytest.approx(rho, rel=1e-9)
    assert mech.halfwidth95 == halfwidth("rho", sensitivity, rho)


def test_rho_and_epsilon_conversions_are_inverse() -> None:
    for epsilon in (0.01, 0.5, 1.0, 8.0):
        rho = epsilon_to_rho(epsilon, 1e-7)
        assert rho_to_epsilon(rho, 1e-7) == pytest.approx(epsilon, rel=1e-12)


@pytest.mark.statistical
def test_stated_gaussian_intervals_cover_95_percent() -> None:
    """20,000 cells at σ = 10: the interval's exact coverage is about 0.9515.

    The number of misses is Binomial(20000, p ≤ 0.05); the check 0.93 ≤ coverage ≤ 0.97 fails
    only if the miss rate leaves [0.03, 0.07], which is more than 12 standard errors (SE ≈
    0.0015) away from 0.05: a Chernoff bound gives a probability far below 1e-20.
    """
    mech = GaussianVector(1, 0.005)  # σ = 1 / sqrt(0.01) = 10
    exact = [1000] * 20_000
    noisy = mech.release(exact)
    half = mech.halfwidth95
    coverage = sum(abs(v - 1000) <= half for v in noisy) / len(noisy)
    assert 0.93 <= coverage <= 0.97
    mean_error = sum(v - 1000 for v in noisy) / len(noisy)
    assert abs(mean_error) < 10 * 7 / math.sqrt(len(noisy))  # 7 SE: P < 1e-11
