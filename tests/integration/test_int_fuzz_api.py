"""API fuzzing: schemathesis over the app's own OpenAPI document, in-process, with valid keys.

Every operation gets a bounded, derandomised run of generated requests, half of them aimed at
the seeded demo collaboration (so the handlers behind authorisation are reached) and half with
generated path values. Each response must not be a server error and, where the document
declares a response for its status, must match that response's schema.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.api.app import create_app
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
DEMO_PATH = {"c": DEMO, "v": 1, "org": "acme", "name": "loyalty"}
MAX_EXAMPLES = 25


def _key_for(method: str, path: str, keys: dict[str, Any]) -> str:
    """The key whose role the route serves; fuzzing with it reaches past authorisation."""
    if path.startswith("/v1/orgs") or (method == "POST" and path == "/v1/collaborations"):
        return str(keys["admin"])
    if "/datasets" in path:
        return str(keys["bigmart"]["contributor"])
    if "/policy" in path or "/audit" in path:
        return str(keys["acme"]["compliance"])
    return str(keys["acme"]["analyst"])


def _fuzz(operation: Any, key: str) -> int:
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
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Exception as error:  # name the operation that broke
        pytest.fail(f"{operation.method.upper()} {operation.path}: {error}")
    return cases


def test_every_operation_survives_generated_requests(
    services: Services, demo_keys: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services=services))
    results: list[Any] = list(schema.get_all_operations())
    operations = [result.ok() for result in results]
    assert len(operations) >= 20
    cases = sum(
        _fuzz(operation, _key_for(operation.method.upper(), operation.path, demo_keys))
        for operation in operations
    )
    print(f"fuzzed {len(operations)} operations with {cases} generated requests")


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
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services=services))
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
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    run()
