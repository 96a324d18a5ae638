"""The DP layer's fast paths draw the same noise, certified the same way, as the slow ones.

* the noisy-max scale found from its textbook value is certified by OpenDP and within 1e-9 of
  the bisection's;
* dense bin vectors score exactly as bin dictionaries;
* noise drawn on the worker threads is discrete Laplace noise of the stated scale (a
  frequency check whose false-failure chance is below 1e-10), fresh on every call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import opendp.domains as dp_domains
import opendp.measurements as dp_measurements
import opendp.measures as dp_measures
import opendp.metrics as dp_metrics
import pytest

from gateway.dp import selection
from gateway.dp.noise import LaplaceVector
from gateway.dp.release import _pool
from gateway.dp.selection import QuantileSelector

WORKER_DRAWS = 4  # vectors drawn on the pool, each checked once
FAILURE = 1e-10  # for all of them together


def _bisection(cost: object, epsilon: float, start: float) -> float:
    saved = selection._NUDGES
    selection._NUDGES = 0
    try:
        return selection._smallest_scale(cost, epsilon, start)
    finally:
        selection._NUDGES = saved


def _noisy_max(measure: str, scale: float) -> Any:
    output = (
        dp_measures.zero_concentrated_divergence()
        if measure == "rho"
        else dp_measures.max_divergence()
    )
    return dp_measurements.make_noisy_max(
        dp_domains.vector_domain(dp_domains.atom_domain(T="i64")),
        dp_metrics.linf_distance(T="i64"),
        output,
        scale=scale,
        negate=True,
    )


@pytest.mark.parametrize("measure", ["epsilon", "rho"])
@pytest.mark.parametrize(
    ("sensitivity", "share"), [(1, 1.0), (1, 1 / 3), (9, 0.5), (3, 0.999999123)]
)
def test_the_noisy_max_scale_is_certified_and_as_small_as_the_bisections(
    measure: str, sensitivity: int, share: float
) -> None:
    fast = QuantileSelector(0.5, sensitivity, share, 100, measure)
    assert fast.cost <= share

    def cost(scale: float) -> float:
        return float(_noisy_max(measure, scale).map(sensitivity))

    start = sensitivity / math.sqrt(2 * share) if measure == "rho" else 2 * sensitivity / share
    slow = _bisection(cost, share, start)
    assert abs(fast.scale - slow) <= slow * 1e-9
    assert cost(fast.scale) <= share < cost(fast.scale * (1 - 1e-9))


def test_dense_bins_score_exactly_as_bin_dictionaries() -> None:
    rng = np.random.default_rng(5)  # data generation, not privacy noise
    selector = QuantileSelector(0.9, 9, 0.5, 2_000)
    dense = rng.integers(0, 50, 2_000).astype(np.int64)
    dense[rng.random(2_000) < 0.3] = 0
    sparse = {int(i): int(n) for i, n in enumerate(dense) if n}
    assert np.array_equal(selector.scores(dense), selector.scores(sparse))
    assert selector.scores(np.zeros(2_000, dtype=np.int64)).tolist() == [0] * 2_001


def test_noise_drawn_on_worker_threads_is_discrete_laplace_and_fresh() -> None:
    mech = LaplaceVector(sensitivity=1, epsilon=1.0)
    cells = 20_000
    draws = list(_pool().map(lambda _: mech.release([0] * cells), range(WORKER_DRAWS)))
    p_zero = math.tanh(1 / (2 * mech.scale))  # P(X = 0) for discrete Laplace of this scale
    # Hoeffding: P(|share of zeros - p| > t) <= 2·exp(-2·n·t²), here 1e-10 / 4 per vector, so
    # t ≈ 0.0250 (7.1 standard errors). The normal 6.11 SE used before failed with about 1e-9
    # per vector, 4e-9 per run. A scale 10% off moves p by 0.037 or more: still caught.
    tolerance = math.sqrt(math.log(2 * WORKER_DRAWS / FAILURE) / (2 * cells))
    for noisy in draws:
        assert len(noisy) == cells and all(isinstance(v, int) for v in noisy)
        assert abs(noisy.count(0) / cells - p_zero) <= tolerance
    # independent draws, not one shared sample (two equal: P < 0.47^20000 per pair)
    assert len({tuple(d) for d in draws}) == WORKER_DRAWS


def test_cells_beyond_int64_are_clamped_before_noise() -> None:
    mech = LaplaceVector(sensitivity=1, epsilon=1.0)
    noisy = mech.release([2**70, -(2**70), 5])
    assert noisy[0] > 2**62 and noisy[1] < -(2**62) and abs(noisy[2] - 5) < 100
