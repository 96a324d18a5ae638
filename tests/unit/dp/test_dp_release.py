"""Release formatting: every public key appears, intervals are the mechanisms', small groups hide.

Noise cannot be seeded, so the assertions here hold whatever noise is drawn, or fail with a
probability stated next to them (always below 1e-9).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.domain.cells import ExactCells
from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy
from gateway.dp.release import expected_halfwidths, plan_noise, release_rows
from gateway.dp.selection import PartitionSelection, QuantileSelector

REGIONS = ["north", "south", "east", "west"]
EDGES = [0, 100, 500, 2000]
SPEND = "bigmart.loyalty.spend"


def make_policy(min_group_size: int = 0, rows: int = 1, groups: int = 1) -> Policy:
    return parse_policy(
        {
            "collaboration": "c",
            "privacy": {"max_epsilon_per_query": 10.0},
            "budgets": {"acme": {"epsilon": 100.0}},
            "datasets": {
                "bigmart.loyalty": {
                    "customer_key": "ck",
                    "max_rows_per_unit": rows,
                    "max_groups_per_unit": groups,
                    "columns": {
                        "region": {"use": "dimension", "keys": REGIONS},
                        "tier": {"use": "dimension", "type": "int", "keys": [1, 2]},
                        "store": {"use": "dimension"},
                        "spend": {
                            "use": "measure",
                            "type": "float",
                            "bounds": [0, 2000],
                            "aggregates": ["sum", "mean", "quantile", "histogram"],
                            "bins": EDGES,
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
    policy: Policy | None = None,
) -> CheckedQuery:
    plan = {"from": "bigmart.loyalty", "group_by": group_by or [], "aggregates": aggregates}
    request = parse_query_request({"plan": plan, "epsilon": epsilon})
    return check_query(request, policy or make_policy(min_group_size), "acme")


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
    assert noise.epsilon <= 0.9 + 1e-12
    assert noise.epsilon == pytest.approx(0.9, abs=1e-9)
    assert noise.delta == 0  # public keys: pure ε-DP


def test_every_public_key_is_released_in_order_even_when_empty() -> None:
    checked = checked_query([{"fn": "count", "as": "n"}], group_by=["region", "tier"])
    exact = ExactCells(scalars={("north", 1): {"count": 500}})
    rows = release_rows(checked, plan_noise(checked), exact)
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
    exact = ExactCells(scalars={(): {"sum:bigmart.loyalty.spend": 12_345_678}})
    [row] = release_rows(checked, noise, exact)
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
    # a centred sum of 10,000,000 over 1000 rows: far beyond the bounds whatever the noise
    exact = ExactCells(scalars={(): {"count": 1000, "csum:bigmart.loyalty.visits": 10_000_000}})
    [row] = release_rows(checked, plan_noise(checked), exact)
    # centre + noisy centred sum / noisy count is about 10,030 against a bound of 60: clamped
    assert row["avg"]["value"] == 60
    low, high = row["avg"]["ci95"]
    assert 0 <= low <= 60 and high == 60


def test_mean_with_no_noisy_count_is_the_midpoint_with_the_full_range() -> None:
    checked = checked_query([{"fn": "mean", "column": "visits", "as": "avg"}], epsilon=2.0)
    # an impossible exact count makes the noisy count < 1 whatever the noise (P < 1e-400)
    exact = ExactCells(scalars={(): {"count": -1_000_000, "csum:bigmart.loyalty.visits": 0}})
    [row] = release_rows(checked, plan_noise(checked), exact)
    assert row["avg"] == {"value": 30.0, "ci95": [0.0, 60.0]}


def test_mean_interval_is_within_the_bounds_and_contains_the_value() -> None:
    checked = checked_query(
        [{"fn": "mean", "column": "spend", "as": "avg"}], group_by=["region"], epsilon=0.5
    )
    # mean 1900 (in cents, 190,000 - 100,000 above the centre per customer)
    exact = ExactCells(
        scalars={(r,): {"count": 50, "csum:bigmart.loyalty.spend": 50 * 90_000} for r in REGIONS}
    )
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
    exact = ExactCells(
        scalars={
            ("north",): {"count": 1_000_000, "csum:bigmart.loyalty.visits": -25_000_000},
            ("south",): {"count": 0, "csum:bigmart.loyalty.visits": 0},
        }
    )
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
    [row] = release_rows(checked, plan_noise(checked), ExactCells())
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
    centred = noise.mechanisms["csum:bigmart.loyalty.spend"]
    entries = {e["as"]: e for e in expected_halfwidths(checked, noise)}
    assert entries["n"] == {"as": "n", "fn": "count", "ci95_halfwidth": count.halfwidth95}
    assert entries["total"]["ci95_halfwidth"] == total.halfwidth95 / 100
    widths = entries["avg"]["ci95_halfwidth_at_group_size"]
    assert list(widths) == ["100", "1000", "10000", "100000"]
    values = list(widths.values())
    assert values == sorted(values, reverse=True)
    assert all(0 < v <= 2000 for v in values)
    # the centred sum's noise in currency units, plus the worst offset from the centre (1000)
    # times the count's noise
    expected = (centred.halfwidth95 / 100 + 1000 * count.halfwidth95) / 10_000
    assert widths["10000"] == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Private group keys, histograms, quantiles, centred means


def test_private_groups_release_only_what_clears_the_noisy_threshold() -> None:
    checked = checked_query(
        [{"fn": "count", "as": "n"}, {"fn": "mean", "column": "spend", "as": "avg"}],
        group_by=["store"],
        epsilon=2.0,  # count scale 1
        min_group_size=25,
    )
    noise = plan_noise(checked)
    selection = noise.mechanisms["count"]
    assert isinstance(selection, PartitionSelection)
    assert selection.threshold >= 25 and 0 < noise.delta <= checked.delta
    exact = ExactCells(
        scalars={
            ("big",): {"count": 1000, f"csum:{SPEND}": 1000 * -50_000},  # mean 500
            ("tiny",): {"count": 1, f"csum:{SPEND}": 0},
            ("empty",): {"count": 0, f"csum:{SPEND}": 0},
        }
    )
    rows = release_rows(checked, noise, exact)
    # "tiny" shows only if its noise reaches threshold - 1 >= 24 at scale 1: P < 3e-11; "big"
    # is missing only if its noise is <= 25 - 1000
    assert [r["store"] for r in rows] == ["big"]
    [row] = rows
    assert set(row) == {"store", "n", "avg"}
    assert row["n"]["value"] >= selection.threshold
    assert abs(row["n"]["value"] - 1000) <= 40  # scale 1: P < 1e-17
    low, high = row["avg"]["ci95"]
    assert 0 <= low <= row["avg"]["value"] <= high <= 2000
    # nothing at all when no group has rows
    assert release_rows(checked, noise, ExactCells()) == []


def test_public_keys_spend_no_delta() -> None:
    checked = checked_query([{"fn": "count"}], group_by=["region"])
    assert not checked.private_groups and plan_noise(checked).delta == 0


def test_histogram_cells_list_the_policy_bins_with_intervals() -> None:
    checked = checked_query(
        [{"fn": "histogram", "column": "spend", "as": "h"}], group_by=["tier"], epsilon=2.0
    )
    noise = plan_noise(checked)
    mech = noise.mechanisms[f"histogram:{SPEND}"]
    assert mech.sensitivity == 1  # one row moves one bin of one group by one
    exact = ExactCells(bins={f"histogram:{SPEND}": {(1,): {0: 500, 2: 70}}})
    rows = release_rows(checked, noise, exact)
    assert [r["tier"] for r in rows] == [1, 2]
    half = mech.halfwidth95
    for row, truth in zip(rows, ([500, 0, 70], [0, 0, 0]), strict=True):
        cell = row["h"]
        assert cell["bins"] == [[0, 100], [100, 500], [500, 2000]]
        assert cell["ci95"] == [[v - half, v + half] for v in cell["values"]]
        # one statistic at ε 2, scale 0.5: |noise| > 40 has probability < 1e-34 per bin
        assert all(abs(v - t) <= 40 for v, t in zip(cell["values"], truth, strict=True))
    entry = {e["as"]: e for e in expected_halfwidths(checked, noise)}["h"]
    assert entry["ci95_halfwidth"] == half


def test_quantile_cells_are_grid_points_with_a_rank_error() -> None:
    checked = checked_query([{"fn": "median", "column": "spend", "as": "m"}], epsilon=1.0)
    [stat] = checked.statistics
    assert (stat.kind, stat.q, stat.sensitivity) == ("quantile", 0.5, 1)
    noise = plan_noise(checked)
    selector = noise.mechanisms[stat.key]
    assert isinstance(selector, QuantileSelector)
    assert noise.epsilon <= 1.0 + 1e-12
    # 100 rows in every bin: the median is the grid's middle point
    bins = {stat.key: {(): {b: 100 for b in range(stat.candidates)}}}
    [row] = release_rows(checked, noise, ExactCells(bins=bins))
    cell = row["m"]
    assert cell["ci95"] is None and cell["rank_error95"] == round(selector.rank_error95, 3)
    index = round(cell["value"] / stat.grid_width)
    assert cell["value"] == pytest.approx(index * stat.grid_width, abs=1e-6)
    # each grid step is 100 rows of rank; the pick's excess score is below s·ln((C+1)/1e-10)
    # with probability 1 - 1e-10, i.e. within that many ranks of the middle
    slack = selector.scale * math.log((stat.candidates + 1) / 1e-10) / selector.b
    assert abs(index - stat.candidates / 2) * 100 <= slack + 100
    entry = {e["as"]: e for e in expected_halfwidths(checked, noise)}["m"]
    assert entry == {
        "as": "m",
        "fn": "quantile",
        "rank_error95": round(selector.rank_error95, 3),
        "grid_step": stat.grid_width,
    }


def test_quantiles_of_customers_in_several_groups_cost_epsilon_in_all() -> None:
    policy = make_policy(rows=3, groups=2)
    checked = checked_query(
        [{"fn": "quantile", "column": "spend", "q": 0.25, "as": "p25"}],
        group_by=["region"],
        epsilon=0.6,
        policy=policy,
    )
    assert checked.l0 == 2
    [stat] = checked.statistics
    assert stat.sensitivity == 3 * 3  # three rows, each moving a score by max(1, 4 - 1) = 3
    assert stat.epsilon == pytest.approx(0.3)  # one selection per group, two groups each
    assert plan_noise(checked).epsilon == pytest.approx(0.6, abs=1e-9)
    assert plan_noise(checked).epsilon <= 0.6 + 1e-12


def test_the_centred_mean_halves_the_sum_noise_for_bounds_from_zero() -> None:
    checked = checked_query(
        [{"fn": "mean", "column": "spend", "as": "avg"}, {"fn": "sum", "column": "spend"}]
    )
    stats = {s.key: s for s in checked.statistics}
    centred, plain = stats[f"csum:{SPEND}"], stats[f"sum:{SPEND}"]
    assert (centred.mid, centred.sensitivity, plain.sensitivity) == (100_000, 100_000, 200_000)
    noise = plan_noise(checked)
    assert noise.mechanisms[centred.key].scale == pytest.approx(
        noise.mechanisms[plain.key].scale / 2
    )
    # the value is centre + noisy centred sum / noisy count
    exact = ExactCells(
        scalars={(): {"count": 10**9, f"csum:{SPEND}": 10**9 * -70_000, f"sum:{SPEND}": 0}}
    )
    [row] = release_rows(checked, noise, exact)
    # noise of scale 3e5 cents and 3 on a billion rows moves the mean by far under a cent
    assert row["avg"]["value"] == pytest.approx(300.0, abs=0.01)
