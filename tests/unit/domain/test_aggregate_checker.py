"""The checker over aggregate datasets, networks and side-by-side plans.

Sensitivities follow from the owners' declarations: one customer is in at most
``max_rows_per_unit`` rows and adds 1 to each row's count and at most ``per_unit_bounds`` to
each measure value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.domain.checker import CheckedQuery, check_query
from gateway.domain.errors import InvalidRequest, PolicyViolation, UnsupportedQuery
from gateway.domain.plan import parse_query_request
from gateway.domain.policy import Policy, parse_policy

POLICY_FILE = Path(__file__).resolve().parents[3] / "policies" / "acme-retail-network.yaml"
DOC: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
POLICY = parse_policy(DOC)
NET = "networks.acme.retail_network"
K = 13  # max_rows_per_unit of each retailer


def check(body: dict[str, Any], org: str = "acme", policy: Policy = POLICY) -> CheckedQuery:
    return check_query(parse_query_request({"epsilon": 0.6, **body}), policy, org)


def refused(body: dict[str, Any], org: str = "acme") -> PolicyViolation:
    with pytest.raises(PolicyViolation) as caught:
        check(body, org)
    assert f"(policy rule: {caught.value.path})" in caught.value.message
    return caught.value


def sql(text: str) -> dict[str, Any]:
    return {"sql": text}


def sensitivities(checked: CheckedQuery) -> dict[str, int]:
    return {s.key: s.sensitivity for s in checked.statistics}


def test_sums_of_counts_and_measures_take_the_declared_sensitivities() -> None:
    checked = check(
        sql(
            "SELECT region, SUM(customers) AS customers, SUM(spend) AS spend, "
            "SUM(promoters) AS promoters FROM shopco.store_weeks GROUP BY region"
        )
    )
    # count: k; float spend in cents: k * (500 * 100 + 1 cent of rounding); int promoters: k * 1
    assert sensitivities(checked) == {
        "count": K,
        "sum:shopco.store_weeks.spend": K * 50_001,
        "sum:shopco.store_weeks.promoters": K,
    }
    assert [o.fn for o in checked.outputs] == ["count", "sum", "sum"]
    assert checked.rows_per_customer == K and checked.l0 == K  # rows may fall in k groups
    assert sum(s.epsilon for s in checked.statistics) == pytest.approx(0.6)
    assert checked.aggregate and checked.network is None


def test_a_mean_is_a_centred_sum_over_the_summed_count() -> None:
    checked = check(sql("SELECT AVG(spend) AS avg_spend, COUNT(*) AS n FROM shopco.store_weeks"))
    csum = next(s for s in checked.statistics if s.kind == "csum")
    assert (csum.lo, csum.hi, csum.mid, csum.sensitivity) == (0, 50_000, 25_000, K * 25_001)
    mean = next(o for o in checked.outputs if o.fn == "mean")
    assert mean.count == "count" and mean.bounds == (0.0, 500.0)  # clamped per customer


def test_a_network_stacks_its_members_and_adds_their_row_bounds() -> None:
    checked = check(
        sql(
            "SELECT retailer, region, AVG(spend) AS s FROM acme.retail_network "
            "GROUP BY retailer, region"
        )
    )
    assert checked.rows_per_customer == 2 * K  # a customer may shop at both retailers
    assert sensitivities(checked)["count"] == 2 * K
    assert [d.id for d in checked.datasets] == ["bigmart.store_weeks", "shopco.store_weeks"]
    assert len(checked.group_keys) == 2 * 4 and checked.comparison is None
    read = {(c.dataset, c.name) for c in checked.columns_read()}
    assert ("shopco.store_weeks", "customers") in read and ("bigmart.store_weeks", "region") in read
    assert not any(c.name == "retailer" for c in checked.columns_read())  # not stored


STANDING = (
    "SELECT CASE WHEN retailer = 'shopco' THEN 'me' ELSE 'network' END AS standing, "
    "AVG(spend) AS s FROM acme.retail_network GROUP BY standing"
)


def test_a_member_may_split_its_own_rows_from_the_rest() -> None:
    checked = check(sql(STANDING), org="shopco")
    assert checked.comparison is not None
    assert (checked.comparison.of, checked.comparison.against) == ("me", "network")
    assert checked.group_keys == (("me",), ("network",))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("SELECT retailer, COUNT(*) AS n FROM acme.retail_network GROUP BY retailer", "named"),
        (STANDING.replace("'shopco'", "'bigmart'"), "named"),
        ("SELECT COUNT(*) AS n FROM acme.retail_network WHERE retailer = 'shopco'", "named"),
        (STANDING.replace("retailer = 'shopco'", "retailer IN ('shopco')"), "named"),
    ],
    ids=["by name", "another member's split", "a filter", "not an equality"],
)
def test_a_member_sees_no_other_member_by_name(text: str, path: str) -> None:
    assert refused(sql(text), org="shopco").path == f"{NET}.{path}"


def test_a_member_compares_on_shared_dimensions_only() -> None:
    by_region = STANDING.replace("AS standing,", "AS standing, region,").replace(
        "GROUP BY standing", "GROUP BY standing, region"
    )
    assert len(check(sql(by_region), org="shopco").group_keys) == 2 * 4
    by_store = by_region.replace("region", "store_id")  # a store singles out its retailer
    assert refused(sql(by_store), org="shopco").path == f"{NET}.compare_by"
    in_store = sql("SELECT COUNT(*) AS n FROM acme.retail_network WHERE store_id = 'S001'")
    assert refused(in_store, org="shopco").path == f"{NET}.compare_by"
    bucket = (
        "SELECT CASE WHEN store_id = 'S001' THEN 'a' ELSE 'b' END AS s, COUNT(*) AS n "
        "FROM acme.retail_network GROUP BY s"
    )
    assert refused(sql(bucket), org="shopco").path == f"{NET}.compare_by"
    check(sql(by_store.replace("'shopco'", "'bigmart'")))  # acme is named: anything goes


def test_a_member_may_not_query_another_members_dataset() -> None:
    error = refused(sql("SELECT COUNT(*) AS n FROM bigmart.store_weeks"), org="shopco")
    assert error.path == f"{NET}.named"
    check(sql("SELECT COUNT(*) AS n FROM shopco.store_weeks"), org="shopco")  # its own
    check(sql("SELECT COUNT(*) AS n FROM bigmart.store_weeks"), org="acme")  # named


def test_too_few_peers_behind_the_network() -> None:
    strict = {
        **DOC,
        "networks": {
            "acme.retail_network": {**DOC["networks"]["acme.retail_network"], "min_peers": 2}
        },
    }
    policy = parse_policy(strict)
    with pytest.raises(PolicyViolation) as caught:
        check(sql(STANDING), org="shopco", policy=policy)
    assert caught.value.path == f"{NET}.min_peers"
    with pytest.raises(PolicyViolation):  # the network total minus its own rows: the same
        check(sql("SELECT COUNT(*) AS n FROM acme.retail_network"), org="shopco", policy=policy)
    check(
        sql("SELECT retailer, COUNT(*) AS n FROM acme.retail_network GROUP BY retailer"),
        policy=policy,
    )


def test_aggregate_rows_are_never_joined() -> None:
    body = {
        "plan": {
            "from": "acme.nps_survey",
            "join": ["shopco.store_weeks"],
            "aggregates": [{"fn": "count"}],
        }
    }
    assert refused(body).path == "datasets.shopco.store_weeks.kind"
    body["plan"]["join"] = ["acme.retail_network"]
    assert refused(body).path == NET


def test_the_count_column_may_only_be_summed() -> None:
    error = refused(sql("SELECT AVG(customers) AS a FROM shopco.store_weeks"))
    assert error.path == "datasets.shopco.store_weeks.count_column"


def test_private_keys_and_min_group_size_work_as_for_customer_tables() -> None:
    checked = check(
        sql("SELECT store_id, SUM(spend) AS s FROM shopco.store_weeks GROUP BY store_id")
    )
    assert checked.private_groups and checked.min_group_size == 25
    assert sensitivities(checked)["count"] == K


SIDE = {
    "side_by_side": [
        {
            "from": "acme.nps_survey",
            "group_by": ["region"],
            "aggregates": [{"fn": "mean", "column": "nps_score", "as": "nps"}],
        },
        {
            "from": "acme.retail_network",
            "group_by": ["region"],
            "aggregates": [{"fn": "mean", "column": "spend", "as": "spend"}],
        },
    ],
    "on": ["region"],
}


def test_side_by_side_parts_are_checked_on_their_own_at_an_equal_share() -> None:
    checked = check({"plan": SIDE, "epsilon": 1.0})
    assert len(checked.parts) == 2 and checked.outputs == ()
    assert [p.loss for p in checked.parts] == [0.5, 0.5] and checked.loss == 1.0
    assert sensitivities(checked) == {
        "p0:count": 1,
        "p0:csum:acme.nps_survey.nps_score": 5,
        "p1:count": 2 * K,
        "p1:csum:acme.retail_network.spend": 2 * K * 25_001,
    }
    assert [g.name for g in checked.group_by] == ["region"] and len(checked.group_keys) == 4
    assert {d.id for d in checked.datasets} == {
        "acme.nps_survey",
        "bigmart.store_weeks",
        "shopco.store_weeks",
    }
    assert checked.request.plan.canonical()["on"] == ["region"]


def test_side_by_side_limits() -> None:
    private = {
        **SIDE,
        "side_by_side": [
            SIDE["side_by_side"][0],
            {**SIDE["side_by_side"][1], "group_by": ["store_id"]},
        ],
        "on": ["region"],
    }
    with pytest.raises(InvalidRequest):  # every part groups by the 'on' names
        check({"plan": private})
    with pytest.raises(UnsupportedQuery):
        accurate = parse_query_request({"plan": SIDE, "accuracy": {"abs": 5, "at_count": 99}})
        check_query(accurate, POLICY, "acme", epsilon=0.5)
    with pytest.raises(PolicyViolation):  # the cap applies to the whole query
        check({"plan": SIDE, "epsilon": 1.5})
    with pytest.raises(PolicyViolation) as caught:  # each part must pass the policy
        other = {**SIDE["side_by_side"][1], "from": "bigmart.store_weeks"}
        check({"plan": {**SIDE, "side_by_side": [SIDE["side_by_side"][0], other]}}, org="shopco")
    assert caught.value.path == f"{NET}.named"
