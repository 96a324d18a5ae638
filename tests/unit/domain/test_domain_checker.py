"""The checker: refusals name the policy rule; sensitivities follow from the policy alone."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.errors import InvalidRequest, PolicyViolation
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy

POLICY_FILE = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"
LOYALTY = "datasets.bigmart.loyalty"
SURVEY = "datasets.acme.survey"
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("store", "online", "app")
SEGMENTS = ("value", "mainstream", "premium", "luxury")


def demo_doc() -> dict[str, Any]:
    return yaml.safe_load(POLICY_FILE.read_text())


DEMO = parse_policy(demo_doc())


def policy_with(mutate: Callable[[dict[str, Any]], None]) -> Policy:
    doc = demo_doc()
    mutate(doc)
    return parse_policy(doc)


def check(
    plan: dict[str, Any],
    epsilon: float = 0.5,
    org: str = "acme",
    policy: Policy = DEMO,
) -> CheckedQuery:
    plan = {"from": "bigmart.loyalty", **plan}
    return check_query(parse_query_request({"plan": plan, "epsilon": epsilon}), policy, org)


def violation(plan: dict[str, Any], **kwargs: Any) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as caught:
        check(plan, **kwargs)
    assert caught.value.code == "policy_violation"
    assert f"(policy rule: {caught.value.path})" in caught.value.message
    return caught.value


COUNT = [{"fn": "count", "as": "n"}]


# ---------------------------------------------------------------------------------------------
# Refusals


def test_hidden_column_is_refused_for_every_use() -> None:
    path = f"{LOYALTY}.columns.email.use"
    assert violation({"group_by": ["email"], "aggregates": COUNT}).path == path
    where = [{"column": "email", "op": "eq", "value": "a@b.c"}]
    assert violation({"where": where, "aggregates": COUNT}).path == path
    assert violation({"aggregates": [{"fn": "mean", "column": "email"}]}).path == path
    hidden = violation({"join": ["acme.survey"], "group_by": ["phone"], "aggregates": COUNT})
    assert hidden.path == f"{SURVEY}.columns.phone.use"


def test_grouping_or_filtering_by_a_measure_is_refused() -> None:
    path = f"{LOYALTY}.columns.spend_90d.use"
    assert violation({"group_by": ["spend_90d"], "aggregates": COUNT}).path == path
    where = [{"column": "spend_90d", "op": "eq", "value": 3}]
    assert violation({"where": where, "aggregates": COUNT}).path == path


def test_aggregating_a_dimension_is_refused() -> None:
    error = violation({"aggregates": [{"fn": "sum", "column": "region"}]})
    assert error.path == f"{LOYALTY}.columns.region.use"


def test_aggregate_not_listed_by_the_policy_is_refused() -> None:
    error = violation({"aggregates": [{"fn": "sum", "column": "nps_score"}]})
    assert error.path == f"{LOYALTY}.columns.nps_score.aggregates"
    error = violation(
        {"join": ["acme.survey"], "aggregates": [{"fn": "sum", "column": "satisfaction"}]}
    )
    assert error.path == f"{SURVEY}.columns.satisfaction.aggregates"
    # the allowed one passes
    check({"aggregates": [{"fn": "mean", "column": "nps_score"}]})


def test_epsilon_above_the_cap_is_refused() -> None:
    assert violation({"aggregates": COUNT}, epsilon=1.01).path == "privacy.max_epsilon_per_query"
    assert check({"aggregates": COUNT}, epsilon=1.0).epsilon == 1.0


def test_organisation_without_budget_is_refused() -> None:
    assert violation({"aggregates": COUNT}, org="probe").path == "budgets.probe"
    assert check({"aggregates": COUNT}, org="bigmart").epsilon == 0.5


def test_join_not_allowed_by_the_policy_is_refused() -> None:
    no_joins = policy_with(lambda doc: doc.update(joins=[]))
    plan = {"join": ["acme.survey"], "aggregates": COUNT}
    assert violation(plan, policy=no_joins).path == "joins"
    assert check(plan).datasets[1].id == "acme.survey"


def test_dataset_not_in_the_policy_is_refused() -> None:
    assert violation({"from": "acme.crm", "aggregates": COUNT}).path == "datasets"
    assert violation({"join": ["acme.crm"], "aggregates": COUNT}).path == "datasets"


def test_too_many_groups_are_refused() -> None:
    def cap(limit: int) -> Policy:
        return policy_with(lambda doc: doc["rules"].update(max_groups_per_query=limit))

    plan = {"group_by": ["region", "channel"], "aggregates": COUNT}  # 4 x 3 groups
    assert violation(plan, policy=cap(11)).path == "rules.max_groups_per_query"
    assert len(check(plan, policy=cap(12)).group_keys) == 12


def test_customer_key_cannot_be_used_as_a_column() -> None:
    error = violation({"group_by": ["customer_key"], "aggregates": COUNT})
    assert error.path == f"{LOYALTY}.customer_key"
    where = [{"column": "customer_key", "op": "eq", "value": "c-1"}]
    assert violation({"where": where, "aggregates": COUNT}).path == f"{LOYALTY}.customer_key"
    # the survey's key, found through the join, names the survey's rule
    where = [{"column": "customer_id", "op": "eq", "value": "c-1"}]
    error = violation({"join": ["acme.survey"], "where": where, "aggregates": COUNT})
    assert error.path == f"{SURVEY}.customer_key"
    error = violation(
        {"join": ["acme.survey"], "group_by": ["acme.survey.customer_id"], "aggregates": COUNT}
    )
    assert error.path == f"{SURVEY}.customer_key"
    assert "c-1" not in error.message


def test_unknown_column_is_refused() -> None:
    error = violation({"group_by": ["postcode"], "aggregates": COUNT})
    assert error.path == f"{LOYALTY}.columns"


def test_grouping_by_a_dimension_without_public_keys_uses_partition_selection() -> None:
    checked = check({"group_by": ["store_id"], "aggregates": COUNT})
    assert checked.private_groups and checked.group_keys == ()
    assert checked.group_by[0].keys is None
    assert [s.key for s in checked.statistics] == ["count"]
    assert checked.delta == 1e-7
    # with a public dimension too, every group goes through selection
    both = check({"group_by": ["region", "store_id"], "aggregates": COUNT})
    assert both.private_groups and both.group_keys == ()
    # filtering on it is fine
    where = [{"column": "store_id", "op": "in", "values": ["s1", "s2"]}]
    assert check({"where": where, "aggregates": COUNT}).filters[0].column.name == "store_id"


def test_filter_values_must_match_the_dimension_type() -> None:
    where = [{"column": "region", "op": "eq", "value": 3}]
    with pytest.raises(InvalidRequest) as caught:
        check({"where": where, "aggregates": COUNT})
    assert caught.value.message.startswith("plan.where[0].values")


def both_have_region(doc: dict[str, Any]) -> None:
    doc["datasets"]["acme.survey"]["columns"]["region"] = {
        "use": "dimension",
        "keys": ["emea", "apac"],
    }


def test_ambiguous_column_must_be_qualified() -> None:
    policy = policy_with(both_have_region)
    plan = {"join": ["acme.survey"], "group_by": ["region"], "aggregates": COUNT}
    with pytest.raises(InvalidRequest) as caught:
        check(plan, policy=policy)
    assert not isinstance(caught.value, PolicyViolation)
    assert caught.value.message.startswith("plan.group_by[0]")
    assert "bigmart.loyalty.region" in caught.value.message
    assert "acme.survey.region" in caught.value.message

    loyalty = check({**plan, "group_by": ["bigmart.loyalty.region"]}, policy=policy)
    assert loyalty.group_by[0].column is not None
    assert loyalty.group_by[0].column.dataset == "bigmart.loyalty"
    assert loyalty.group_keys == tuple((r,) for r in REGIONS)
    survey = check({**plan, "group_by": ["acme.survey.region"]}, policy=policy)
    assert survey.group_by[0].column is not None
    assert survey.group_by[0].column.dataset == "acme.survey"
    assert survey.group_keys == (("emea",), ("apac",))
    # without the join the name is not ambiguous
    assert check({"group_by": ["region"], "aggregates": COUNT}, policy=policy).group_by[0].column
    # a qualifier naming a dataset outside the query is a bad request
    with pytest.raises(InvalidRequest):
        check({"group_by": ["acme.survey.segment"], "aggregates": COUNT})


# ---------------------------------------------------------------------------------------------
# Resolution and group keys


def test_resolved_columns_carry_their_rule_and_path() -> None:
    checked = check(
        {
            "join": ["acme.survey"],
            "where": [{"column": "segment", "op": "ne", "value": "luxury"}],
            "group_by": ["region"],
            "aggregates": COUNT,
        }
    )
    assert checked.group_by[0].column is not None
    assert checked.group_by[0].column.path == f"{LOYALTY}.columns.region"
    assert checked.filters[0].column.dataset == "acme.survey"
    assert (checked.filters[0].op, checked.filters[0].values) == ("ne", ("luxury",))
    assert checked.min_group_size == 25


def test_group_keys_are_the_cartesian_product_of_public_keys() -> None:
    checked = check(
        {"join": ["acme.survey"], "group_by": ["region", "segment"], "aggregates": COUNT}
    )
    assert checked.group_keys == tuple(itertools.product(REGIONS, SEGMENTS))
    three = check(
        {"join": ["acme.survey"], "group_by": ["channel", "region", "segment"], "aggregates": COUNT}
    )
    assert three.group_keys == tuple(itertools.product(CHANNELS, REGIONS, SEGMENTS))
    assert len(three.group_keys) == 48


def test_no_group_by_is_one_group() -> None:
    assert check({"aggregates": COUNT}).group_keys == ((),)


def test_filters_do_not_shrink_the_group_domain() -> None:
    where = [{"column": "region", "op": "eq", "value": "north"}]
    checked = check({"where": where, "group_by": ["region"], "aggregates": COUNT})
    assert checked.group_keys == tuple((r,) for r in REGIONS)


# ---------------------------------------------------------------------------------------------
# Sensitivity and ε


def rows_per_unit(loyalty: int, survey: int) -> Policy:
    def mutate(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"]["max_rows_per_unit"] = loyalty
        doc["datasets"]["acme.survey"]["max_rows_per_unit"] = survey

    return policy_with(mutate)


@pytest.mark.parametrize(("loyalty", "survey"), [(1, 1), (3, 1), (1, 4), (3, 2), (7, 5)])
def test_count_sensitivity_is_the_product_of_rows_per_unit(loyalty: int, survey: int) -> None:
    policy = rows_per_unit(loyalty, survey)
    joined = check({"join": ["acme.survey"], "aggregates": COUNT}, policy=policy)
    assert joined.rows_per_customer == loyalty * survey
    [count] = joined.statistics
    assert (count.key, count.kind, count.sensitivity) == ("count", "count", loyalty * survey)
    alone = check({"aggregates": COUNT}, policy=policy)
    assert alone.statistics[0].sensitivity == loyalty


@pytest.mark.parametrize(("loyalty", "survey"), [(1, 1), (2, 3)])
def test_sum_sensitivity_is_rows_times_magnitude_times_scale(loyalty: int, survey: int) -> None:
    rows = loyalty * survey
    checked = check(
        {
            "join": ["acme.survey"],
            "aggregates": [
                {"fn": "sum", "column": "spend_90d"},  # float [0, 2000]: cents
                {"fn": "sum", "column": "visits_90d"},  # int [0, 60]
                {"fn": "sum", "column": "tenure_months"},  # int [0, 240]
            ],
        },
        policy=rows_per_unit(loyalty, survey),
    )
    stats = {s.key: s for s in checked.statistics}
    spend = stats["sum:bigmart.loyalty.spend_90d"]
    assert (spend.kind, spend.scale, spend.lo, spend.hi) == ("sum", 100, 0, 200_000)
    assert spend.sensitivity == rows * 2000 * 100
    visits = stats["sum:bigmart.loyalty.visits_90d"]
    assert (visits.scale, visits.lo, visits.hi, visits.sensitivity) == (1, 0, 60, rows * 60)
    tenure = stats["sum:acme.survey.tenure_months"]
    assert tenure.sensitivity == rows * 240
    assert tenure.column is not None and tenure.column.dataset == "acme.survey"


def test_sum_sensitivity_uses_the_larger_magnitude_of_negative_bounds() -> None:
    def negative(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"]["columns"]["refunds"] = {
            "use": "measure",
            "type": "float",
            "bounds": [-500, 20],
            "aggregates": ["sum"],
        }
        doc["rules"]["min_group_size"] = 0

    checked = check(
        {"aggregates": [{"fn": "sum", "column": "refunds"}]}, policy=policy_with(negative)
    )
    [stat] = checked.statistics
    assert (stat.lo, stat.hi, stat.sensitivity) == (-50_000, 2_000, 50_000)


def test_epsilon_is_split_equally_over_statistics() -> None:
    checked = check(
        {
            "aggregates": [
                {"fn": "count"},
                {"fn": "sum", "column": "spend_90d"},
                {"fn": "mean", "column": "visits_90d"},
            ]
        },
        epsilon=0.9,
    )
    assert [s.key for s in checked.statistics] == [
        "count",
        "sum:bigmart.loyalty.spend_90d",
        "csum:bigmart.loyalty.visits_90d",  # a mean's centred sum
    ]
    assert all(s.epsilon == pytest.approx(0.3, abs=1e-15) for s in checked.statistics)
    assert sum(s.epsilon for s in checked.statistics) == pytest.approx(0.9, abs=1e-12)


def test_mean_shares_the_count_statistic() -> None:
    checked = check(
        {
            "aggregates": [
                {"fn": "count", "as": "n"},
                {"fn": "mean", "column": "spend_90d", "as": "avg"},
                {"fn": "sum", "column": "spend_90d", "as": "total"},
            ]
        },
        epsilon=0.8,
    )
    # the mean reads the count and a centred sum; the plain sum is its own statistic
    assert [s.key for s in checked.statistics] == [
        "count",
        "csum:bigmart.loyalty.spend_90d",
        "sum:bigmart.loyalty.spend_90d",
    ]
    assert [s.epsilon for s in checked.statistics] == pytest.approx([0.8 / 3] * 3)
    outputs = {o.alias: o for o in checked.outputs}
    assert (outputs["n"].count, outputs["n"].sum) == ("count", None)
    assert (outputs["avg"].count, outputs["avg"].sum) == (
        "count",
        "csum:bigmart.loyalty.spend_90d",
    )
    assert (outputs["avg"].bounds, outputs["avg"].scale) == ((0.0, 2000.0), 100)
    assert (outputs["total"].count, outputs["total"].sum) == (None, "sum:bigmart.loyalty.spend_90d")


def test_min_group_size_forces_a_count_statistic() -> None:
    plan = {"aggregates": [{"fn": "sum", "column": "visits_90d"}]}
    forced = check(plan, epsilon=0.6)
    assert [s.key for s in forced.statistics] == ["count", "sum:bigmart.loyalty.visits_90d"]
    assert [s.epsilon for s in forced.statistics] == [0.3, 0.3]
    assert [o.alias for o in forced.outputs] == ["sum_visits_90d"]

    no_minimum = policy_with(lambda doc: doc["rules"].update(min_group_size=0))
    free = check(plan, epsilon=0.6, policy=no_minimum)
    assert [s.key for s in free.statistics] == ["sum:bigmart.loyalty.visits_90d"]
    assert free.statistics[0].epsilon == 0.6
    assert free.min_group_size == 0
