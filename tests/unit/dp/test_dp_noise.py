"""Discrete Laplace maths checked by brute force; OpenDP's certified cost stays within ε."""

from __future__ import annotations

import math
import time
from decimal import Decimal, localcontext

import pytest

from gateway.dp.noise import LaplaceVector, discrete_laplace_halfwidth, discrete_laplace_variance

SCALES = [0.3, 0.45, 0.5, 0.7, 1.0, 1.3, 2.0, 2.5, 3.0, 3.3333333333333335, 4.0, 5.0, 7.3, 10.0]
SCALES += [12.5, 20.0, 33.3, 50.0, 64.0, 100.0, 250.0, 400.0, 1000.0, 2000.0, 3333.0, 5000.0]


def brute_force_halfwidth(scale: float, level: float) -> int:
    """Walk the pmf ``P(k) = (1-α)/(1+α) α^|k|`` outwards in 50-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = 50
        alpha = (Decimal(-1) / Decimal(scale)).exp()
        mass = (1 - alpha) / (1 + alpha)  # P(X = 0)
        covered = mass
        t = 0
        while covered < Decimal(level):
            t += 1
            mass *= alpha
            covered += 2 * mass
        return t


def brute_force_variance(scale: float) -> float:
    """``Σ k² P(k)`` over ``|k| <= 80·scale + 80`` (the rest is below 1e-30 of the total)."""
    alpha = math.exp(-1.0 / scale)
    p0 = (1 - alpha) / (1 + alpha)
    limit = int(80 * scale) + 80
    return 2 * math.fsum(k * k * p0 * alpha**k for k in range(1, limit))


@pytest.mark.parametrize("scale", SCALES)
def test_halfwidth_matches_the_brute_force_cdf(scale: float) -> None:
    assert discrete_laplace_halfwidth(scale) == brute_force_halfwidth(scale, 0.95)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5, 7.3, 100.0, 1000.0])
@pytest.mark.parametrize("level", [0.5, 0.9, 0.99, 0.999])
def test_halfwidth_at_other_levels(scale: float, level: float) -> None:
    assert discrete_laplace_halfwidth(scale, level) == brute_force_halfwidth(scale, level)


def test_halfwidth_of_no_noise_is_zero() -> None:
    assert discrete_laplace_halfwidth(0.0) == 0
    assert discrete_laplace_halfwidth(-1.0) == 0
    assert discrete_laplace_halfwidth(0.01) == 0  # P(X = 0) > 0.95


@pytest.mark.parametrize("scale", [1e9, 1e12, 1e15, 1e17, 1e30, 2e305])
def test_halfwidth_of_huge_scales_is_quick_and_close_to_the_continuous_one(scale: float) -> None:
    # ε comes from the analyst: a tiny ε gives a huge scale, which must not stall the gateway.
    started = time.perf_counter()
    t = discrete_laplace_halfwidth(scale)
    assert time.perf_counter() - started < 0.1
    assert t == pytest.approx(scale * math.log(20), rel=1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_variance_matches_the_brute_force_sum(scale: float) -> None:
    assert discrete_laplace_variance(scale) == pytest.approx(brute_force_variance(scale), rel=1e-9)


def test_variance_edge_cases() -> None:
    assert discrete_laplace_variance(0.0) == 0.0
    assert discrete_laplace_variance(-2.0) == 0.0
    # large scales approach the continuous Laplace variance 2·scale² without dividing by zero
    assert discrete_laplace_variance(1e17) == pytest.approx(2e34, rel=1e-9)
    assert discrete_laplace_variance(1e9) == pytest.approx(2e18, rel=1e-9)


SENSITIVITIES = [1, 2, 3, 7, 60, 240, 200_000, 2_000_000]
EPSILONS = [0.01, 0.1, 1 / 3, 0.5, 0.7, 1.0, 2.5, 8.0]


@pytest.mark.parametrize("sensitivity", SENSITIVITIES)
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_certified_cost_is_within_epsilon(sensitivity: int, epsilon: float) -> None:
    mech = LaplaceVector(sensitivity, epsilon)
    assert mech.cost <= epsilon
    assert epsilon - mech.cost <= 1e-9
    assert mech.scale >= sensitivity / epsilon
    assert mech.scale == pytest.approx(sensitivity / epsilon, rel=1e-12)
    assert mech.halfwidth95 == discrete_laplace_halfwidth(mech.scale)
    assert mech.variance == discrete_laplace_variance(mech.scale)


@pytest.mark.parametrize(
    ("sensitivity", "epsilon"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -0.5), (1, float("nan"))]
)
def test_nonsense_mechanisms_are_refused(sensitivity: int, epsilon: float) -> None:
    with pytest.raises(ValueError):
        LaplaceVector(sensitivity, epsilon)


def test_release_of_an_empty_vector() -> None:
    assert LaplaceVector(1, 0.5).release([]) == []


def test_release_keeps_length_and_gives_integers() -> None:
    mech = LaplaceVector(1, 1.0)
    noisy = mech.release([0, 10, -10, 1_000_000])
    assert len(noisy) == 4
    assert all(type(v) is int for v in noisy)
    # scale 1: |noise| > 60 has probability 2e^-61/(1+e^-1) < 1e-26 per cell
    assert noisy[3] == pytest.approx(1_000_000, abs=60)


def test_release_accepts_cells_beyond_64_bits() -> None:
    noisy = LaplaceVector(1, 1.0).release([2**70, -(2**70)])
    assert noisy[0] > 2**62 and noisy[1] < -(2**62)
