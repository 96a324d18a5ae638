"""Aggregate datasets and benchmark networks in policies: the schema and the parser agree."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gateway.domain.errors import InvalidPolicy
from gateway.domain.policy import Policy, parse_policy
from gateway.domain.policy_change import affected_owners
from gateway.domain.policy_document import load_policy_document

POLICIES = Path(__file__).resolve().parents[3] / "policies"
SCHEMA: dict[str, Any] = json.loads((POLICIES / "schema.json").read_text())
TEXT = (POLICIES / "acme-retail-network.yaml").read_text()
SHOPCO = ("datasets", "shopco.store_weeks")
COLS = (*SHOPCO, "columns")
S = "datasets.shopco.store_weeks"
NETWORK = ("networks", "acme.retail_network")
N = "networks.acme.retail_network"

Mutation = Callable[[dict[str, Any]], None]


def doc() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(TEXT)
    return document


def policy() -> Policy:
    return parse_policy(doc())


def put(*path_and_value: Any) -> Mutation:
    *path, value = path_and_value

    def mutate(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)

    return mutate


def drop(*path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def mutated(mutate: Mutation) -> dict[str, Any]:
    d = doc()
    mutate(d)
    return d


def test_the_example_parses_with_the_count_column_as_a_summable_measure() -> None:
    p = policy()
    ds = p.datasets["shopco.store_weeks"]
    assert ds.is_aggregate and ds.customer_key == "" and ds.count_column == "customers"
    assert ds.min_row_count == 10 and ds.max_rows_per_unit == 13
    count = ds.columns["customers"]
    assert (count.use, count.type, count.aggregates) == ("measure", "int", ("sum",))
    assert count.per_unit_bounds == (1.0, 1.0)
    assert ds.columns["spend"].per_unit_bounds == (0.0, 500.0)
    assert ds.columns["spend"].bounds is None and ds.columns["spend"].magnitude == 500.0
    network = p.networks["acme.retail_network"]
    assert network.members == ("bigmart", "shopco") and network.member_column == "retailer"
    assert network.sees_names("acme") and not network.sees_names("shopco")
    assert p.network_of("shopco.store_weeks") is network
    assert p.datasets_behind(["acme.retail_network", "acme.nps_survey"]) == [
        "acme.retail_network",
        "bigmart.store_weeks",
        "shopco.store_weeks",
        "acme.nps_survey",
    ]


MEASURE = {"use": "measure", "per_unit_bounds": [0, 5], "aggregates": ["sum"]}

# Documents both the schema and the parser refuse, with the path the gateway names.
INVALID: list[tuple[str, Mutation, str]] = [
    ("no count column", drop(*SHOPCO, "count_column"), f"{S}.count_column"),
    ("no minimum row count", drop(*SHOPCO, "min_row_count"), f"{S}.min_row_count"),
    ("minimum row count zero", put(*SHOPCO, "min_row_count", 0), f"{S}.min_row_count"),
    ("a customer key", put(*SHOPCO, "customer_key", "id"), f"{S}.customer_key"),
    ("groups per unit", put(*SHOPCO, "max_groups_per_unit", 2), f"{S}.max_groups_per_unit"),
    (
        "measure with bounds",
        put(*COLS, "v", {"use": "measure", "bounds": [0, 5], "aggregates": ["sum"]}),
        f"{S}.columns.v.per_unit_bounds",
    ),
    (
        "measure with a quantile",
        put(*COLS, "v", {**MEASURE, "aggregates": ["quantile"]}),
        f"{S}.columns.v.aggregates[0]",
    ),
    (
        "measure with bins",
        put(*COLS, "v", {**MEASURE, "bins": [0, 5]}),
        f"{S}.columns.v.bins",
    ),
    (
        "per-unit bounds on a customer measure",
        put("datasets", "acme.nps_survey", "columns", "v", {**MEASURE, "bounds": [0, 5]}),
        "datasets.acme.nps_survey.columns.v.per_unit_bounds",
    ),
    (
        "count column on a customer dataset",
        put("datasets", "acme.nps_survey", "count_column", "n"),
        "datasets.acme.nps_survey.count_column",
    ),
    (
        "per-unit bounds of one",
        put(*COLS, "v", {**MEASURE, "per_unit_bounds": [0]}),
        f"{S}.columns.v.per_unit_bounds",
    ),
    ("network of one", put(*NETWORK, "datasets", ["shopco.store_weeks"]), f"{N}.datasets"),
    ("network without member column", drop(*NETWORK, "member_column"), f"{N}.member_column"),
    ("network minimum peers zero", put(*NETWORK, "min_peers", 0), f"{N}.min_peers"),
    ("unknown network field", put(*NETWORK, "public", True), N),  # the key is not repeated
]

# Documents only the parser refuses.
SEMANTIC: list[tuple[str, Mutation, str]] = [
    (
        "per-unit bounds reversed",
        put(*COLS, "v", {**MEASURE, "per_unit_bounds": [5, 0]}),
        f"{S}.columns.v.per_unit_bounds",
    ),
    ("count column listed", put(*COLS, "customers", {"use": "hidden"}), f"{S}.columns.customers"),
    (
        "a join of an aggregate dataset",
        put("joins", [["shopco.store_weeks", "acme.nps_survey"]]),
        "joins[0]",
    ),
    (
        "a network member of a customer dataset",
        put(*NETWORK, "datasets", ["shopco.store_weeks", "acme.nps_survey"]),
        f"{N}.datasets[1]",
    ),
    (
        "members with different rules",
        put(*COLS, "spend", {**MEASURE, "per_unit_bounds": [0, 900]}),
        f"{N}.datasets[1]",
    ),
    ("member column is a column", put(*NETWORK, "member_column", "region"), f"{N}.member_column"),
    ("compare by a measure", put(*NETWORK, "compare_by", ["spend"]), f"{N}.compare_by[0]"),
    ("compare by an unknown column", put(*NETWORK, "compare_by", ["city"]), f"{N}.compare_by[0]"),
    (
        "network named like a dataset",
        lambda d: d["networks"].update(
            {"shopco.store_weeks": d["networks"].pop("acme.retail_network")}
        ),
        "networks.shopco.store_weeks",
    ),
]


@pytest.mark.parametrize(("mutate", "path"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_schema_and_parser_both_refuse(mutate: Mutation, path: str) -> None:
    d = mutated(mutate)
    assert list(Draft202012Validator(SCHEMA).iter_errors(d)), "the schema accepts it"
    with pytest.raises(InvalidPolicy):
        parse_policy(d)
    with pytest.raises(InvalidPolicy) as caught:
        load_policy_document(yaml.safe_dump(d, sort_keys=False))
    assert caught.value.path == path
    assert "line" in caught.value.message


@pytest.mark.parametrize(
    ("mutate", "path"), [c[1:] for c in SEMANTIC], ids=[c[0] for c in SEMANTIC]
)
def test_rules_beyond_the_schema_are_refused(mutate: Mutation, path: str) -> None:
    d = mutated(mutate)
    assert list(Draft202012Validator(SCHEMA).iter_errors(d)) == []
    with pytest.raises(InvalidPolicy) as caught:
        load_policy_document(yaml.safe_dump(d, sort_keys=False))
    assert caught.value.path == path


def test_a_network_change_needs_every_member_owner() -> None:
    before = policy()
    after = parse_policy(mutated(put(*NETWORK, "named", ["acme", "bigmart"])))
    assert affected_owners(before, after) == {"bigmart", "shopco"}
    without = doc()
    del without["networks"]
    assert affected_owners(before, parse_policy(without)) == {"bigmart", "shopco"}
    # The brand's own survey is not a member: changing it needs only the brand.
    survey = put(
        "datasets", "acme.nps_survey", "columns", "nps_score", "aggregates", ["sum", "mean"]
    )
    assert affected_owners(before, parse_policy(mutated(survey))) == {"acme"}
