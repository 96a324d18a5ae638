"""Plan parsing: good plans round-trip; every bad field is an InvalidRequest naming that field."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gateway.domain.errors import InvalidRequest, UnknownField
from gateway.domain.plan import (
    Aggregate,
    ColumnRef,
    Filter,
    QueryPlan,
    parse_plan,
    parse_query_request,
)

GOOD: dict[str, Any] = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [{"column": "region", "op": "in", "values": ["north", "south"]}],
        "group_by": ["region"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        ],
    },
    "epsilon": 0.5,
}


def good() -> dict[str, Any]:
    return copy.deepcopy(GOOD)


def refusal(body: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_query_request(body)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Good plans


def test_the_design_example_parses() -> None:
    request = parse_query_request(good())
    plan = request.plan
    assert request.epsilon == 0.5
    assert request.sql is None
    assert plan.from_ == "bigmart.loyalty"
    assert plan.join == ("acme.survey",)
    assert plan.datasets == ("bigmart.loyalty", "acme.survey")
    assert plan.where == (Filter(ColumnRef("region"), "in", ("north", "south")),)
    assert plan.group_by == (ColumnRef("region"),)
    assert plan.aggregates == (
        Aggregate("count", "customers"),
        Aggregate("mean", "avg_spend", ColumnRef("spend_90d")),
    )


def test_canonical_round_trips() -> None:
    plan = parse_query_request(good()).plan
    assert plan.canonical() == GOOD["plan"]
    assert parse_plan(plan.canonical()) == plan
    assert parse_plan(parse_plan(plan.canonical()).canonical()).canonical() == plan.canonical()


def test_canonical_normalises_spellings() -> None:
    plan = parse_plan(
        {
            "from": "bigmart.loyalty",
            "join": "acme.survey",
            "where": [
                {"column": "region", "op": "=", "value": "north"},
                {"column": "channel", "op": "!=", "values": ["app"]},
                {"column": "acme.survey.segment", "op": "NOT IN", "values": ["luxury"]},
                {"column": "store_id", "op": "<>", "value": 7},
            ],
            "group_by": ["bigmart.loyalty.region"],
            "aggregates": [{"fn": "count", "column": "*"}, {"fn": "sum", "column": "visits_90d"}],
        }
    )
    assert plan.canonical() == {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [
            {"column": "region", "op": "eq", "values": ["north"]},
            {"column": "channel", "op": "ne", "values": ["app"]},
            {"column": "acme.survey.segment", "op": "not_in", "values": ["luxury"]},
            {"column": "store_id", "op": "ne", "values": [7]},
        ],
        "group_by": ["bigmart.loyalty.region"],
        "aggregates": [
            {"fn": "count", "as": "count"},
            {"fn": "sum", "as": "sum_visits_90d", "column": "visits_90d"},
        ],
    }
    assert parse_plan(plan.canonical()) == plan
    assert plan.where[2].column == ColumnRef("segment", "acme.survey")
    assert plan.group_by[0] == ColumnRef("region", "bigmart.loyalty")


def test_minimal_plan() -> None:
    plan = parse_plan({"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]})
    assert (plan.join, plan.where, plan.group_by) == ((), (), ())
    assert plan.canonical() == {
        "from": "bigmart.loyalty",
        "join": [],
        "where": [],
        "group_by": [],
        "aggregates": [{"fn": "count", "as": "count"}],
    }


def test_integer_epsilon_is_a_float() -> None:
    body = good()
    body["epsilon"] = 1
    request = parse_query_request(body)
    assert request.epsilon == 1.0 and isinstance(request.epsilon, float)


def test_plan_is_frozen() -> None:
    plan = parse_query_request(good()).plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.from_ = "acme.survey"  # type: ignore[misc]
    assert isinstance(plan, QueryPlan)


# ---------------------------------------------------------------------------------------------
# Bad plans: the message starts with the field at fault


def plan_edit(**changes: object) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["plan"].update(changes)

    return mutate


def plan_drop(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body["plan"][key]

    return mutate


def body_edit(**changes: object) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body.update(changes)

    return mutate


def body_drop(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body[key]

    return mutate


def aggs(*items: object) -> Callable[[dict[str, Any]], None]:
    return plan_edit(aggregates=list(items))


def where(*items: object) -> Callable[[dict[str, Any]], None]:
    return plan_edit(where=list(items))


A0 = "plan.aggregates[0]"
W0 = "plan.where[0]"

BAD_REQUESTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # aggregates
    ("missing aggregates", plan_drop("aggregates"), "plan.aggregates"),
    ("empty aggregates", aggs(), "plan.aggregates"),
    ("aggregates not a list", plan_edit(aggregates={"fn": "count"}), "plan.aggregates"),
    ("aggregate not an object", aggs("count"), A0),
    ("bad fn", aggs({"fn": "mode", "column": "spend_90d"}), f"{A0}.fn"),
    ("missing fn", aggs({"column": "spend_90d"}), f"{A0}.fn"),
    ("quantile without q", aggs({"fn": "quantile", "column": "spend_90d"}), f"{A0}.q"),
    ("quantile q of 1", aggs({"fn": "quantile", "column": "spend_90d", "q": 1}), f"{A0}.q"),
    ("quantile q of 0", aggs({"fn": "quantile", "column": "spend_90d", "q": 0}), f"{A0}.q"),
    ("quantile q as text", aggs({"fn": "quantile", "column": "spend_90d", "q": "0.5"}), f"{A0}.q"),
    ("median without a column", aggs({"fn": "median"}), f"{A0}.column"),
    ("histogram without a column", aggs({"fn": "histogram"}), f"{A0}.column"),
    ("count with a column", aggs({"fn": "count", "column": "spend_90d"}), f"{A0}.column"),
    ("sum without a column", aggs({"fn": "sum"}), f"{A0}.column"),
    ("mean of an empty column name", aggs({"fn": "mean", "column": " "}), f"{A0}.column"),
    ("column with two parts", aggs({"fn": "sum", "column": "loyalty.spend"}), f"{A0}.column"),
    ("column with four parts", aggs({"fn": "sum", "column": "a.b.c.d"}), f"{A0}.column"),
    ("alias with a space", aggs({"fn": "count", "as": "my count"}), f"{A0}.as"),
    ("alias empty", aggs({"fn": "count", "as": ""}), f"{A0}.as"),
    ("alias too long", aggs({"fn": "count", "as": "a" * 129}), f"{A0}.as"),
    (
        "duplicate aliases",
        aggs({"fn": "count", "as": "n"}, {"fn": "count", "as": "n"}),
        "plan.aggregates",
    ),
    ("alias equal to a group column", aggs({"fn": "count", "as": "region"}), "plan.aggregates"),
    (
        "alias hiding the suppressed flag",
        aggs({"fn": "count", "as": "suppressed"}),
        "plan.aggregates",
    ),
    # where
    ("where not a list", plan_edit(where={"column": "region"}), "plan.where"),
    ("filter not an object", where("region = north"), W0),
    ("bad op", where({"column": "region", "op": "like", "value": "n%"}), f"{W0}.op"),
    ("missing op", where({"column": "region", "value": "north"}), f"{W0}.op"),
    ("missing column", where({"op": "eq", "value": "north"}), f"{W0}.column"),
    (
        "eq with two values",
        where({"column": "region", "op": "eq", "values": ["north", "south"]}),
        f"{W0}.value",
    ),
    ("ne with no value", where({"column": "region", "op": "ne"}), f"{W0}.value"),
    ("in with no values", where({"column": "region", "op": "in", "values": []}), f"{W0}.values"),
    (
        "in with a scalar",
        where({"column": "region", "op": "in", "values": "north"}),
        f"{W0}.values",
    ),
    (
        "in with too many values",
        where({"column": "region", "op": "in", "values": ["x"] * 10_001}),
        f"{W0}.values",
    ),
    ("float filter value", where({"column": "store_id", "op": "eq", "value": 1.5}), f"{W0}.value"),
    (
        "bool filter value",
        where({"column": "store_id", "op": "in", "values": [True]}),
        f"{W0}.values",
    ),
    ("null filter value", where({"column": "store_id", "op": "eq", "value": None}), f"{W0}.value"),
    (
        "integer beyond 64 bits",
        where({"column": "store_id", "op": "in", "values": [2**63]}),
        f"{W0}.values",
    ),
    # group_by
    ("group_by not a list", plan_edit(group_by="region"), "plan.group_by"),
    ("group_by entry not a name", plan_edit(group_by=[3]), "plan.group_by[0]"),
    ("group_by repeated", plan_edit(group_by=["region", "region"]), "plan.group_by"),
    # datasets
    ("missing from", plan_drop("from"), "plan.from"),
    ("from without owner", plan_edit(**{"from": "loyalty"}), "plan.from"),
    ("from with three parts", plan_edit(**{"from": "a.b.c"}), "plan.from"),
    ("from with a quote", plan_edit(**{"from": "bigmart.loy'alty"}), "plan.from"),
    ("join listing a dataset twice", plan_edit(join=["acme.survey", "acme.survey"]), "plan.join"),
    ("join listing the from dataset", plan_edit(join=["bigmart.loyalty"]), "plan.join"),
    ("join not a list", plan_edit(join=3), "plan.join"),
    ("join entry not a dataset", plan_edit(join=["acme"]), "plan.join[0]"),
    ("plan not an object", body_edit(plan=["bigmart.loyalty"]), "plan"),
    # epsilon and body
    ("epsilon zero", body_edit(epsilon=0), "epsilon"),
    ("epsilon negative", body_edit(epsilon=-0.5), "epsilon"),
    ("epsilon NaN", body_edit(epsilon=float("nan")), "epsilon"),
    ("epsilon infinite", body_edit(epsilon=float("inf")), "epsilon"),
    ("epsilon bool", body_edit(epsilon=True), "epsilon"),
    ("epsilon string", body_edit(epsilon="0.5"), "epsilon"),
    ("epsilon null", body_edit(epsilon=None), "epsilon"),
    ("epsilon huge integer", body_edit(epsilon=10**400), "epsilon"),
    ("epsilon missing", body_drop("epsilon"), "epsilon"),
    ("plan missing", body_drop("plan"), "plan"),
    ("sql next to a plan", body_edit(sql="SELECT 1"), "plan"),
    ("epsilon next to an accuracy target", body_edit(accuracy={"abs": 50}), "epsilon"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS]
)
def test_bad_field_is_named(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    body = good()
    mutate(body)
    error = refusal(body)
    assert error.code == "invalid_request"
    assert error.message.startswith(f"{field}: ") or error.message.startswith(f"{field} ")


UNKNOWN_FIELDS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown body field", body_edit(budget=1), "body.budget"),
    ("unknown plan field", plan_edit(having=[]), "body.plan.having"),
    ("unknown aggregate field", aggs({"fn": "count", "owner": "acme"}), f"body.{A0}.owner"),
    (
        "unknown filter field",
        where({"column": "region", "op": "eq", "value": "n", "x": 1}),
        f"body.{W0}.x",
    ),
    (
        "unknown field in a nested filter",
        where({"or": [{"not": {"column": "region", "op": "eq", "value": "n", "y": 0}}]}),
        f"body.{W0}.or[0].not.y",
    ),
    (
        "unknown field next to and",
        where({"and": [{"column": "region", "op": "eq", "value": "n"}], "z": 1}),
        f"body.{W0}.z",
    ),
    (
        "unknown bucket field",
        plan_edit(group_by=[{"bucket": [], "as": "b", "other": 1}]),
        "body.plan.group_by[0].other",
    ),
    (
        "unknown bucket case field",
        plan_edit(group_by=[{"bucket": [{"when": {}, "then": "a", "w": 1}], "as": "b"}]),
        "body.plan.group_by[0].bucket[0].w",
    ),
    (
        "unknown accuracy field",
        lambda b: (b.pop("epsilon"), b.update(accuracy={"abs": 5, "seed": 1})),
        "body.accuracy.seed",
    ),
    (
        "unknown field next to a bad one",
        lambda b: b["plan"].update({"from": 3, "replay": True}),
        "body.plan.replay",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [(m, f) for _, m, f in UNKNOWN_FIELDS],
    ids=[n for n, _, _ in UNKNOWN_FIELDS],
)
def test_unknown_field_is_refused_with_its_path(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    """Any field the API does not define, at any depth, is an UnknownField (422), checked first."""
    body = good()
    mutate(body)
    error = refusal(body)
    assert isinstance(error, UnknownField)
    parent, unknown = field.rsplit(".", 1)
    assert error.code == "unknown_field"
    assert error.message.startswith(f"{parent}: unknown field (allowed: "), error.message
    assert len(unknown) < 3 or unknown not in error.message


@pytest.mark.parametrize("body", [None, [], "plan", 3])
def test_body_must_be_an_object(body: object) -> None:
    assert refusal(body).message.startswith("body: ")


def test_sql_takes_epsilon_or_an_accuracy_target_like_a_plan() -> None:
    # checked before the SQL text is parsed (gateway.domain.sql has its own tests)
    sql = "SELECT COUNT(*) FROM bigmart.loyalty"
    assert refusal({"sql": sql}).message.startswith("epsilon: ")
    both = {"sql": sql, "epsilon": 0.5, "accuracy": {"abs": 50}}
    assert refusal(both).message.startswith("epsilon: ")


def test_errors_do_not_echo_filter_values() -> None:
    body = good()
    body["plan"]["where"] = [{"column": "store_id", "op": "eq", "value": 1.25}]
    assert "1.25" not in refusal(body).message


# ---------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_is_stable() -> None:
    first = parse_query_request(good()).fingerprint()
    assert first == parse_query_request(good()).fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0


def test_fingerprint_ignores_spelling_and_key_order() -> None:
    body = good()
    body["plan"] = dict(reversed(list(body["plan"].items())))
    body["plan"]["where"] = [{"values": ["north", "south"], "op": "IN", "column": "region"}]
    body["plan"]["join"] = "acme.survey"
    assert parse_query_request(body).fingerprint() == parse_query_request(good()).fingerprint()
    integer_epsilon = {"plan": GOOD["plan"], "epsilon": 1}
    float_epsilon = {"plan": GOOD["plan"], "epsilon": 1.0}
    assert (
        parse_query_request(integer_epsilon).fingerprint()
        == parse_query_request(float_epsilon).fingerprint()
    )


def test_fingerprint_differs_when_epsilon_differs() -> None:
    body = good()
    body["epsilon"] = 0.25
    assert parse_query_request(body).fingerprint() != parse_query_request(good()).fingerprint()
    body["epsilon"] = 0.5000000001
    assert parse_query_request(body).fingerprint() != parse_query_request(good()).fingerprint()


def test_fingerprint_differs_when_the_plan_differs() -> None:
    base = parse_query_request(good()).fingerprint()
    changes: list[Callable[[dict[str, Any]], None]] = [
        plan_edit(group_by=[]),
        plan_edit(where=[]),
        plan_edit(join=[]),
        where({"column": "region", "op": "in", "values": ["south", "north"]}),
        aggs({"fn": "count", "as": "n"}, {"fn": "mean", "column": "spend_90d", "as": "avg_spend"}),
    ]
    seen = {base}
    for change in changes:
        body = good()
        change(body)
        seen.add(parse_query_request(body).fingerprint())
    assert len(seen) == len(changes) + 1
