"""Distributional tests of OpenDP's noise and of the stated 95% intervals.

OpenDP's noise cannot be seeded, so each test compares a statistic of many draws with a bound
whose false-failure probability is below 1e-10 (the style guide asks for < 1e-9).

The bounds are Chernoff bounds with the *exact* moment generating function of the quantity
summed, minimised over a fixed grid of λ (the grid does not depend on the draws, so every λ in
it gives a valid bound and so does the best one):

    P(S_n >= t) <= exp(n·log M(λ) - λ·t)    and    P(S_n <= t) <= exp(n·log M(-λ) + λ·t)

For a sum of n Bernoulli(p) this is the binomial Chernoff–Hoeffding (KL) bound; for squares of
discrete Laplace noise, whose MGF is infinite, the noise is first truncated at a K with
``n·P(|X| > K) <= 1e-11`` (on that event the truncated and untruncated sums agree). Each test
prints the resulting bound in standard errors in its comment to show the margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from gateway.domain.cells import ExactCells
from gateway.domain.checker import check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import parse_policy
from gateway.dp.noise import LaplaceVector, discrete_laplace_halfwidth, discrete_laplace_variance
from gateway.dp.release import plan_noise, release_rows

pytestmark = pytest.mark.statistical

FAILURE = 1e-10  # per test, both tails together
LAMBDA_GRID = np.geomspace(1e-7, 0.999, 4000)  # fractions of the largest usable λ


def _log_mgf_finite(values: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    logp = np.log(probs)

    def log_mgf(lam: np.ndarray) -> np.ndarray:
        z = lam[:, None] * values[None, :] + logp[None, :]
        top = z.max(axis=1)
        return top + np.log(np.exp(z - top[:, None]).sum(axis=1))

    return log_mgf


def chernoff_interval(
    log_mgf: Callable[[np.ndarray], np.ndarray], lam_max: float, n: int, failure: float
) -> tuple[float, float]:
    """``(lo, hi)`` with ``P(S_n < lo) + P(S_n > hi) <= failure`` for a sum of n iid draws."""
    lam = LAMBDA_GRID * lam_max
    log_tail = math.log(failure / 2)
    hi = float(np.min((n * log_mgf(lam) - log_tail) / lam))
    lo = float(np.max((log_tail - n * log_mgf(-lam)) / lam))
    return lo, hi


def finite_interval(
    values: np.ndarray, probs: np.ndarray, n: int, failure: float
) -> tuple[float, float]:
    spread = float(np.max(np.abs(values - np.dot(values, probs)))) or 1.0
    return chernoff_interval(_log_mgf_finite(values, probs), 50.0 / spread, n, failure)


def laplace_sum_interval(scale: float, n: int, failure: float) -> tuple[float, float]:
    """Bound on a sum of n discrete Laplace draws, with the closed-form MGF (|λ| < 1/scale):
    ``M(λ) = (1-α)² / ((1-α e^λ)(1-α e^-λ))``, ``α = e^(-1/scale)``."""
    inv = 1.0 / scale

    def log_mgf(lam: np.ndarray) -> np.ndarray:
        return (
            2 * math.log(-math.expm1(-inv))
            - np.log(-np.expm1(lam - inv))
            - np.log(-np.expm1(-lam - inv))
        )

    return chernoff_interval(log_mgf, inv, n, failure)


def bernoulli_interval(p: float, n: int, failure: float) -> tuple[float, float]:
    """Bound on the number of successes in n Bernoulli(p) trials (KL Chernoff bound)."""
    return finite_interval(np.array([0.0, 1.0]), np.array([1 - p, p]), n, failure)


def truncated_squares(scale: float, n: int, failure: float) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of ``min(X², K²)`` with ``n·P(|X| > K) <= failure``."""
    alpha = math.exp(-1.0 / scale)
    k = 0
    while n * 2 * alpha ** (k + 1) / (1 + alpha) > failure:
        k += 1
    ks = np.arange(0, k + 1, dtype=float)
    probs = (1 - alpha) / (1 + alpha) * alpha**ks * np.where(ks == 0, 1.0, 2.0)
    probs[-1] += 2 * alpha ** (k + 1) / (1 + alpha)  # the clipped tails, folded onto K²
    return ks**2, probs


def coverage(scale: float) -> float:
    """Exact ``P(|X| <= t)`` for the half-width t the gateway states at ``scale``."""
    alpha = math.exp(-1.0 / scale)
    t = discrete_laplace_halfwidth(scale)
    return 1 - 2 * alpha ** (t + 1) / (1 + alpha)


# ---------------------------------------------------------------------------------------------
# The noise itself: unbiased, with the stated variance

N_NOISE = 60_000
NOISE_CASES = [(3, 0.5), (1, 1.4)]  # scales 6 (Laplace-like) and ~0.71 (visibly discrete)


@pytest.fixture(scope="module")
def noise_draws() -> dict[float, np.ndarray]:
    draws = {}
    exact = [(i * 7919) % 100_003 - 50_000 for i in range(N_NOISE)]
    for sensitivity, epsilon in NOISE_CASES:
        mech = LaplaceVector(sensitivity, epsilon)
        noisy = mech.release(exact)
        draws[mech.scale] = np.array(noisy, dtype=np.int64) - np.array(exact, dtype=np.int64)
    return draws


def test_noise_is_unbiased(noise_draws: dict[float, np.ndarray]) -> None:
    # n = 60,000 noise values per scale; the bound is the exact-MGF Chernoff bound at 1e-10.
    # Scale 6: σ ≈ 8.48, standard error of the mean ≈ 0.035; the bound is ≈ ±0.24 (≈ 7 SE).
    # Scale 0.71: σ ≈ 0.93, standard error ≈ 0.0038; the bound is ≈ ±0.027 (≈ 7 SE).
    for scale, noise in noise_draws.items():
        lo, hi = laplace_sum_interval(scale, noise.size, FAILURE / len(noise_draws))
        sigma = math.sqrt(discrete_laplace_variance(scale))
        assert hi < 8 * sigma * math.sqrt(noise.size)  # the bound is tight enough to mean much
        assert lo <= float(noise.sum()) <= hi, (scale, noise.mean())


def test_noise_variance_matches_the_formula(noise_draws: dict[float, np.ndarray]) -> None:
    # Sum of squares of n = 60,000 draws: truncated at K (n·P(|X| > K) <= 1e-11), then the
    # exact-MGF Chernoff bound at 4.5e-11. Scale 6 (K = 222): variance 71.8, the bound is
    # -6.2%/+6.6% of it (≈ 7 SE of the mean square, SE ≈ 0.9%); scale 0.71 (K = 26): variance
    # 0.87, -6.9%/+7.3% (SE ≈ 1.0%). That is tighter than the 17% gap between the discrete
    # variance and the continuous 2·scale² at scale 0.71.
    budget = FAILURE / len(noise_draws)
    for scale, noise in noise_draws.items():
        variance = discrete_laplace_variance(scale)
        values, probs = truncated_squares(scale, noise.size, budget / 10)
        lo, hi = finite_interval(values, probs, noise.size, budget * 0.9)
        assert lo / noise.size <= variance <= hi / noise.size
        assert (hi - lo) / noise.size < 0.15 * variance
        squares = float(np.sum(noise.astype(np.float64) ** 2))
        assert lo <= squares <= hi, (scale, squares / noise.size, variance)


# ---------------------------------------------------------------------------------------------
# The release's 95% intervals cover the exact value about 95% of the time

KEYS = [f"k{i:03d}" for i in range(500)]
REPEATS = 100  # 500 groups x 100 releases = 50,000 (cell, interval) pairs per output


def coverage_query(epsilon: float) -> object:
    policy = parse_policy(
        {
            "collaboration": "coverage",
            "privacy": {"max_epsilon_per_query": 10.0},
            "budgets": {"acme": {"epsilon": 1000.0}},
            "datasets": {
                "bigmart.loyalty": {
                    "customer_key": "ck",
                    "columns": {
                        "g": {"use": "dimension", "keys": KEYS},
                        "visits": {
                            "use": "measure",
                            "type": "int",
                            "bounds": [0, 60],
                            "aggregates": ["sum", "mean"],
                        },
                    },
                }
            },
            "rules": {"min_group_size": 0},
        }
    )
    plan = {
        "from": "bigmart.loyalty",
        "group_by": ["g"],
        "aggregates": [
            {"fn": "count", "as": "n"},
            {"fn": "sum", "column": "visits", "as": "total"},
            {"fn": "mean", "column": "visits", "as": "avg"},
        ],
    }
    request = parse_query_request({"plan": plan, "epsilon": epsilon})
    return check_query(request, policy, "acme")


def test_stated_intervals_cover_95_percent() -> None:
    # ε = 1.2 over three statistics (count, sum, and the mean's centred sum): the count has
    # scale 2.5 (sensitivity 1), the sum scale 150 (sensitivity 60) and the centred sum scale 75
    # (sensitivity 30, around the centre 30), where the exact coverage of the stated interval is
    # 0.9512, 0.9500 and 0.9505: near 95%, so a too-narrow interval would show.
    checked = coverage_query(1.2)
    noise = plan_noise(checked)
    count_mech = noise.mechanisms["count"]
    sum_mech = noise.mechanisms["sum:bigmart.loyalty.visits"]
    centred_mech = noise.mechanisms["csum:bigmart.loyalty.visits"]
    assert (count_mech.scale, sum_mech.scale, centred_mech.scale) == pytest.approx((2.5, 150, 75))
    count_coverage, sum_coverage = coverage(count_mech.scale), coverage(sum_mech.scale)
    assert 0.95 <= count_coverage <= 0.97
    assert 0.95 <= sum_coverage <= 0.97
    assert 0.95 <= coverage(centred_mech.scale) <= 0.97

    exact_count = {(k,): 1000 + 3 * i for i, k in enumerate(KEYS)}
    exact_mean = {(k,): (i * 7) % 61 for i, k in enumerate(KEYS)}  # 0..60, bounds included
    exact = ExactCells(
        scalars={
            key: {
                "count": c,
                "sum:bigmart.loyalty.visits": c * exact_mean[key],
                "csum:bigmart.loyalty.visits": c * (exact_mean[key] - 30),
            }
            for key, c in exact_count.items()
        }
    )
    hits = {"n": 0, "total": 0, "avg": 0}
    for _ in range(REPEATS):
        for row in release_rows(checked, noise, exact):
            key = (row["g"],)
            truth = {
                "n": exact_count[key],
                "total": exact.scalars[key]["sum:bigmart.loyalty.visits"],
                "avg": exact_mean[key],
            }
            for alias, value in truth.items():
                low, high = row[alias]["ci95"]
                hits[alias] += low - 1e-9 <= value <= high + 1e-9
    n = REPEATS * len(KEYS)

    # Each interval covers independently (fresh noise per cell) with the exact probability
    # above. KL Chernoff bounds at 1e-10 / 3 each: n = 50,000, p ≈ 0.951, SE ≈ 0.00097; the
    # bounds are -0.0070/+0.0067 (≈ 7 SE). 0.93 and 0.97 are both more than 19 SE away.
    for alias, p in (("n", count_coverage), ("total", sum_coverage)):
        lo, hi = bernoulli_interval(p, n, FAILURE / 3)
        assert lo <= hits[alias] <= hi, (alias, hits[alias] / n, p)
        assert 0.93 <= hits[alias] / n <= 0.97

    # The mean is centre + centred sum / count; its interval adds the two exact half-widths of
    # its linearised error (N_csum - (mean - centre)·N_count) / count, so it covers at least 95%
    # (up to a vanishing non-linear term at counts >= 1000); when the mean is near the centre
    # it covers much more. Bound: the number of hits is at least the lower KL Chernoff
    # bound for p = 0.95 at 1e-10 / 3 (≈ 0.9430·n). A normal ±1.96σ interval covers only about
    # 94% here, since the sum's Laplace noise dominates.
    lo, _ = bernoulli_interval(0.95, n, FAILURE / 3)
    assert hits["avg"] >= lo, hits["avg"] / n


# ---------------------------------------------------------------------------------------------
# The centred mean is unbiased up to a tiny ratio bias, which is computed exactly here


def _discrete_laplace_pmf(scale: float, reach: int) -> tuple[np.ndarray, np.ndarray]:
    alpha = math.exp(-1.0 / scale)
    ks = np.arange(-reach, reach + 1)
    return ks, (1 - alpha) / (1 + alpha) * alpha ** np.abs(ks)


def test_centred_mean_is_unbiased_up_to_its_exact_ratio_bias() -> None:
    # 500 groups of 400 customers whose visits average 12 (centre 30), at ε 1 over three
    # statistics (count scale 3, centred-sum scale 90): the mean is 30 + (S + N_s) / (400 + N_c),
    # clamped to [0, 60]. Its exact expectation μ (a sum over both noises' pmfs, each truncated
    # where its tail is < 1e-15) is 12 - 0.0020: a ratio bias of about -18·Var(N_c)/400², next
    # to a noise of σ ≈ 0.37. The average of n = 25,000 releases is within Bernstein's bound of μ
    # at 1e-10: sqrt(2σ²·ln(2/β)/n) + (2/3)·60·ln(2/β)/n ≈ 0.054 (the estimates lie in
    # [0, 60]; σ² is computed exactly the same way).
    checked = coverage_query(1.0)
    noise = plan_noise(checked)
    count_scale = noise.mechanisms["count"].scale
    centred_scale = noise.mechanisms["csum:bigmart.loyalty.visits"].scale
    c, mean = 400, 12
    exact = ExactCells(
        scalars={
            (k,): {
                "count": c,
                "sum:bigmart.loyalty.visits": c * mean,
                "csum:bigmart.loyalty.visits": c * (mean - 30),
            }
            for k in KEYS
        }
    )
    ns, ps = _discrete_laplace_pmf(centred_scale, math.ceil(centred_scale * 40))
    nc, pc_ = _discrete_laplace_pmf(count_scale, math.ceil(count_scale * 40))
    noisy_count = (c + nc)[:, None].astype(float)
    estimate = np.where(
        noisy_count < 1, 30.0, np.clip(30 + (c * (mean - 30) + ns[None, :]) / noisy_count, 0, 60)
    )
    weights = pc_[:, None] * ps[None, :]
    mu = float(np.sum(weights * estimate))
    sigma2 = float(np.sum(weights * (estimate - mu) ** 2))
    assert abs(mu - mean) < 0.005  # the ratio bias: small next to the noise (σ ≈ 0.37)

    values = []
    for _ in range(50):
        values += [row["avg"]["value"] for row in release_rows(checked, noise, exact)]
    n = len(values)
    log_term = math.log(2 / FAILURE)
    width = math.sqrt(2 * sigma2 * log_term / n) + 2 / 3 * 60 * log_term / n
    assert abs(float(np.mean(values)) - mu) <= width, (np.mean(values), mu, width)
    assert width < 0.1
