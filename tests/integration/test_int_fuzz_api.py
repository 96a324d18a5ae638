"""API fuzzing: schemathesis over the app's own OpenAPI document, in-process, with valid keys.

Every operation gets a bounded, derandomised run of generated requests, half of them aimed at
the seeded demo collaboration (so the handlers behind authorisation are reached) and half with
generated path values. Each response must not be a server error, must have a documented status
and media type, and must match that response's schema (typed models for every JSON answer, the
one error shape for every refusal). A stricter check than the schema itself asks: the answers
may carry no field the document does not declare, so the document stays complete.

A tour then calls every operation once with a valid request (uploads, proposals, decisions,
queries, a replay, a zCDP policy) so that every success shape is checked against real answers,
not only the refusals most generated requests end in.
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.app import create_app
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
DEMO_PATH = {"c": DEMO, "v": 1, "org": "acme", "name": "loyalty"}
MAX_EXAMPLES = 25


class DocumentedFields:
    """Validates a JSON answer against its documented schema with no undeclared field allowed.

    The response models allow extra fields (so a figure the service adds is never dropped);
    here every model's ``additionalProperties`` is turned off, so an undocumented field fails.
    Free-form objects (policy documents, release rows, audit details) stay free-form.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.paths = document["paths"]
        self.components = copy.deepcopy(document["components"])
        for schema in self.components["schemas"].values():
            if schema.get("additionalProperties") is True and "properties" in schema:
                schema["additionalProperties"] = False
        self.validators: dict[tuple[str, str, int], Draft202012Validator] = {}
        self.checked: Counter[tuple[str, str, int]] = Counter()

    def validator(self, method: str, path: str, status: int) -> Draft202012Validator:
        key = (method.upper(), path, status)
        if key not in self.validators:
            responses = self.paths[path][method.lower()]["responses"]
            definition = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
            assert definition is not None, f"{method} {path}: status {status} is not documented"
            schema = definition["content"]["application/json"]["schema"]
            self.validators[key] = Draft202012Validator({**schema, "components": self.components})
        return self.validators[key]

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        errors = sorted(self.validator(method, path, status).iter_errors(body), key=str)
        assert not errors, f"{method} {path} {status}: {errors[0].message} at {errors[0].json_path}"
        self.checked[(method.upper(), path, status)] += 1

    def as_check(self) -> Callable[[Any, Any, Any], bool | None]:
        """The same, as a schemathesis check."""

        def every_field_documented(ctx: Any, response: Any, case: Any) -> bool | None:
            if not response.headers.get("content-type", [""])[0].startswith("application/json"):
                return None
            operation = case.operation
            self.check(operation.method, operation.path, response.status_code, response.json())
            return True

        return every_field_documented


def _checks(strict: DocumentedFields) -> list[Any]:
    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        strict.as_check(),
    ]


def _key_for(method: str, path: str, keys: dict[str, Any]) -> str:
    """The key whose role the route serves; fuzzing with it reaches past authorisation."""
    if path.startswith("/v1/orgs") or (method == "POST" and path == "/v1/collaborations"):
        return str(keys["admin"])
    if "/datasets" in path:
        return str(keys["bigmart"]["contributor"])
    if "/policy" in path or "/audit" in path:
        return str(keys["acme"]["compliance"])
    return str(keys["acme"]["analyst"])


def _fuzz(operation: Any, key: str, checks: list[Any], statuses: Counter[str]) -> int:
    """Run generated requests against one operation with ``key``; returns how many ran."""
    demo_path = {k: v for k, v in DEMO_PATH.items() if f"{{{k}}}" in operation.path}
    strategy = st.one_of(
        operation.as_strategy(path_parameters=demo_path),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=demo_path),
        operation.as_strategy(),
    )
    cases = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal cases
        cases += 1
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": f"Bearer {key}"}
        response = case.call_and_validate(checks=checks)
        statuses[f"{response.status_code // 100}xx"] += 1

    try:
        run()
    except Exception as error:  # name the operation that broke
        pytest.fail(f"{operation.method.upper()} {operation.path}: {error}")
    return cases


def test_every_operation_survives_generated_requests(
    services: Services, demo_keys: dict[str, Any]
) -> None:
    app = create_app(services=services)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    strict = DocumentedFields(app.openapi())
    results: list[Any] = list(schema.get_all_operations())
    operations = [result.ok() for result in results]
    assert len(operations) >= 20
    statuses: Counter[str] = Counter()
    cases = sum(
        _fuzz(
            operation,
            _key_for(operation.method.upper(), operation.path, demo_keys),
            _checks(strict),
            statuses,
        )
        for operation in operations
    )
    assert statuses["5xx"] == 0 and sum(strict.checked.values()) == sum(statuses.values())
    print(
        f"fuzzed {len(operations)} operations with {cases} generated requests "
        f"({', '.join(f'{n} {c}' for c, n in sorted(statuses.items()))}), every answer conforming"
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path inside a JSON value, the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for step, inner in items:
        found.append((*prefix, step))
        found.extend(_paths(inner, (*prefix, step)))
    return found


@st.composite
def _mutated(draw: st.DrawFn, example: dict[str, Any]) -> dict[str, Any]:
    """The documented example with one to three of its values replaced by arbitrary JSON."""
    body = copy.deepcopy(example)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(body)))
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            del parent[path[-1]]
        if not _paths(body):
            break
    return body


@pytest.mark.parametrize("suffix", ["queries", "queries/explain"])
def test_plans_near_the_documented_example_never_break_the_server(
    services: Services, demo_keys: dict[str, Any], suffix: str
) -> None:
    """Generic objects stop at the first check; mutating a valid plan reaches the compiler."""
    app = create_app(services=services)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = _checks(DocumentedFields(app.openapi()))
    operation = schema["/v1/collaborations/{c}/" + suffix]["POST"]
    body_schema = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    example = body_schema["examples"][0]
    key = str(demo_keys["acme"]["analyst"])

    @settings(
        max_examples=4 * MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=_mutated(example))
    def run(body: dict[str, Any]) -> None:
        case = schema.make_case(
            operation=operation,
            path_parameters={"c": DEMO},
            headers={"Authorization": f"Bearer {key}"},
            body=body,
            media_type="application/json",
        )
        case.call_and_validate(checks=checks)

    run()


PLAN = {
    "from": "bigmart.loyalty",
    "join": ["acme.survey"],
    "group_by": ["region"],
    "aggregates": [
        {"fn": "count", "as": "customers"},
        {"fn": "sum", "column": "visits_90d", "as": "visits"},
        {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        {"fn": "median", "column": "spend_90d", "as": "median_spend"},
        {"fn": "histogram", "column": "spend_90d", "as": "spend_bins"},
    ],
}


def test_every_operation_answers_its_documented_shape(
    api: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    demo_policy: dict[str, Any],
) -> None:
    """One valid call of every operation (and the variants of its answer: owner and other
    party, replay, zCDP figures), each checked against its documented schema, no extra field."""
    document = api.get("/openapi.json").json()
    strict = DocumentedFields(document)
    admin, acme, bigmart = demo_keys["admin"], demo_keys["acme"], demo_keys["bigmart"]
    toured: set[tuple[str, str]] = set()

    def call(method: str, template: str, key: str | None, **kwargs: Any) -> Any:
        path = template.replace("{c}", DEMO)
        for name, value in kwargs.pop("path", {}).items():
            path = path.replace(f"{{{name}}}", str(value))
        response = api.request(method, path, key, **kwargs)
        assert 200 <= response.status_code < 300, (method, path, response.text)
        if response.headers["content-type"].startswith("application/json"):
            strict.check(method, template, response.status_code, response.json())
        toured.add((method, template))
        return response

    def propose(edit: Callable[[dict[str, Any]], None]) -> int:
        document = copy.deepcopy(demo_policy)
        edit(document)
        proposed = call(
            "PUT",
            "/v1/collaborations/{c}/policy",
            acme["compliance"],
            content=yaml.safe_dump(document).encode(),
            headers={"Content-Type": "application/yaml"},
        )
        return int(proposed.json()["version"])

    call("GET", "/v1/health", None)
    call("GET", "/v1/me", acme["analyst"])
    call("POST", "/v1/orgs", admin, json={"id": "tour", "name": "Tour", "kind": "partner"})
    call("POST", "/v1/orgs/{org}/keys", admin, path={"org": "tour"}, json={"role": "analyst"})
    members = {"id": "tour-c", "name": "Tour", "members": ["acme", "tour"]}
    call("POST", "/v1/collaborations", admin, json=members)
    call("GET", "/v1/collaborations/{c}", acme["analyst"])
    buffer = io.BytesIO()
    pq.write_table(demo_tables.loyalty, buffer)
    call(
        "POST",
        "/v1/collaborations/{c}/datasets/{name}",
        bigmart["contributor"],
        path={"name": "loyalty"},
        content=buffer.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    for key in (acme["analyst"], bigmart["analyst"]):  # owner's and other party's view
        call("GET", "/v1/collaborations/{c}/datasets", key)
    call("GET", "/v1/collaborations/{c}/policy", acme["analyst"])
    yaml_text = call(
        "GET",
        "/v1/collaborations/{c}/policy",
        acme["analyst"],
        headers={"Accept": "application/yaml"},
    )
    assert yaml_text.headers["content-type"].startswith("application/yaml")
    call("GET", "/v1/collaborations/{c}/policy/versions", acme["analyst"])
    call("GET", "/v1/collaborations/{c}/policy/versions/{v}", acme["analyst"], path={"v": 1})
    query = {"plan": PLAN, "epsilon": 0.5}
    call("POST", "/v1/collaborations/{c}/queries/explain", acme["analyst"], json=query)
    first = call("POST", "/v1/collaborations/{c}/queries", acme["analyst"], json=query)
    replay = call("POST", "/v1/collaborations/{c}/queries", acme["analyst"], json=query)
    assert (first.json()["replay"], replay.json()["replay"]) == (False, True)
    assert replay.json()["epsilon_spent"] == 0 and isinstance(replay.json()["epsilon_spent"], int)
    private = {"plan": {**PLAN, "group_by": ["store_id"]}, "epsilon": 0.5}
    call("POST", "/v1/collaborations/{c}/queries/explain", acme["analyst"], json=private)
    for key in (acme["analyst"], acme["compliance"]):
        call("GET", "/v1/collaborations/{c}/budget", key)
        call("GET", "/v1/collaborations/{c}/budget/history", key)
    call("GET", "/v1/collaborations/{c}/audit", acme["compliance"])
    call("GET", "/v1/collaborations/{c}/audit/verify", acme["compliance"])

    decide = "/v1/collaborations/{c}/policy/versions/{v}/"
    version = propose(lambda d: d["rules"].update(min_group_size=30))
    call("POST", decide + "withdraw", acme["compliance"], path={"v": version})
    version = propose(lambda d: d["rules"].update(min_group_size=31))
    call("POST", decide + "reject", bigmart["compliance"], path={"v": version})

    def gaussian(document: dict[str, Any]) -> None:
        document["privacy"]["mechanism"] = "gaussian"
        document["budgets"]["acme"] = {"rho": 1.0, "period": "month"}

    version = propose(gaussian)
    active = call("POST", decide + "approve", bigmart["compliance"], path={"v": version})
    assert active.json()["status"] == "active"
    call("POST", "/v1/collaborations/{c}/queries/explain", acme["analyst"], json=query)
    released = call("POST", "/v1/collaborations/{c}/queries", acme["analyst"], json=query)
    assert "rho_spent" in released.json() and "rho_left" in released.json()["budget"]
    call("GET", "/v1/collaborations/{c}/budget", acme["compliance"])
    call("GET", "/v1/collaborations/{c}/budget/history", acme["compliance"])

    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }
    assert toured == documented, documented ^ toured
