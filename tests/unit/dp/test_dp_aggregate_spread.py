"""Released sums over aggregate rows have the spread their owners' declarations imply.

The demo network stacks BigMart's and ShopCo's weekly store rows: one customer is in at most
13 + 13 rows and adds 1 to each row's count, at most 500.00 to its spend (50,000 cents, plus a
cent of rounding) and at most 1 to its promoters. So, at a share ε_s of the query's ε, the
noise on ``SUM(customers)`` must have scale 26/ε_s, on ``SUM(spend)`` 26·50,001/ε_s cents and on
``SUM(promoters)`` 26/ε_s (Laplace), or σ = Δ/√(2ρ_s) under zCDP (Gaussian). The scales are
computed here from the policy's declarations, not read from the gateway.

The exact cells come from the real compiler and DuckDB over the generated tables, once; the
noise is drawn many times through the real release step, with small-group suppression off
(a suppressed cell has no value to measure). For each statistic the fraction of
draws beyond one scale (and beyond two) is compared with the noise distribution's own
probability, through a binomial Chernoff (KL) bound whose false-failure chance is below 1e-11
per comparison: 3 statistics x 3 comparisons x 2 mechanisms = 18 per suite run, so below
1.8e-10 in all (at 1e-10 each it was 1.8e-9, over the 1e-9 rule). A scale off by 10% either way
fails them: simulated, a 10% too large Laplace scale passed 0.3% of the time (it was 1.3% with
250 draws at 1e-10), a 10% too small one, or a Gaussian one either way, never in 1,500 tries.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pyarrow as pa
import pytest
import yaml

from gateway.demo.network_data import generate_network_tables
from gateway.domain.budget import epsilon_to_rho
from gateway.domain.checker import check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import parse_policy
from gateway.dp.release import plan_noise, release_rows
from gateway.engine.compiler import compile_query
from gateway.engine.runner import run_exact

pytestmark = pytest.mark.statistical

POLICY_FILE = Path(__file__).resolve().parents[3] / "policies" / "acme-retail-network.yaml"
SQL = (
    "SELECT region, week, SUM(customers) AS customers, SUM(spend) AS spend, "
    "SUM(promoters) AS promoters FROM acme.retail_network GROUP BY region, week"
)
EPSILON = 0.6
K = 26  # 13 rows at each of the two retailers
DECLARED = {  # sensitivity in integer units, from the policy's declarations
    "customers": K,
    "spend": K * (500 * 100 + 1),
    "promoters": K,
}
DRAWS = 300  # releases; 4 regions x 13 weeks each: 15,600 noise draws per statistic
FAILURE = 1e-11  # per comparison (18 per suite run)


def _kl(q: float, p: float) -> float:
    q = min(max(q, 1e-300), 1 - 1e-16)
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def binomial_bounds(p: float, n: int, failure: float = FAILURE) -> tuple[float, float]:
    """``(lo, hi)`` with ``P(p̂ < lo) + P(p̂ > hi) <= failure`` for a mean of n Bernoulli(p)."""
    target = math.log(2 / failure) / n

    def solve(far: float) -> float:  # the q between p and far where KL(q||p) = target
        near = p
        for _ in range(200):
            mid = (near + far) / 2
            near, far = (mid, far) if _kl(mid, p) < target else (near, mid)
        return (near + far) / 2

    return solve(0.0), solve(1.0)


def _tail(mechanism: str, scale: float, t: float) -> float:
    """P(|X| > t) for the integer noise at that scale (t an integer)."""
    if mechanism == "laplace":
        log_alpha = -1.0 / scale
        return 2 * math.exp((t + 1) * log_alpha) / (1 + math.exp(log_alpha))
    # Discrete Gaussian with σ in the hundreds or more: the normal tail, within 1e-6.
    return 2 * (1 - NormalDist(0, scale).cdf(t + 0.5))


@pytest.fixture(scope="module")
def stored() -> dict[str, pa.Table]:
    tables = generate_network_tables(survey_customers=0).store_weeks
    return {f"{org}.store_weeks": table for org, table in tables.items()}


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_released_sums_have_the_declared_spread(
    mechanism: str, stored: dict[str, pa.Table]
) -> None:
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    document["privacy"]["mechanism"] = mechanism
    # No suppression: the policy's min_group_size 25 would hide a cell whenever its noisy
    # count fell below 25 (counts are >= 1,842 here, but with σ = 430 that hit 1 run in 130).
    document["rules"]["min_group_size"] = 0
    policy = parse_policy(document)
    checked = check_query(
        parse_query_request({"sql": SQL, "epsilon": EPSILON}), policy, analyst_org="acme"
    )
    key = {
        "customers": "count",
        "spend": "sum:acme.retail_network.spend",
        "promoters": "sum:acme.retail_network.promoters",
    }
    assert {
        name: s.sensitivity for s in checked.statistics for name in key if key[name] == s.key
    } == DECLARED

    exact = run_exact(compile_query(checked, {}), stored)
    noise = plan_noise(checked)
    share = (
        EPSILON / 3 if mechanism == "laplace" else epsilon_to_rho(EPSILON, policy.privacy.delta) / 3
    )
    errors: dict[str, list[float]] = {name: [] for name in DECLARED}
    for _ in range(DRAWS):
        for row in release_rows(checked, noise, exact):
            group = (row["region"], row["week"])
            for name in DECLARED:
                value = row[name]["value"] * (100 if name == "spend" else 1)
                errors[name].append(round(value) - exact.scalars[group][key[name]])

    for name, sensitivity in DECLARED.items():
        if mechanism == "laplace":
            scale = sensitivity / share
        else:
            scale = sensitivity / math.sqrt(2 * share)  # ρ = Δ² / (2σ²)
        draws = errors[name]
        for multiple in (1, 2):
            t = math.floor(multiple * scale)
            p = _tail(mechanism, scale, t)
            lo, hi = binomial_bounds(p, len(draws))
            seen = sum(abs(e) > t for e in draws) / len(draws)
            assert lo <= seen <= hi, (name, multiple, seen, p, lo, hi)
        # Centred: as many draws above as below (a tenth of a scale of bias would fail).
        above = sum(e > 0 for e in draws) / len(draws)
        lo, hi = binomial_bounds(0.5 * (1 - _zero(mechanism, scale)), len(draws))
        assert lo <= above <= hi, (name, above)


def _zero(mechanism: str, scale: float) -> float:
    """P(X = 0): tiny at these scales, kept for exactness."""
    if mechanism == "laplace":
        alpha = math.exp(-1.0 / scale)
        return (1 - alpha) / (1 + alpha)
    return 1 / (scale * math.sqrt(2 * math.pi))
