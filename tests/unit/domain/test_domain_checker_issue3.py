"""The checker for issue 3's queries: buckets, boolean filters, histograms, quantiles, private
group keys and customers in several groups. Sensitivities follow from the policy alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.domain.checker import CheckedQuery, ResolvedBool, check_query
from gateway.domain.errors import InvalidRequest, PolicyViolation
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy

POLICY_FILE = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"
LOYALTY = "datasets.bigmart.loyalty"
SPEND = "bigmart.loyalty.spend_90d"
COUNT = [{"fn": "count", "as": "n"}]


def policy_with(mutate: Callable[[dict[str, Any]], None] | None = None) -> Policy:
    doc = yaml.safe_load(POLICY_FILE.read_text())
    if mutate is not None:
        mutate(doc)
    return parse_policy(doc)


DEMO = policy_with()


def check(plan: dict[str, Any], epsilon: float = 0.5, policy: Policy = DEMO) -> CheckedQuery:
    plan = {"from": "bigmart.loyalty", **plan}
    return check_query(parse_query_request({"plan": plan, "epsilon": epsilon}), policy, "acme")


BUCKET = {
    "bucket": [{"when": {"column": "store_id", "op": "eq", "value": "S001"}, "then": "S001"}],
    "else": "rest of network",
    "as": "network",
}


def test_bucket_labels_are_the_public_keys_of_the_group() -> None:
    checked = check({"group_by": [BUCKET, "region"], "aggregates": COUNT})
    assert not checked.private_groups
    assert [g.name for g in checked.group_by] == ["network", "region"]
    assert checked.group_keys[:2] == (("S001", "north"), ("S001", "south"))
    assert len(checked.group_keys) == 8
    # a bucket over a private dimension reads it, though its keys never show
    assert {c.name for c in checked.columns_read()} == {"store_id", "region"}


def test_a_bucket_condition_is_checked_like_a_filter() -> None:
    hidden = {**BUCKET, "bucket": [{"when": {"column": "email", "op": "eq", "value": "x"},
                                     "then": "x"}]}  # fmt: skip
    with pytest.raises(PolicyViolation) as caught:
        check({"group_by": [hidden], "aggregates": COUNT})
    assert caught.value.path == f"{LOYALTY}.columns.email.use"
    measure = {**BUCKET, "bucket": [{"when": {"column": "spend_90d", "op": "eq", "value": 3},
                                      "then": "x"}]}  # fmt: skip
    with pytest.raises(PolicyViolation) as caught:
        check({"group_by": [measure], "aggregates": COUNT})
    assert caught.value.path == f"{LOYALTY}.columns.spend_90d.use"


def test_boolean_filters_resolve_every_column_they_name() -> None:
    where = [
        {
            "or": [
                {"column": "region", "op": "between", "values": ["east", "north"]},
                {"not": {"column": "channel", "op": "in", "values": ["app"]}},
            ]
        }
    ]
    checked = check({"where": where, "aggregates": COUNT})
    [predicate] = checked.filters
    assert isinstance(predicate, ResolvedBool) and predicate.op == "or"
    assert {c.name for c in checked.columns_read()} == {"region", "channel"}
    with pytest.raises(PolicyViolation):
        check({"where": [{"not": {"column": "email", "op": "eq", "value": "x"}}],
               "aggregates": COUNT})  # fmt: skip
    with pytest.raises(InvalidRequest):  # an int for a string dimension, deep inside
        check({"where": [{"or": [{"column": "region", "op": "eq", "value": 3}]}],
               "aggregates": COUNT})  # fmt: skip


def test_histograms_use_the_policy_bins_and_count_rows() -> None:
    checked = check({"aggregates": [{"fn": "histogram", "column": "spend_90d", "as": "h"}]})
    stats = {s.key: s for s in checked.statistics}
    hist = stats[f"histogram:{SPEND}"]
    assert hist.edges == (0, 50, 100, 250, 500, 1000, 2000)
    assert hist.sensitivity == 1  # one row moves one bin by one
    with pytest.raises(PolicyViolation) as caught:
        check({"aggregates": [{"fn": "histogram", "column": "visits_90d"}]})
    assert caught.value.path == f"{LOYALTY}.columns.visits_90d.aggregates"


@pytest.mark.parametrize(("q", "sensitivity"), [(0.5, 1), (0.9, 9), (0.25, 3), (0.01, 99)])
def test_quantile_sensitivity_is_the_larger_part_of_q(q: float, sensitivity: int) -> None:
    checked = check({"aggregates": [{"fn": "quantile", "column": "spend_90d", "q": q}]})
    stat = next(s for s in checked.statistics if s.kind == "quantile")
    assert stat.sensitivity == sensitivity  # q = a/b: a row moves a score by max(a, b - a)
    assert stat.candidates >= 1024
    # whole fixed-point steps that cover the bounds [0, 2000] with the last one
    assert (stat.candidates - 1) * stat.grid_width < 2000 <= stat.candidates * stat.grid_width
    with pytest.raises(PolicyViolation) as caught:
        check({"aggregates": [{"fn": "median", "column": "visits_90d"}]})
    assert caught.value.path == f"{LOYALTY}.columns.visits_90d.aggregates"


def test_more_groups_mean_a_coarser_quantile_grid() -> None:
    one = check({"aggregates": [{"fn": "median", "column": "spend_90d"}]})
    many = check({"group_by": ["region", "channel"],
                  "aggregates": [{"fn": "median", "column": "spend_90d"}]})  # fmt: skip
    [a], [b] = ([s for s in c.statistics if s.kind == "quantile"] for c in (one, many))
    assert b.candidates <= a.candidates


def test_private_groups_are_not_limited_by_the_public_group_count() -> None:
    policy = policy_with(lambda doc: doc["rules"].update(max_groups_per_query=2))
    with pytest.raises(PolicyViolation) as caught:
        check({"group_by": ["region"], "aggregates": COUNT}, policy=policy)
    assert caught.value.path == "rules.max_groups_per_query"
    checked = check({"group_by": ["store_id"], "aggregates": COUNT}, policy=policy)
    assert checked.private_groups


@pytest.mark.parametrize(("rows", "groups", "l0"), [(1, 1, 1), (3, 1, 1), (3, 2, 2), (2, 5, 2)])
def test_customers_in_several_groups(rows: int, groups: int, l0: int) -> None:
    def several(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"].update(
            max_rows_per_unit=rows, max_groups_per_unit=groups
        )

    policy = policy_with(several)
    checked = check(
        {
            "group_by": ["region"],
            "aggregates": [
                {"fn": "count"},
                {"fn": "mean", "column": "spend_90d"},
                {"fn": "median", "column": "spend_90d"},
            ],
        },
        epsilon=0.9,
        policy=policy,
    )
    assert (checked.rows_per_customer, checked.groups_per_customer) == (rows, groups)
    assert checked.l0 == l0  # most groups one customer touches
    stats = {s.kind: s for s in checked.statistics}
    # L1 over all groups: every row counts once, wherever it lands
    assert stats["count"].sensitivity == rows
    assert stats["csum"].sensitivity == rows * 100_000
    # quantiles are selected per group: each selection gets the share over l0
    assert stats["quantile"].epsilon == pytest.approx(0.3 / l0)
    assert stats["quantile"].sensitivity == rows
    # without groups a customer touches one
    ungrouped = check({"aggregates": COUNT}, policy=policy)
    assert ungrouped.l0 == 1


def test_joined_datasets_bound_groups_by_the_tightest_dataset() -> None:
    def several(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"].update(max_rows_per_unit=2, max_groups_per_unit=2)
        doc["datasets"]["acme.survey"].update(max_rows_per_unit=3, max_groups_per_unit=1)

    checked = check(
        {"join": ["acme.survey"], "group_by": ["segment"], "aggregates": COUNT},
        policy=policy_with(several),
    )
    assert checked.rows_per_customer == 6 and checked.groups_per_customer == 1
