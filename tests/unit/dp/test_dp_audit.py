"""A statistical DP audit on neighbouring inputs, in the style of Google's DP stochastic tester.

For neighbouring inputs D and D' (one customer more), an ε-DP mechanism M must satisfy
P[M(D) ∈ S] ≤ e^ε · P[M(D') ∈ S] for every set S. For discrete Laplace noise on an integer
released value, the worst set is S = {output ≤ value(D)}, where the ratio is exactly e^ε: the
test estimates T = P̂_D(S) − e^ε · P̂_D'(S) from n samples of each and accepts when T is below a
fixed tolerance. A mechanism whose noise scale is 20% too small has T between 0.11 (large
sensitivities, nearly continuous noise) and 0.17 (a count) and is rejected.

Tolerance: T's standard deviation is at most sqrt((1 + e^(2ε)) / (4n)) (Bernoulli variances are
at most 1/4); with ε = 1 and n = 100,000 that is 0.0046, and the tolerance 0.04 is 8.7 standard
deviations: Hoeffding on the 2n bounded draws gives P(T > 0.04) ≤ exp(-2 · 0.04² · n /
(1 + e^ε)²) = exp(-23.2) ≈ 8e-11 for the real mechanism.
"""

from __future__ import annotations

import math

import opendp.domains as dp_domains
import opendp.measurements as dp_measurements
import opendp.metrics as dp_metrics
import pytest

from gateway.dp.noise import LaplaceVector

pytestmark = pytest.mark.statistical

N = 100_000
EPSILON = 1.0
TOLERANCE = 0.04


def _laplace(scale: float) -> object:
    domain = dp_domains.vector_domain(dp_domains.atom_domain(T="i64"))
    return dp_measurements.make_laplace(domain, dp_metrics.l1_distance(T="i64"), scale=scale)


def _statistic(release: object, value_d: int, value_d_prime: int) -> float:
    draws_d = release([value_d] * N)  # type: ignore[operator]
    draws_dp = release([value_d_prime] * N)  # type: ignore[operator]
    p_d = sum(1 for v in draws_d if v <= value_d) / N
    p_dp = sum(1 for v in draws_dp if v <= value_d) / N
    return p_d - math.exp(EPSILON) * p_dp


# (statistic, sensitivity in integer units): a count, a sum of spend in cents clamped to
# [0, 2000] (one customer adds up to 200,000), and a mean's centred sum (half of that).
CASES = [("count", 1), ("sum", 200_000), ("centred sum", 100_000)]


@pytest.mark.parametrize(("name", "sensitivity"), CASES)
def test_the_real_mechanism_passes(name: str, sensitivity: int) -> None:
    mech = LaplaceVector(sensitivity, EPSILON)
    t = _statistic(mech.release, 10 * sensitivity, 11 * sensitivity)
    print(f"{name}: T = {t:.4f} (tolerance {TOLERANCE})")
    assert t <= TOLERANCE


@pytest.mark.parametrize(("name", "sensitivity"), CASES)
def test_a_mechanism_with_20_percent_less_noise_is_rejected(name: str, sensitivity: int) -> None:
    """Expected T: 0.172 for a count (α = e^(−1.25)), 0.110 for large sensitivities
    (0.5 − e · 0.5 · e^(−1.25)); with a margin of at least 0.07 over the tolerance, the same
    Hoeffding bound makes a false acceptance less likely than 1e-30."""
    weak = _laplace(0.8 * sensitivity / EPSILON)
    t = _statistic(lambda cells: weak(cells), 10 * sensitivity, 11 * sensitivity)  # type: ignore[operator]
    print(f"{name} with 20% less noise: T = {t:.4f} (tolerance {TOLERANCE})")
    assert t > TOLERANCE
