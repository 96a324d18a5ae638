"""Release formatting: every public key appears, intervals are the mechanisms', small groups hide.

Noise cannot be seeded, so the assertions here hold whatever noise is drawn, or fail with a
probability stated next to them (always below 1e-9).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy
from gateway.dp.release import expected_halfwidths, plan_noise, release_rows

REGIONS = ["north", "south", "east", "west"]


def make_policy(min_group_size: int = 0) -> Policy:
    return parse_policy(
        {
            "collaboration": "c",
            "privacy": {"max_epsilon_per_query": 10.0},
            "budgets": {"acme": {"epsilon": 100.0}},
            "datasets": {
                "bigmart.loyalty": {
                    "customer_key": "ck",
                    "columns": {
                        "region": {"use": "dimension", "keys": REGIONS},
                        "tier": {"use": "dimension", "type": "int", "keys": [1, 2]},
                        "spend": {
                            "use": "measure",
                            "type": "float",
                            "bounds": [0, 2000],
                            "aggregates": ["sum", "mean"],
                        },
                        "visits": {
                            "use": "measure",
                            "type": "int",
                            "bounds": [0, 60],
                            "aggregates": ["sum", "mean"],
                        },
                    },
                }
            },
            "rules": {"min_group_size": min_group_size},
        }
    )


def checked_query(
    aggregates: list[dict[str, Any]],
    group_by: list[str] | None = None,
    epsilon: float = 1.0,
    min_group_size: int = 0,
) -> CheckedQuery:
    plan = {"from": "bigmart.loyalty", "group_by": group_by or [], "aggregates": aggregates}
    request = parse_query_request({"plan": plan, "epsilon": epsilon})
    return check_query(request, make_policy(min_group_size), "acme")


def test_plan_noise_builds_one_mechanism_per_statistic_and_costs_epsilon() -> None:
    checked = checked_query(
        [{"fn": "count"}, {"fn": "sum", "column": "spend"}, {"fn": "mean", "column": "visits"}],
        epsilon=0.9,
    )
    noise = plan_noise(checked)
    assert set(noise.mechanisms) == {s.key for s in checked.statistics}
    for stat in checked.statistics:
        mech = noise.mechanisms[stat.key]
        assert mech.sensitivity == stat.sensitivity
        assert mech.epsilon == stat.epsilon
    assert noise.cost <= 0.9 + 1e-12
    assert noise.cost == pytest.approx(0.9, abs=1e-9)


def test_every_public_key_is_released_in_order_even_when_empty() -> None:
    checked = checked_query([{"fn": "count", "as": "n"}], group_by=["region", "tier"])
    rows = release_rows(checked, plan_noise(checked), {("north", 1): {"count": 500}})
    assert [(r["region"], r["tier"]) for r in rows] == [(r, t) for r in REGIONS for t in (1, 2)]
    half = plan_noise(checked).mechanisms["count"].halfwidth95
    for row in rows:
        cell = row["n"]
        assert set(row) == {"region", "tier", "n"}
        assert type(cell["value"]) is int
        assert cell["ci95"] == [cell["value"] - half, cell["value"] + half]
    # scale 1: |noise| > 100 has probability < 1e-43 per cell
    assert rows[0]["n"]["value"] == pytest.approx(500, abs=100)
    assert all(abs(r["n"]["value"]) <= 100 for r in rows[1:])


def test_sum_of_a_float_measure_is_in_currency_units() -> None:
    checked = checked_query([{"fn": "sum", "column": "spend", "as": "total"}], epsilon=2.0)
    noise = plan_noise(checked)
    [row] = release_rows(checked, noise, {(): {"sum:bigmart.loyalty.spend": 12_345_678}})
    half = noise.mechanisms["sum:bigmart.loyalty.spend"].halfwidth95 / 100
    value = row["total"]["value"]
    low, high = row["total"]["ci95"]
    assert low == pytest.approx(value - half, abs=1e-6)
    assert high == pytest.approx(value + half, abs=1e-6)
    assert round(value * 100) == pytest.approx(value * 100, abs=1e-6)  # whole cents
    # scale 100,000 cents: |noise| > 3,000,000 cents has probability < e^-30 < 1e-13
    assert value == pytest.approx(123_456.78, abs=30_000)


def test_mean_is_clamped_to_the_bounds() -> None:
    checked = checked_query([{"fn": "mean", "column": "visits", "as": "avg"}], epsilon=2.0)
    exact = {(): {"count": 1000, "sum:bigmart.loyalty.visits": 10_000_000}}
    [row] = release_rows(checked, plan_noise(checked), exact)
    # noisy sum / noisy count is about 10,000 against a bound of 60: clamped whatever the noise
    assert row["avg"]["value"] == 60
    low, high = row["avg"]["ci95"]
    assert 0 <= low <= 60 and high == 60


def test_mean_with_no_noisy_count_is_the_midpoint_with_the_full_range() -> None:
    checked = checked_query([{"fn": "mean", "column": "visits", "as": "avg"}], epsilon=2.0)
    # an impossible exact count makes the noisy count < 1 whatever the noise (P < 1e-400)
    exact = {(): {"count": -1_000_000, "sum:bigmart.loyalty.visits": 0}}
    [row] = release_rows(checked, plan_noise(checked), exact)
    assert row["avg"] == {"value": 30.0, "ci95": [0.0, 60.0]}


def test_mean_interval_is_within_the_bounds_and_contains_the_value() -> None:
    checked = checked_query(
        [{"fn": "mean", "column": "spend", "as": "avg"}], group_by=["region"], epsilon=0.5
    )
    exact = {(r,): {"count": 50, "sum:bigmart.loyalty.spend": 50 * 190_000} for r in REGIONS}
    for row in release_rows(checked, plan_noise(checked), exact):
        low, high = row["avg"]["ci95"]
        assert 0 <= low <= row["avg"]["value"] <= high <= 2000


def test_small_groups_are_flagged_and_withheld() -> None:
    checked = checked_query(
        [{"fn": "count", "as": "n"}, {"fn": "mean", "column": "visits", "as": "avg"}],
        group_by=["region"],
        epsilon=2.0,  # count scale 1
        min_group_size=25,
    )
    exact = {
        ("north",): {"count": 1_000_000, "sum:bigmart.loyalty.visits": 5_000_000},
        ("south",): {"count": 0, "sum:bigmart.loyalty.visits": 0},
    }
    rows = release_rows(checked, plan_noise(checked), exact)
    by_region = {r["region"]: r for r in rows}
    assert "suppressed" not in by_region["north"]
    assert by_region["north"]["n"]["value"] > 25
    # empty groups: a noisy count >= 25 needs noise >= 25 at scale 1, probability < 2e-11 each
    for region in ("south", "east", "west"):
        assert by_region[region] == {"region": region, "suppressed": True, "n": None, "avg": None}


def test_min_group_size_applies_even_without_a_count_output() -> None:
    checked = checked_query(
        [{"fn": "sum", "column": "visits", "as": "total"}], epsilon=4.0, min_group_size=25
    )
    [row] = release_rows(checked, plan_noise(checked), {})
    # count scale 0.5: noise >= 25 has probability < e^-50
    assert row == {"suppressed": True, "total": None}


def test_expected_halfwidths_spend_nothing_and_match_the_mechanisms() -> None:
    checked = checked_query(
        [
            {"fn": "count", "as": "n"},
            {"fn": "sum", "column": "spend", "as": "total"},
            {"fn": "mean", "column": "spend", "as": "avg"},
        ],
        epsilon=1.0,
    )
    noise = plan_noise(checked)
    count = noise.mechanisms["count"]
    total = noise.mechanisms["sum:bigmart.loyalty.spend"]
    entries = {e["as"]: e for e in expected_halfwidths(checked, noise)}
    assert entries["n"] == {"as": "n", "fn": "count", "ci95_halfwidth": count.halfwidth95}
    assert entries["total"]["ci95_halfwidth"] == total.halfwidth95 / 100
    widths = entries["avg"]["ci95_halfwidth_at_group_size"]
    assert list(widths) == ["100", "1000", "10000", "100000"]
    values = list(widths.values())
    assert values == sorted(values, reverse=True)
    assert all(0 < v <= 2000 for v in values)
    expected = (total.halfwidth95 / 100 + 2000 * count.halfwidth95) / 10_000
    assert widths["10000"] == pytest.approx(expected, abs=1e-6)
