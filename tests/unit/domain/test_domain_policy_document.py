"""Policy documents: the published schema agrees with the parser; errors say where and why.

The schema layer is checked as partners' tools see it (plain ``Draft202012Validator`` over
``policies/schema.json``); ``load_policy_document`` is checked as the gateway runs it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gateway.domain.errors import InvalidPolicy
from gateway.domain.policy import parse_policy
from gateway.domain.policy_document import load_policy_document, policy_schema

POLICIES = Path(__file__).resolve().parents[3] / "policies"
SCHEMA: dict[str, Any] = json.loads((POLICIES / "schema.json").read_text())
DEMO_TEXT = (POLICIES / "acme-bigmart-cx.yaml").read_text()
EXAMPLES = sorted(POLICIES.glob("*.yaml"))
LOYALTY = ("datasets", "bigmart.loyalty")
COLS = (*LOYALTY, "columns")
L = "datasets.bigmart.loyalty"
C = f"{L}.columns"
CAP = "privacy.max_epsilon_per_query"
LOCATED = re.compile(r"\(line \d+, column \d+\)$")

Mutation = Callable[[dict[str, Any]], None]


def demo_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEMO_TEXT)
    return doc


def schema_errors(doc: object) -> list[str]:
    validator = Draft202012Validator(SCHEMA)
    return [e.json_path for e in validator.iter_errors(doc)]


def refusal(text: str, media_type: str = "application/yaml") -> InvalidPolicy:
    with pytest.raises(InvalidPolicy) as caught:
        load_policy_document(text, media_type)
    return caught.value


def mutated(*mutations: Mutation) -> dict[str, Any]:
    doc = demo_doc()
    for mutate in mutations:
        mutate(doc)
    return doc


def put(*path_and_value: Any) -> Mutation:
    *path, value = path_and_value

    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)

    return mutate


def drop(*path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for one in mutations:
            one(doc)

    return mutate


def rename_loyalty(new_id: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["datasets"][new_id] = doc["datasets"].pop("bigmart.loyalty")
        doc["joins"] = []

    return mutate


MEASURE = {"use": "measure", "type": "int", "bounds": [0, 60], "aggregates": ["sum"]}
DIMENSION = {"use": "dimension", "keys": ["north", "south"]}
AGG_MEASURE = {"use": "measure", "per_unit_bounds": [0, 500], "aggregates": ["sum", "mean"]}

# Documents both the schema and the parser refuse, with the path load_policy_document names.
INVALID: list[tuple[str, Mutation, str]] = [
    ("collaboration not a name", put("collaboration", "ACME CX"), "collaboration"),
    ("collaboration missing", drop("collaboration"), "collaboration"),
    ("unknown section", put("extras", 1), ""),
    ("unknown mechanism", put("privacy", "mechanism", "exponential"), "privacy.mechanism"),
    ("epsilon cap zero", put("privacy", "max_epsilon_per_query", 0), CAP),
    ("epsilon cap text", put("privacy", "max_epsilon_per_query", "1"), CAP),
    ("delta one", put("privacy", "delta", 1.0), "privacy.delta"),
    ("delta negative", put("privacy", "delta", -0.1), "privacy.delta"),
    (
        "gaussian without delta",
        put("privacy", {"mechanism": "gaussian", "delta": 0}),
        "privacy.delta",
    ),
    ("unknown privacy field", put("privacy", "epsilon", 1), "privacy"),
    ("privacy not a mapping", put("privacy", "laplace"), "privacy"),
    ("negative budget", put("budgets", "acme", {"epsilon": -1}), "budgets.acme.epsilon"),
    ("budget without amount", put("budgets", "acme", {"period": "month"}), "budgets.acme"),
    ("budget with both", put("budgets", "acme", {"epsilon": 1, "rho": 1}), "budgets.acme"),
    ("rho under laplace", put("budgets", "acme", {"rho": 1.0}), "budgets.acme.rho"),
    (
        "unknown period",
        put("budgets", "acme", {"epsilon": 1, "period": "week"}),
        "budgets.acme.period",
    ),
    ("budget org not a name", put("budgets", "ACME", {"epsilon": 1}), "budgets.ACME"),
    ("no datasets", put("datasets", {}), "datasets"),
    ("dataset id without owner", rename_loyalty("loyalty"), "datasets.loyalty"),
    (
        "dataset id with two dots",
        rename_loyalty("bigmart.loyalty.v2"),
        "datasets.bigmart.loyalty.v2",
    ),
    ("unknown kind", put(*LOYALTY, "kind", "panel"), f"{L}.kind"),
    ("customer key missing", drop(*LOYALTY, "customer_key"), f"{L}.customer_key"),
    ("customer key empty", put(*LOYALTY, "customer_key", ""), f"{L}.customer_key"),
    ("rows per unit zero", put(*LOYALTY, "max_rows_per_unit", 0), f"{L}.max_rows_per_unit"),
    (
        "groups per unit 1001",
        put(*LOYALTY, "max_groups_per_unit", 1001),
        f"{L}.max_groups_per_unit",
    ),
    ("unknown dataset field", put(*LOYALTY, "retention", 30), L),
    ("no columns", put(*LOYALTY, "columns", {}), f"{L}.columns"),
    ("reserved column name", put(*COLS, "_row", {"use": "hidden"}), f"{C}._row"),
    ("unknown use", put(*COLS, "email", {"use": "secret"}), f"{C}.email.use"),
    ("use missing", put(*COLS, "email", {}), f"{C}.email.use"),
    ("unknown column field", put(*COLS, "email", {"use": "hidden", "pii": True}), f"{C}.email"),
    ("measure without bounds", put(*COLS, "v", {"use": "measure", "type": "int"}), f"{C}.v.bounds"),
    ("measure of type string", put(*COLS, "v", {**MEASURE, "type": "string"}), f"{C}.v.type"),
    ("measure with keys", put(*COLS, "v", {**MEASURE, "keys": [1, 2]}), f"{C}.v.keys"),
    (
        "unknown aggregate",
        put(*COLS, "v", {**MEASURE, "aggregates": ["median"]}),
        f"{C}.v.aggregates[0]",
    ),
    (
        "histogram without bins",
        put(*COLS, "v", {**MEASURE, "aggregates": ["histogram"]}),
        f"{C}.v.bins",
    ),
    ("one bin edge", put(*COLS, "v", {**MEASURE, "bins": [0]}), f"{C}.v.bins"),
    ("1001 bin edges", put(*COLS, "v", {**MEASURE, "bins": list(range(1001))}), f"{C}.v.bins"),
    ("bounds of one", put(*COLS, "v", {**MEASURE, "bounds": [0]}), f"{C}.v.bounds"),
    ("bounds as text", put(*COLS, "v", {**MEASURE, "bounds": ["0", "9"]}), f"{C}.v.bounds[0]"),
    ("nullable as text", put(*COLS, "v", {**MEASURE, "nullable": "yes"}), f"{C}.v.nullable"),
    ("dimension with bounds", put(*COLS, "d", {**DIMENSION, "bounds": [0, 1]}), f"{C}.d.bounds"),
    (
        "dimension with sum",
        put(*COLS, "d", {**DIMENSION, "aggregates": ["sum"]}),
        f"{C}.d.aggregates",
    ),
    ("dimension of type float", put(*COLS, "d", {**DIMENSION, "type": "float"}), f"{C}.d.type"),
    ("no keys listed", put(*COLS, "d", {**DIMENSION, "keys": []}), f"{C}.d.keys"),
    ("key repeated", put(*COLS, "d", {**DIMENSION, "keys": ["n", "n"]}), f"{C}.d.keys"),
    ("text key of an int", put(*COLS, "d", {**DIMENSION, "type": "int"}), f"{C}.d.keys[0]"),
    ("int key of a string", put(*COLS, "d", {**DIMENSION, "keys": [1, 2]}), f"{C}.d.keys[0]"),
    (
        "key beyond 64 bits",
        put(*COLS, "d", {"use": "dimension", "type": "int", "keys": [2**63]}),
        f"{C}.d.keys[0]",
    ),
    ("joins not a list", put("joins", "bigmart.loyalty"), "joins"),
    ("join with itself", put("joins", [["acme.survey", "acme.survey"]]), "joins[0]"),
    (
        "join of three",
        put("joins", [["acme.survey", "bigmart.loyalty", "acme.survey"]]),
        "joins[0]",
    ),
    ("negative group size", put("rules", "min_group_size", -1), "rules.min_group_size"),
    ("unknown rule", put("rules", "max_epsilon_per_query", 1.0), "rules"),
]

# Documents only the parser can refuse (the schema cannot compare values or keys).
SEMANTIC: list[tuple[str, Mutation, str]] = [
    ("bounds reversed", put(*COLS, "v", {**MEASURE, "bounds": [60, 0]}), f"{C}.v.bounds"),
    ("bins decreasing", put(*COLS, "v", {**MEASURE, "bins": [0, 30, 10]}), f"{C}.v.bins"),
    ("bins beyond bounds", put(*COLS, "v", {**MEASURE, "bins": [0, 61]}), f"{C}.v.bins"),
    ("owner not the prefix", put(*LOYALTY, "owner", "acme"), f"{L}.owner"),
    (
        "customer key as a column",
        put(*COLS, "customer_key", {"use": "hidden"}),
        f"{C}.customer_key",
    ),
    ("join of an unknown dataset", put("joins", [["bigmart.loyalty", "acme.surveys"]]), "joins[0]"),
]

# Documents everyone accepts.
VALID: list[tuple[str, Mutation]] = [
    ("gaussian with rho", put("privacy", "mechanism", "gaussian")),
    (
        "gaussian rho budget",
        both(put("privacy", "mechanism", "gaussian"), put("budgets", "acme", {"rho": 0.5})),
    ),
    ("budget never resets", put("budgets", "acme", {"epsilon": 1, "period": "none"})),
    ("no optional sections", both(*(drop(k) for k in ("privacy", "budgets", "joins", "rules")))),
    ("empty budgets", put("budgets", {})),
    (
        "aggregate kind without key",
        both(
            put(*LOYALTY, "kind", "aggregate"),
            drop(*LOYALTY, "customer_key"),
            put(*LOYALTY, "count_column", "customers"),
            put(*LOYALTY, "min_row_count", 10),
            put(*LOYALTY, "columns", {"region": DIMENSION, "spend": AGG_MEASURE}),
            put("joins", []),
        ),
    ),
    ("owner defaults", drop(*LOYALTY, "owner")),
    (
        "many rows and groups",
        both(put(*LOYALTY, "max_rows_per_unit", 1000), put(*LOYALTY, "max_groups_per_unit", 5)),
    ),
    ("keys null", put(*COLS, "d", {"use": "dimension", "keys": None})),
    ("bounds null on a dimension", put(*COLS, "d", {"use": "dimension", "bounds": None})),
    (
        "int dimension",
        put(*COLS, "d", {"use": "dimension", "type": "int", "keys": [-(2**63), 0, 7]}),
    ),
    ("nullable measure", put(*COLS, "v", {**MEASURE, "nullable": True})),
    (
        "histogram with bins",
        put(*COLS, "v", {**MEASURE, "aggregates": ["histogram"], "bins": [0, 10, 60]}),
    ),
    ("measure bounds as floats", put(*COLS, "v", {"use": "measure", "bounds": [-1.5, 2.5]})),
    ("hidden column keeps old rules", put(*COLS, "v", {**MEASURE, "use": "hidden"})),
    ("no joins", put("joins", [])),
    ("rules at zero", put("rules", {"min_group_size": 0, "max_groups_per_query": 0})),
]


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _objects(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def test_every_object_is_closed_and_every_field_described() -> None:
    closed = [node for node in _objects(SCHEMA) if node.get("type") == "object"]
    assert len(closed) >= 9
    for node in closed:
        assert node.get("description"), node
        if "properties" in node:
            assert node["additionalProperties"] is False, node["description"]
            for name, field in node["properties"].items():
                assert field.get("description"), name


def test_the_package_ships_the_published_schema() -> None:
    assert policy_schema() == SCHEMA


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    text = path.read_text()
    assert schema_errors(yaml.safe_load(text)) == []
    document, policy = load_policy_document(text)
    assert document == yaml.safe_load(text)
    assert policy == parse_policy(yaml.safe_load(text))


def test_the_examples_include_the_template_and_two_collaborations() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"template.yaml", "acme-bigmart-cx.yaml", "acme-dealers-benchmark.yaml"} <= names


@pytest.mark.parametrize(("mutate", "path"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_schema_and_parser_both_refuse(mutate: Mutation, path: str) -> None:
    doc = mutated(mutate)
    assert schema_errors(doc), "the schema accepts it"
    with pytest.raises(InvalidPolicy):
        parse_policy(doc)
    error = refusal(yaml.safe_dump(doc, sort_keys=False))
    assert error.path == path
    assert LOCATED.search(error.message), error.message


@pytest.mark.parametrize(
    ("mutate", "path"), [c[1:] for c in SEMANTIC], ids=[c[0] for c in SEMANTIC]
)
def test_rules_beyond_the_schema_are_refused_with_their_line(mutate: Mutation, path: str) -> None:
    doc = mutated(mutate)
    assert schema_errors(doc) == []
    with pytest.raises(InvalidPolicy) as parsed:
        parse_policy(doc)
    error = refusal(yaml.safe_dump(doc, sort_keys=False))
    assert error.path == parsed.value.path == path
    assert LOCATED.search(error.message), error.message


@pytest.mark.parametrize("mutate", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_schema_and_parser_both_accept(mutate: Mutation) -> None:
    doc = mutated(mutate)
    assert schema_errors(doc) == []
    document, policy = load_policy_document(yaml.safe_dump(doc, sort_keys=False))
    assert document == doc
    assert policy == parse_policy(doc)


def test_the_schema_allows_per_dataset_rules() -> None:
    rules = {"min_group_size": 100, "max_groups_per_query": 50, "max_epsilon_per_query": 0.5}
    doc = mutated(put(*LOYALTY, "rules", rules))
    assert schema_errors(doc) == []
    for key, bad in [("min_group_size", -1), ("max_epsilon_per_query", 0), ("cap", 1)]:
        wrong = mutated(put(*LOYALTY, "rules", {**rules, key: bad}))
        assert schema_errors(wrong)
        # an unknown key is named by the mapping that holds it, never repeated back
        expected = f"{L}.rules" if key == "cap" else f"{L}.rules.{key}"
        assert refusal(yaml.safe_dump(wrong)).path == expected


def test_per_dataset_rules_load_as_the_parser_has_them() -> None:
    doc = mutated(put(*LOYALTY, "rules", {"min_group_size": 100}))
    try:
        expected = parse_policy(doc)
    except InvalidPolicy as exc:  # a parser without per-dataset rules yet: both refuse alike
        assert refusal(yaml.safe_dump(doc)).path == exc.path
    else:
        assert load_policy_document(yaml.safe_dump(doc))[1] == expected


def test_integers_are_whole_numbers_not_floats() -> None:
    error = refusal(yaml.safe_dump(mutated(put("rules", "min_group_size", 25.0))))
    assert error.path == "rules.min_group_size"
    assert "must be an integer" in error.message


LOCATED_YAML = """\
collaboration: cx
budgets:
  acme: {epsilon: 1.0}
datasets:
  bigmart.loyalty:
    customer_key: customer_key
    columns:
      spend: {use: measure, bounds: [10, 0]}
      email:
        use: hiddn
joins: [[bigmart.loyalty, acme.survey]]
"""


def test_errors_name_the_rule_line_and_column() -> None:
    error = refusal(LOCATED_YAML)
    assert (error.path, error.message) == (
        f"{C}.email.use",
        f"{C}.email.use: must be one of ['dimension', 'measure', 'hidden'] (line 10, column 9)",
    )
    fixed = LOCATED_YAML.replace("hiddn", "hidden")
    assert refusal(fixed).message == f"{C}.spend.bounds: lo must be <= hi (line 8, column 29)"
    fixed = fixed.replace("[10, 0]", "[0, 10]")
    assert refusal(fixed).message == (
        "joins[0]: the second dataset is not one the policy describes (line 11, column 9)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            LOCATED_YAML.replace("    customer_key: customer_key\n", ""),
            f"{L}.customer_key: names the customer-key column; required (line 5, column 3)",
        ),
        (
            LOCATED_YAML.replace("  acme: {epsilon: 1.0}", "  acme: {epsilon: 1.0, cap: 2}"),
            "budgets.acme: unknown field (allowed: epsilon, period, rho) (line 3, column 24)",
        ),
        (
            LOCATED_YAML.replace("collaboration: cx", "collaboration: Cx"),
            "collaboration: must be a lower-case name of letters, digits, '_' or '-'"
            " (line 1, column 1)",
        ),
        (
            LOCATED_YAML.replace("bigmart.loyalty:", "bigmart:"),
            "datasets.bigmart: a dataset is named <owner>.<name> (lower-case letters, digits,"
            " '_' or '-') (line 5, column 3)",
        ),
        (
            LOCATED_YAML.replace("acme: {epsilon: 1.0}", "acme: {epsilon: 1e-7}"),
            "budgets.acme.epsilon: must be a number (YAML 1.1 reads 1e-7 as text: write 1.0e-7)"
            " (line 3, column 10)",
        ),
    ],
    ids=["missing field", "unknown field", "bad name", "bad dataset id", "yaml 1.1 float"],
)
def test_schema_errors_are_located(text: str, message: str) -> None:
    assert refusal(text).message == message


def test_json_errors_are_located() -> None:
    text = (
        '{\n  "collaboration": "cx",\n'
        '  "datasets": {"a.b": {"customer_key": "k", "columns": {"x": {"use": "hidden",'
        ' "oops": 1}}}}\n}\n'
    )
    error = refusal(text, "application/json")
    assert error.message == (
        "datasets.a.b.columns.x: unknown field (allowed: aggregates, bins, bounds, keys,"
        " nullable, per_unit_bounds, type, use) (line 3, column 80)"
    )


def test_json_body_reads_as_the_yaml_one() -> None:
    doc = demo_doc()
    expected = load_policy_document(DEMO_TEXT)
    for media_type in ("application/json", "application/json; charset=utf-8"):
        for text in (json.dumps(doc), json.dumps(doc, indent=2)):
            assert load_policy_document(text, media_type) == expected


def test_json_numbers_follow_json_rules() -> None:
    doc = demo_doc()
    doc["privacy"]["delta"] = 1e-7
    text = json.dumps(doc).replace("1e-07", "1e-7")
    assert load_policy_document(text, "application/json")[1].privacy.delta == 1e-7


@pytest.mark.parametrize(
    ("text", "media_type", "path", "where"),
    [
        ("collaboration: a\ncollaboration: b\n", "application/yaml", "collaboration", (1, 2)),
        (
            "budgets: {acme: {epsilon: 1, epsilon: 2}}\n",
            "application/yaml",
            "budgets.acme.epsilon",
            (1, 1),
        ),
        (
            "datasets:\n  a.b:\n    columns: {}\n  a.b:\n    columns: {}\n",
            "text/yaml",
            "datasets.a.b",
            (2, 4),
        ),
        (
            '{"collaboration": "a",\n "collaboration": "a"}',
            "application/json",
            "collaboration",
            (1, 2),
        ),
    ],
    ids=["top level", "flow mapping", "dataset", "json"],
)
def test_duplicate_keys_are_refused(
    text: str, media_type: str, path: str, where: tuple[int, int]
) -> None:
    error = refusal(text, media_type)
    assert error.path == path
    first, again = where
    assert f"duplicate key, first written at line {first}," in error.message
    assert f"(line {again}, column" in error.message


MERGED = """\
collaboration: cx
datasets:
  bigmart.loyalty:
    customer_key: id
    columns:
      spend: &money {use: measure, bounds: [0, 10], aggregates: [sum]}
      refunds:
        <<: *money
        bounds: [0, 5]
      deposits: *money
"""


def test_anchors_and_merge_keys_are_not_duplicates() -> None:
    document, policy = load_policy_document(MERGED)
    columns = policy.datasets["bigmart.loyalty"].columns
    assert columns["refunds"].bounds == (0, 5)
    assert columns["refunds"].aggregates == columns["deposits"].aggregates == ("sum",)
    assert document == yaml.safe_load(MERGED)
    error = refusal(MERGED.replace("bounds: [0, 5]", "bounds: [0, 5]\n        bounds: [0, 4]"))
    assert error.path == f"{C}.refunds.bounds"


@pytest.mark.parametrize(
    ("text", "path", "rule"),
    [
        ("collaboration: cx\n1: x\n", "1", "a key must be text"),
        ("collaboration: cx\nyes: x\n", "True", "a key must be text"),
        ("collaboration: cx\n? [a, b]\n: x\n", "", "a key must be text"),
        ("collaboration: cx\nprivacy: {delta: .nan}\n", "privacy.delta", "must be a finite number"),
        (
            "collaboration: cx\nprivacy: {delta: -.inf}\n",
            "privacy.delta",
            "must be a finite number",
        ),
        ("collaboration: 2025-13-45\n", "collaboration", "is not a valid YAML value"),
        ("collaboration: !!set {a, b}\n", "collaboration", "YAML tag"),
        ("- collaboration\n", "", "the document must be a mapping"),
        ("just a string", "", "the document must be a mapping"),
        ("collaboration: [x\n  y: :\n", "", "not valid YAML"),
        ("collaboration: !secret x\n", "", "not valid YAML"),
        ("a: &a [*a]\n", "a", "levels deep"),
    ],
)
def test_yaml_beyond_plain_data_is_refused(text: str, path: str, rule: str) -> None:
    error = refusal(text)
    assert error.path.startswith(path)
    assert rule in error.message
    assert LOCATED.search(error.message), error.message


@pytest.mark.parametrize(
    ("text", "media_type", "rule"),
    [
        ("", "application/yaml", "the document is empty"),
        ("# only a comment\n", "application/yaml", "the document is empty"),
        ("  ", "application/json", "the document is empty"),
        ('{"collaboration": ', "application/json", "not valid JSON"),
        ('{"collaboration": "cx"} {}', "application/json", "not valid JSON"),
        ("{collaboration: cx}", "application/json", "not valid JSON"),
        ('{"privacy": {"delta": NaN}}', "application/json", "must be a finite number"),
        ('{"privacy": {"delta": 1e999}}', "application/json", "must be a finite number"),
    ],
)
def test_unreadable_text_is_refused(text: str, media_type: str, rule: str) -> None:
    assert rule in refusal(text, media_type).message


def test_alias_bombs_are_refused() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    error = refusal("\n".join(lines))
    assert "more than" in error.message


def test_deep_nesting_is_refused() -> None:
    assert "nested" in refusal("a: " + "[" * 5000 + "]" * 5000).message
    assert "nested" in refusal('{"a": ' + "[" * 100 + "]" * 100 + "}", "application/json").message


@pytest.mark.parametrize(
    "text",
    [
        "collaboration: Confidential-Value-7731\ndatasets: {}\n",
        "collaboration: cx\nprivacy: {mechanism: Confidential-Value-7731}\n",
        "collaboration: cx\nprivacy: {delta: Confidential-Value-7731}\n",
        '{"collaboration": "cx", "budgets": {"acme": {"epsilon": "Confidential-Value-7731"}}}',
    ],
)
def test_messages_do_not_echo_values(text: str) -> None:
    media_type = "application/json" if text.startswith("{") else "application/yaml"
    message = refusal(text, media_type).message
    assert "Confidential" not in message
    assert len(message) < 200


def test_long_keys_are_shortened_in_messages() -> None:
    error = refusal("collaboration: cx\n" + "k" * 5000 + ": 1\n")
    assert len(error.message) < 300
