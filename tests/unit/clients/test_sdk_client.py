"""Each GatewayClient method sends the request of DESIGN.md's API table and reads its answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clients import GatewayClient, GatewayError, Release
from clients.release import Explanation

PLAN = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "customers"}]}


def test_every_request_carries_the_bearer_key(fake: Any) -> None:
    with GatewayClient("http://gateway.test/", "secret-key-1", transport=fake) as gw:
        gw.health()
        gw.me()
    for call in fake.calls:
        assert call.request.headers["Authorization"] == "Bearer secret-key-1"
        assert call.request.headers["User-Agent"].startswith("insight-gateway-python/")
    assert [str(c.request.url) for c in fake.calls] == [
        "http://gateway.test/v1/health",
        "http://gateway.test/v1/me",
    ]


def test_base_url_with_a_path_prefix_is_kept(fake: Any) -> None:
    with GatewayClient("http://proxy.test/gw", "k", transport=fake) as gw:
        gw.me()
    assert str(fake.last.request.url) == "http://proxy.test/gw/v1/me"


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_api_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="api_key"):
        GatewayClient("http://gateway.test", key)


def test_close_and_context_manager(fake: Any) -> None:
    gw = GatewayClient("http://gateway.test", "k", transport=fake)
    with gw as entered:
        assert entered is gw
    with pytest.raises(RuntimeError):
        gw.me()


JSON_CALLS: list[tuple[Callable[[GatewayClient], Any], str, str, Any]] = [
    (lambda gw: gw.health(), "GET", "/v1/health", None),
    (lambda gw: gw.me(), "GET", "/v1/me", None),
    (
        lambda gw: gw.create_org("bigmart", "BigMart", "retailer"),
        "POST",
        "/v1/orgs",
        {"id": "bigmart", "name": "BigMart", "kind": "retailer"},
    ),
    (
        lambda gw: gw.create_key("bigmart", "contributor"),
        "POST",
        "/v1/orgs/bigmart/keys",
        {"role": "contributor"},
    ),
    (
        lambda gw: gw.create_collaboration("cx", "CX", ["acme", "bigmart"]),
        "POST",
        "/v1/collaborations",
        {"id": "cx", "name": "CX", "members": ["acme", "bigmart"]},
    ),
    (lambda gw: gw.collaboration("cx"), "GET", "/v1/collaborations/cx", None),
    (lambda gw: gw.policy_document("cx"), "GET", "/v1/collaborations/cx/policy", None),
    (
        lambda gw: gw.approve_policy("cx", 4),
        "POST",
        "/v1/collaborations/cx/policy/versions/4/approve",
        None,
    ),
    (lambda gw: gw.verify_audit("cx"), "GET", "/v1/collaborations/cx/audit/verify", None),
]


@pytest.mark.parametrize(("call", "method", "path", "body"), JSON_CALLS)
def test_json_methods_send_the_contract_request(
    fake: Any,
    client: GatewayClient,
    call: Callable[[GatewayClient], Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    answer = {"answered": path}
    fake.reply = lambda request: httpx.Response(201 if method == "POST" else 200, json=answer)
    assert call(client) == answer
    request = fake.last.request
    assert (request.method, request.url.path) == (method, path)
    if body is None:
        assert fake.last.body == b""
    else:
        assert request.headers["Content-Type"] == "application/json"
        assert fake.last.json() == body


def test_create_key_returns_the_secret_once(fake: Any, client: GatewayClient) -> None:
    key = {"key_id": "k1", "org": "bigmart", "role": "analyst", "secret": "s3cr3t"}
    fake.reply = lambda request: httpx.Response(201, json=key)
    assert client.create_key("bigmart", "analyst") == key


def test_path_segments_are_escaped(fake: Any, client: GatewayClient) -> None:
    client.collaboration("a/b c")
    assert fake.last.request.url.raw_path == b"/v1/collaborations/a%2Fb%20c"


def test_empty_path_segment_is_refused(fake: Any, client: GatewayClient) -> None:
    with pytest.raises(ValueError, match="collaboration id"):
        client.budget("")
    assert fake.calls == []


def test_query_with_plan(fake: Any, client: GatewayClient, release_json: dict[str, Any]) -> None:
    fake.reply = lambda request: httpx.Response(200, json=release_json)
    release = client.query("cx", plan=PLAN, epsilon=0.5)
    assert isinstance(release, Release)
    assert release.query_id == "q-123"
    request = fake.last.request
    assert (request.method, request.url.path) == ("POST", "/v1/collaborations/cx/queries")
    assert fake.last.json() == {"plan": PLAN, "epsilon": 0.5}


def test_query_with_sql(fake: Any, client: GatewayClient, release_json: dict[str, Any]) -> None:
    fake.reply = lambda request: httpx.Response(200, json=release_json)
    client.query("cx", sql="SELECT COUNT(*) AS n FROM bigmart.loyalty", epsilon=1)
    assert fake.last.json() == {"sql": "SELECT COUNT(*) AS n FROM bigmart.loyalty", "epsilon": 1}


def test_explain(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"epsilon": 0.5, "expected_error": {}})
    explanation = client.explain("cx", sql="SELECT COUNT(*) AS n FROM x.y", epsilon=0.5)
    assert isinstance(explanation, Explanation)
    assert explanation.epsilon == 0.5
    assert fake.last.request.url.path == "/v1/collaborations/cx/queries/explain"
    assert fake.last.json() == {"sql": "SELECT COUNT(*) AS n FROM x.y", "epsilon": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epsilon": 0.5}, ValueError),
        ({"plan": PLAN, "sql": "SELECT 1", "epsilon": 0.5}, ValueError),
        ({"sql": "SELECT 1", "epsilon": 0.0}, ValueError),
        ({"sql": "SELECT 1", "epsilon": -1.0}, ValueError),
        ({"sql": "SELECT 1", "epsilon": float("nan")}, ValueError),
        ({"sql": "SELECT 1", "epsilon": float("inf")}, ValueError),
        ({"sql": "SELECT 1", "epsilon": "0.5"}, TypeError),
        ({"sql": "SELECT 1", "epsilon": True}, TypeError),
        ({"sql": "SELECT 1"}, ValueError),
        ({"sql": "SELECT 1", "epsilon": 0.5, "accuracy": {"abs": 5}}, ValueError),
        ({"sql": "SELECT 1", "accuracy": 5}, TypeError),
    ],
)
def test_bad_query_arguments_send_nothing(
    fake: Any, client: GatewayClient, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        client.query("cx", **kwargs)
    with pytest.raises(error):
        client.explain("cx", **kwargs)
    assert fake.calls == []


def test_accuracy_target_instead_of_epsilon(
    fake: Any, client: GatewayClient, release_json: dict[str, Any]
) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"epsilon": 0.3})
    assert client.explain("cx", plan=PLAN, accuracy={"abs": 50}).epsilon == 0.3
    assert fake.last.json() == {"plan": PLAN, "accuracy": {"abs": 50}}
    fake.reply = lambda request: httpx.Response(200, json={**release_json, "epsilon_spent": 0.3})
    target = {"rel": 0.05, "at_count": 1000}
    assert client.query("cx", sql="SELECT 1", accuracy=target).epsilon_spent == 0.3
    assert fake.last.json() == {"sql": "SELECT 1", "accuracy": target}


def test_datasets_returns_the_answer_as_is(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json=[{"name": "bigmart.loyalty"}])
    assert client.datasets("cx") == [{"name": "bigmart.loyalty"}]
    assert fake.last.request.url.path == "/v1/collaborations/cx/datasets"


def test_budget_returns_the_budgets_list(fake: Any, client: GatewayClient) -> None:
    entry = {"org": "acme", "epsilon_total": 8.0, "epsilon_spent": 2.5, "epsilon_left": 5.5}
    fake.reply = lambda request: httpx.Response(200, json={"budgets": [entry]})
    assert client.budget("cx") == [entry]
    assert fake.last.request.url.path == "/v1/collaborations/cx/budget"


def test_policy_reads_yaml_text(fake: Any, client: GatewayClient) -> None:
    yaml_text = "collaboration: cx\nprivacy: {mechanism: laplace}\n"
    fake.reply = lambda request: httpx.Response(
        200, text=yaml_text, headers={"Content-Type": "application/yaml"}
    )
    assert client.policy("cx") == yaml_text
    request = fake.last.request
    assert (request.method, request.url.path) == ("GET", "/v1/collaborations/cx/policy")
    assert request.headers["Accept"] == "application/yaml"


def test_policy_document_asks_for_json(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"collaboration": "cx"})
    assert client.policy_document("cx") == {"collaboration": "cx"}
    assert fake.last.request.headers["Accept"] == "application/json"


def test_put_policy_sends_yaml(fake: Any, client: GatewayClient) -> None:
    yaml_text = "collaboration: cx\n"
    answer = {"status": "pending", "version": 2, "approvals": {"acme": True}, "diff": "+"}
    fake.reply = lambda request: httpx.Response(200, json=answer)
    assert client.put_policy("cx", yaml_text) == answer
    request = fake.last.request
    assert (request.method, request.url.path) == ("PUT", "/v1/collaborations/cx/policy")
    assert request.headers["Content-Type"] == "application/yaml"
    assert fake.last.body == yaml_text.encode()


def test_approve_policy_rejects_a_bad_version(fake: Any, client: GatewayClient) -> None:
    with pytest.raises(ValueError):
        client.approve_policy("cx", 0)
    assert fake.calls == []


def test_audit_passes_params_and_returns_events(fake: Any, client: GatewayClient) -> None:
    events = [{"seq": 1, "kind": "upload"}, {"seq": 2, "kind": "query"}]
    fake.reply = lambda request: httpx.Response(200, json={"events": events})
    assert client.audit("cx", limit=50, kind="query", since=None) == events
    request = fake.last.request
    assert request.url.path == "/v1/collaborations/cx/audit"
    assert dict(request.url.params) == {"limit": "50", "kind": "query"}


def test_verify_audit(fake: Any, client: GatewayClient) -> None:
    answer = {"ok": True, "events": 12, "first_bad": None}
    fake.reply = lambda request: httpx.Response(200, json=answer)
    assert client.verify_audit("cx") == answer


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json=["a", "list"]),
    ],
)
def test_malformed_success_answer_is_a_gateway_error(
    fake: Any, client: GatewayClient, response: httpx.Response
) -> None:
    fake.reply = lambda request: response
    with pytest.raises(GatewayError) as caught:
        client.me()
    assert caught.value.code == "invalid_response"


@pytest.mark.parametrize("body", [{"budgets": None}, {"events": "x"}, {}])
def test_missing_list_field_is_a_gateway_error(
    fake: Any, client: GatewayClient, body: dict[str, Any]
) -> None:
    fake.reply = lambda request: httpx.Response(200, json=body)
    with pytest.raises(GatewayError, match="budgets"):
        client.budget("cx")


def test_malformed_release_is_a_gateway_error(fake: Any, client: GatewayClient) -> None:
    fake.reply = lambda request: httpx.Response(200, json={"query_id": "q"})
    with pytest.raises(GatewayError) as caught:
        client.query("cx", plan=PLAN, epsilon=0.5)
    assert caught.value.code == "invalid_response"
