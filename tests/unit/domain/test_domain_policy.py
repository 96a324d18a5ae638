"""Policy validation: the demo policy parses; every rule rejects nonsense naming its path."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.domain.errors import InvalidPolicy
from gateway.domain.policy import (
    Budget,
    ColumnRule,
    Policy,
    PrivacySettings,
    parse_policy,
)

POLICY_FILE = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"
LOYALTY = "datasets.bigmart.loyalty"
SPEND = f"{LOYALTY}.columns.spend_90d"
REGION = f"{LOYALTY}.columns.region"
CAP = "privacy.max_epsilon_per_query"
MAX_ROWS = f"{LOYALTY}.max_rows_per_unit"


def demo_doc() -> dict[str, Any]:
    return yaml.safe_load(POLICY_FILE.read_text())


def rejection(doc: object) -> InvalidPolicy:
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(doc)
    return caught.value


def loyalty_columns(doc: dict[str, Any]) -> dict[str, Any]:
    cols: dict[str, Any] = doc["datasets"]["bigmart.loyalty"]["columns"]
    return cols


def set_column(name: str, rule: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        loyalty_columns(doc)[name] = rule

    return mutate


def update_column(name: str, **changes: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        loyalty_columns(doc)[name].update(changes)

    return mutate


def update_loyalty(**changes: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["datasets"]["bigmart.loyalty"].update(changes)

    return mutate


def rename_loyalty(new_id: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["datasets"][new_id] = doc["datasets"].pop("bigmart.loyalty")
        doc["joins"] = []

    return mutate


def update(section: str, **changes: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc[section].update(changes)

    return mutate


def put(key: object, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc[key] = value

    return mutate


def drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


# ---------------------------------------------------------------------------------------------
# The demo policy


def test_demo_policy_parses() -> None:
    policy = parse_policy(demo_doc())
    assert isinstance(policy, Policy)
    assert policy.collaboration == "acme-bigmart-cx"
    assert policy.privacy == PrivacySettings("laplace", 1.0, 1e-7)
    assert policy.budgets == {"acme": Budget(8.0, "month"), "bigmart": Budget(4.0, "month")}
    assert set(policy.datasets) == {"bigmart.loyalty", "acme.survey"}
    assert policy.owners == frozenset({"bigmart", "acme"})
    assert policy.rules.min_group_size == 25
    assert policy.rules.max_groups_per_query == 10_000


def test_demo_policy_columns() -> None:
    policy = parse_policy(demo_doc())
    loyalty = policy.dataset("bigmart.loyalty")
    assert loyalty is not None
    assert (loyalty.owner, loyalty.name, loyalty.customer_key) == (
        "bigmart",
        "loyalty",
        "customer_key",
    )
    assert loyalty.kind == "customer"
    assert loyalty.max_rows_per_unit == 1
    region = loyalty.column("region")
    assert region is not None
    assert region.use == "dimension"
    assert region.keys == ("north", "south", "east", "west")
    store = loyalty.column("store_id")
    assert store is not None and store.keys is None
    spend = loyalty.column("spend_90d")
    assert spend is not None
    assert (spend.use, spend.type, spend.bounds) == ("measure", "float", (0.0, 2000.0))
    assert spend.aggregates == ("sum", "mean", "quantile", "histogram")
    assert spend.bins == (0, 50, 100, 250, 500, 1000, 2000)
    assert (spend.scale, spend.magnitude) == (100, 2000.0)
    visits = loyalty.column("visits_90d")
    assert visits is not None and (visits.type, visits.scale) == ("int", 1)
    email = loyalty.column("email")
    assert email is not None and email.use == "hidden"
    assert loyalty.column("customer_key") is None
    assert loyalty.column("nope") is None
    assert policy.dataset("acme.nope") is None


def test_demo_policy_joins_are_unordered_pairs() -> None:
    policy = parse_policy(demo_doc())
    assert policy.may_join("bigmart.loyalty", "acme.survey")
    assert policy.may_join("acme.survey", "bigmart.loyalty")
    assert not policy.may_join("bigmart.loyalty", "bigmart.loyalty")


def test_demo_policy_is_the_seeded_one() -> None:
    seeded = Path(__file__).resolve().parents[3] / "gateway" / "demo" / "policy.yaml"
    assert parse_policy(yaml.safe_load(seeded.read_text())) == parse_policy(demo_doc())


def test_defaults_when_sections_are_omitted() -> None:
    policy = parse_policy(
        {
            "collaboration": "c",
            "datasets": {"o.d": {"customer_key": "ck", "columns": {"g": {"use": "dimension"}}}},
        }
    )
    assert policy.privacy == PrivacySettings()
    assert policy.budgets == {}
    assert policy.joins == frozenset()
    assert (policy.rules.min_group_size, policy.rules.max_groups_per_query) == (0, 10_000)
    ds = policy.datasets["o.d"]
    assert (ds.owner, ds.max_rows_per_unit, ds.kind) == ("o", 1, "customer")
    assert ds.columns["g"].type == "string"


def test_measure_defaults_to_float_and_negative_bounds_are_fine() -> None:
    doc = demo_doc()
    loyalty_columns(doc)["delta"] = {"use": "measure", "bounds": [-50, 20], "aggregates": ["sum"]}
    rule = parse_policy(doc).datasets["bigmart.loyalty"].columns["delta"]
    assert (rule.type, rule.bounds, rule.magnitude) == ("float", (-50.0, 20.0), 50.0)


def test_int_dimension_keys() -> None:
    doc = demo_doc()
    loyalty_columns(doc)["tier"] = {"use": "dimension", "type": "int", "keys": [1, 2, 3]}
    rule = parse_policy(doc).datasets["bigmart.loyalty"].columns["tier"]
    assert rule.keys == (1, 2, 3)


def test_policy_values_are_frozen() -> None:
    policy = parse_policy(demo_doc())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.collaboration = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.privacy.max_epsilon_per_query = 100.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Every rule rejects nonsense, naming the offending entry


BAD_DOCUMENTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # privacy
    ("negative epsilon cap", update("privacy", max_epsilon_per_query=-1.0), CAP),
    ("zero epsilon cap", update("privacy", max_epsilon_per_query=0), CAP),
    ("NaN epsilon cap", update("privacy", max_epsilon_per_query=float("nan")), CAP),
    ("infinite epsilon cap", update("privacy", max_epsilon_per_query=float("inf")), CAP),
    ("string epsilon cap", update("privacy", max_epsilon_per_query="1.0"), CAP),
    ("bool epsilon cap", update("privacy", max_epsilon_per_query=True), CAP),
    ("unknown mechanism", update("privacy", mechanism="exponential"), "privacy.mechanism"),
    ("gaussian without delta", update("privacy", mechanism="gaussian", delta=0), "privacy.delta"),
    ("rho budget under laplace", update("budgets", acme={"rho": 0.5}), "budgets.acme.rho"),
    ("epsilon and rho", update("budgets", acme={"epsilon": 1, "rho": 0.5}), "budgets.acme"),
    ("list mechanism", update("privacy", mechanism=["laplace"]), "privacy.mechanism"),
    ("negative delta", update("privacy", delta=-1e-9), "privacy.delta"),
    ("delta of one", update("privacy", delta=1.0), "privacy.delta"),
    ("delta above one", update("privacy", delta=2), "privacy.delta"),
    ("NaN delta", update("privacy", delta=float("nan")), "privacy.delta"),
    ("unknown privacy field", update("privacy", noise="gaussian"), "privacy.noise"),
    ("privacy not a mapping", put("privacy", [1.0]), "privacy"),
    # budgets
    ("negative budget", update("budgets", acme={"epsilon": -1.0}), "budgets.acme"),
    ("NaN budget", update("budgets", acme={"epsilon": float("nan")}), "budgets.acme.epsilon"),
    ("missing budget epsilon", update("budgets", acme={"period": "month"}), "budgets.acme"),
    ("huge integer budget", update("budgets", acme={"epsilon": 10**400}), "budgets.acme.epsilon"),
    ("weekly budget", update("budgets", acme={"epsilon": 1.0, "period": "week"}), "budgets.acme"),
    (
        "unknown budget field",
        update("budgets", acme={"epsilon": 1.0, "cap": 2}),
        "budgets.acme.cap",
    ),
    ("budget org not a name", update("budgets", ACME={"epsilon": 1.0}), "budgets.ACME"),
    ("budget not a mapping", update("budgets", acme=8.0), "budgets.acme"),
    # collaboration and top level
    ("collaboration with spaces", put("collaboration", "acme bigmart"), "collaboration"),
    ("collaboration missing", drop("collaboration"), "collaboration"),
    ("unknown top-level field", put("retention", 30), "retention"),
    ("non-string top-level field", put(1, "x"), "1"),
    # datasets
    ("datasets missing", drop("datasets"), "datasets"),
    ("datasets empty", put("datasets", {}), "datasets"),
    ("dataset id without owner", rename_loyalty("loyalty"), "datasets.loyalty"),
    (
        "dataset id with two dots",
        rename_loyalty("bigmart.loyalty.v2"),
        "datasets.bigmart.loyalty.v2",
    ),
    ("dataset id in capitals", rename_loyalty("BigMart.loyalty"), "datasets.BigMart.loyalty"),
    ("dataset id with empty name", rename_loyalty("bigmart."), "datasets.bigmart."),
    ("owner mismatch", update_loyalty(owner="acme"), f"{LOYALTY}.owner"),
    ("unknown dataset field", update_loyalty(retention=30), f"{LOYALTY}.retention"),
    ("unknown kind", update_loyalty(kind="event"), f"{LOYALTY}.kind"),
    (
        "customer key missing",
        drop("datasets", "bigmart.loyalty", "customer_key"),
        f"{LOYALTY}.customer_key",
    ),
    ("customer key empty", update_loyalty(customer_key=""), f"{LOYALTY}.customer_key"),
    (
        "customer key has a column rule",
        set_column("customer_key", {"use": "dimension"}),
        f"{LOYALTY}.columns.customer_key",
    ),
    ("no columns", update_loyalty(columns={}), f"{LOYALTY}.columns"),
    ("columns not a mapping", update_loyalty(columns=["region"]), f"{LOYALTY}.columns"),
    ("max_rows_per_unit zero", update_loyalty(max_rows_per_unit=0), MAX_ROWS),
    ("max_rows_per_unit negative", update_loyalty(max_rows_per_unit=-1), MAX_ROWS),
    ("max_rows_per_unit too large", update_loyalty(max_rows_per_unit=1001), MAX_ROWS),
    ("max_rows_per_unit fractional", update_loyalty(max_rows_per_unit=1.5), MAX_ROWS),
    ("max_rows_per_unit bool", update_loyalty(max_rows_per_unit=True), MAX_ROWS),
    ("max_rows_per_unit string", update_loyalty(max_rows_per_unit="1"), MAX_ROWS),
    # columns: measures
    ("bounds lo > hi", update_column("spend_90d", bounds=[2000, 0]), f"{SPEND}.bounds"),
    ("bounds of one value", update_column("spend_90d", bounds=[0]), f"{SPEND}.bounds"),
    ("bounds not a list", update_column("spend_90d", bounds="0..2000"), f"{SPEND}.bounds"),
    ("NaN bound", update_column("spend_90d", bounds=[0, float("nan")]), f"{SPEND}.bounds"),
    ("infinite bound", update_column("spend_90d", bounds=[0, float("inf")]), f"{SPEND}.bounds"),
    ("huge integer bound", update_column("spend_90d", bounds=[0, 10**400]), f"{SPEND}.bounds"),
    ("string bound", update_column("spend_90d", bounds=[0, "2000"]), f"{SPEND}.bounds"),
    (
        "measure without bounds",
        set_column("spend_90d", {"use": "measure", "aggregates": ["sum"]}),
        f"{SPEND}.bounds",
    ),
    ("keys on a measure", update_column("spend_90d", keys=[1, 2]), f"{SPEND}.keys"),
    ("measure of type string", update_column("spend_90d", type="string"), f"{SPEND}.type"),
    (
        "unknown aggregate",
        update_column("spend_90d", aggregates=["sum", "median"]),
        f"{SPEND}.aggregates",
    ),
    (
        "count as a measure aggregate",
        update_column("spend_90d", aggregates=["count"]),
        f"{SPEND}.aggregates",
    ),
    ("aggregates not a list", update_column("spend_90d", aggregates="sum"), f"{SPEND}.aggregates"),
    # columns: dimensions and uses
    ("aggregates on a dimension", update_column("region", aggregates=["sum"]), f"{REGION}.use"),
    ("bounds on a dimension", update_column("region", bounds=[0, 1]), f"{REGION}.use"),
    ("bad use", update_column("region", use="public"), f"{REGION}.use"),
    ("missing use", set_column("region", {"keys": ["north"]}), f"{REGION}.use"),
    ("empty keys", update_column("region", keys=[]), f"{REGION}.keys"),
    ("duplicate keys", update_column("region", keys=["north", "south", "north"]), f"{REGION}.keys"),
    ("keys not a list", update_column("region", keys="north"), f"{REGION}.keys"),
    ("int key on a string dimension", update_column("region", keys=["north", 2]), f"{REGION}.keys"),
    (
        "string key on an int dimension",
        update_column("region", type="int", keys=[1, "2"]),
        f"{REGION}.keys",
    ),
    (
        "bool key on an int dimension",
        update_column("region", type="int", keys=[1, True]),
        f"{REGION}.keys",
    ),
    ("key beyond 64 bits", update_column("region", type="int", keys=[1, 2**63]), f"{REGION}.keys"),
    ("unhashable key", update_column("region", keys=[["north"]]), f"{REGION}.keys"),
    ("float dimension", update_column("region", type="float"), f"{REGION}.type"),
    ("nullable not a bool", update_column("region", nullable="yes"), f"{REGION}.nullable"),
    ("unknown column field", update_column("region", public=True), f"{REGION}.public"),
    ("column rule not a mapping", set_column("region", "dimension"), REGION),
    # joins
    ("join names an unknown dataset", put("joins", [["bigmart.loyalty", "acme.crm"]]), "joins[0]"),
    ("join of a dataset with itself", put("joins", [["acme.survey", "acme.survey"]]), "joins[0]"),
    (
        "join of three datasets",
        put("joins", [["bigmart.loyalty", "acme.survey", "acme.survey"]]),
        "joins[0]",
    ),
    (
        "join not a list",
        put("joins", [["bigmart.loyalty", "acme.survey"], "acme.survey"]),
        "joins[1]",
    ),
    ("join with a nested list", put("joins", [[["bigmart.loyalty"], "acme.survey"]]), "joins[0]"),
    ("joins not a list", put("joins", {"bigmart.loyalty": "acme.survey"}), "joins"),
    # rules
    ("fractional min_group_size", update("rules", min_group_size=2.5), "rules.min_group_size"),
    ("negative min_group_size", update("rules", min_group_size=-1), "rules.min_group_size"),
    ("string min_group_size", update("rules", min_group_size="25"), "rules.min_group_size"),
    ("bool min_group_size", update("rules", min_group_size=True), "rules.min_group_size"),
    (
        "fractional max_groups",
        update("rules", max_groups_per_query=10.5),
        "rules.max_groups_per_query",
    ),
    (
        "negative max_groups",
        update("rules", max_groups_per_query=-10),
        "rules.max_groups_per_query",
    ),
    ("unknown rule", update("rules", max_rows=3), "rules.max_rows"),
]


@pytest.mark.parametrize(
    ("mutate", "path"), [(m, p) for _, m, p in BAD_DOCUMENTS], ids=[n for n, _, _ in BAD_DOCUMENTS]
)
def test_nonsense_is_rejected_with_its_path(
    mutate: Callable[[dict[str, Any]], None], path: str
) -> None:
    doc = copy.deepcopy(demo_doc())
    mutate(doc)
    error = rejection(doc)
    assert error.path == path
    assert error.code == "invalid_policy"
    assert error.message.startswith(f"{path}: ")


@pytest.mark.parametrize("doc", [None, [], "collaboration: x", 42])
def test_a_document_that_is_not_a_mapping_is_rejected(doc: object) -> None:
    assert rejection(doc).path == ""


def test_unknown_fields_are_reported_even_with_mixed_key_types() -> None:
    doc = demo_doc()
    doc["budgets"]["acme"][7] = "x"
    doc["budgets"]["acme"]["zz"] = "y"
    assert rejection(doc).path == "budgets.acme.7"


# ---------------------------------------------------------------------------------------------
# The frozen values validate themselves, without the parser


def test_privacy_settings_reject_nonsense() -> None:
    with pytest.raises(InvalidPolicy) as caught:
        PrivacySettings(max_epsilon_per_query=-0.5)
    assert caught.value.path == "privacy.max_epsilon_per_query"
    with pytest.raises(InvalidPolicy) as caught:
        PrivacySettings(delta=1.5)
    assert caught.value.path == "privacy.delta"
    with pytest.raises(InvalidPolicy) as caught:
        PrivacySettings(mechanism="exponential")
    assert caught.value.path == "privacy.mechanism"
    with pytest.raises(InvalidPolicy) as caught:
        PrivacySettings(mechanism="gaussian", delta=0.0)
    assert caught.value.path == "privacy.delta"


def test_budget_rejects_nonsense() -> None:
    for epsilon in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidPolicy):
            Budget(epsilon)
    with pytest.raises(InvalidPolicy):
        Budget(1.0, "week")  # type: ignore[arg-type]
    assert Budget(0.0).epsilon == 0.0


def test_column_rule_rejects_nonsense() -> None:
    with pytest.raises(InvalidPolicy) as caught:
        ColumnRule("m", "measure", type="float", bounds=(5.0, 1.0))
    assert caught.value.path == "bounds"
    with pytest.raises(InvalidPolicy) as caught:
        ColumnRule("m", "measure", type="int", bounds=(0.0, 1.0), keys=("a",))
    assert caught.value.path == "keys"
    with pytest.raises(InvalidPolicy) as caught:
        ColumnRule("g", "dimension", keys=("a", "a"))
    assert caught.value.path == "keys"
    with pytest.raises(InvalidPolicy) as caught:
        ColumnRule("g", "secret")  # type: ignore[arg-type]
    assert caught.value.path == "use"
