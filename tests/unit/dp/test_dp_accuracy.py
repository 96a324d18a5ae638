"""Accuracy first: the smallest ε whose intervals meet the analyst's target, or a refusal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.errors import InvalidRequest, PolicyViolation
from gateway.domain.plan import Accuracy, parse_query_request
from gateway.domain.policy import parse_policy
from gateway.dp.accuracy import epsilon_for_accuracy, worst_halfwidth
from gateway.dp.release import expected_halfwidths, plan_noise

POLICY = parse_policy(
    yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml").read_text()
    )
)
CAP = POLICY.privacy.max_epsilon_per_query


def checker(aggregates: list[dict[str, Any]], group_by: list[str] | None = None) -> Any:
    plan = {"from": "bigmart.loyalty", "group_by": group_by or ["region"], "aggregates": aggregates}
    request = parse_query_request({"plan": plan, "accuracy": {"abs": 1}})

    def check(epsilon: float) -> CheckedQuery:
        return check_query(request, POLICY, "acme", epsilon=epsilon)

    return check


def mechanism_halfwidth(checked: CheckedQuery) -> float:
    """The largest stated half-width of a count or sum, from the mechanisms themselves."""
    entries = expected_halfwidths(checked, plan_noise(checked))
    return max(e["ci95_halfwidth"] for e in entries if "ci95_halfwidth" in e)


def previous_step(epsilon: float) -> float:
    return epsilon - 10.0 ** (math.floor(math.log10(epsilon)) - 3)


@pytest.mark.parametrize(
    ("aggregates", "target"),
    [
        ([{"fn": "count"}], 50),
        ([{"fn": "count"}], 7),
        ([{"fn": "count"}, {"fn": "sum", "column": "visits_90d"}], 400),
        ([{"fn": "sum", "column": "spend_90d"}], 20_000),  # currency units
        ([{"fn": "histogram", "column": "spend_90d"}], 30),
    ],
)
def test_the_smallest_sufficient_epsilon_on_a_four_digit_grid(
    aggregates: list[dict[str, Any]], target: float
) -> None:
    check = checker(aggregates)
    accuracy = Accuracy(abs=target)
    epsilon = epsilon_for_accuracy(check, accuracy, CAP)
    assert 0 < epsilon <= CAP
    assert float(f"{epsilon:.4g}") == epsilon  # four significant digits, rounded up
    # met at ε, by the formula and by the mechanisms the release will use
    assert worst_halfwidth(check(epsilon), accuracy) <= target
    assert mechanism_halfwidth(check(epsilon)) <= target
    # missed one step below on the grid
    assert worst_halfwidth(check(previous_step(epsilon)), accuracy) > target
    # the same target always gives the same ε (replays depend on it)
    assert epsilon_for_accuracy(check, accuracy, CAP) == epsilon


def test_a_higher_confidence_needs_more_epsilon() -> None:
    check = checker([{"fn": "count"}])
    at95 = epsilon_for_accuracy(check, Accuracy(abs=50), CAP)
    at99 = epsilon_for_accuracy(check, Accuracy(abs=50, confidence=0.99), CAP)
    assert at99 > at95


def test_a_relative_target_is_relative_to_the_stated_group_size() -> None:
    check = checker([{"fn": "count"}])
    relative = epsilon_for_accuracy(check, Accuracy(rel=0.05, at_count=1000), CAP)
    assert relative == epsilon_for_accuracy(check, Accuracy(abs=50), CAP)


def test_a_mean_target_holds_at_the_stated_group_size() -> None:
    check = checker([{"fn": "mean", "column": "spend_90d", "as": "avg"}])
    accuracy = Accuracy(abs=100, at_count=10_000)  # ±100 currency units at 10,000 customers
    epsilon = epsilon_for_accuracy(check, accuracy, CAP)
    checked = check(epsilon)
    [entry] = expected_halfwidths(checked, plan_noise(checked))
    assert entry["ci95_halfwidth_at_group_size"]["10000"] <= 100
    with pytest.raises(InvalidRequest) as caught:
        worst_halfwidth(checked, Accuracy(abs=100))
    assert caught.value.message.startswith("accuracy.at_count")


def test_a_relative_target_is_for_counts_only() -> None:
    check = checker([{"fn": "mean", "column": "spend_90d", "as": "avg"}])
    with pytest.raises(InvalidRequest) as caught:
        epsilon_for_accuracy(check, Accuracy(rel=0.01, at_count=10_000), CAP)
    assert caught.value.message.startswith("accuracy.rel")


def test_an_unreachable_target_is_a_policy_violation_at_the_cap() -> None:
    with pytest.raises(PolicyViolation) as caught:
        epsilon_for_accuracy(checker([{"fn": "count"}]), Accuracy(abs=0.5), CAP)
    assert caught.value.path == "privacy.max_epsilon_per_query"


def test_a_target_needs_an_output_it_can_apply_to() -> None:
    check = checker([{"fn": "median", "column": "spend_90d"}])
    with pytest.raises(InvalidRequest) as caught:
        epsilon_for_accuracy(check, Accuracy(abs=10), CAP)
    assert caught.value.message.startswith("accuracy")
