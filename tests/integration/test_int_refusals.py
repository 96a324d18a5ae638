"""The refusal matrix: each refusal has the right status, shape and code; nothing is spent or kept.

Each case takes a snapshot (budgets, ledger rows, dataset versions, releases, policy versions,
organisations, keys, collaborations, spool and stored files) before the refused call and checks
it is unchanged after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
EXPLAIN = f"/v1/collaborations/{DEMO}/queries/explain"
PARQUET = "application/vnd.apache.parquet"


def count_plan(epsilon: float = 0.1, **plan: Any) -> dict[str, Any]:
    body = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "n"}], **plan}
    return {"plan": body, "epsilon": epsilon}


COUNT_BY_REGION = count_plan(group_by=["region"])


@pytest.fixture
def probe(api: Any, demo_keys: dict[str, Any]) -> dict[str, str]:
    """A third organisation, not a member of the demo, in a collaboration of its own with ACME."""
    admin = demo_keys["admin"]
    created = api.post(
        "/v1/orgs", key=admin, json={"id": "probe-retail", "name": "Probe", "kind": "retailer"}
    )
    assert created.status_code == 201, created.text
    keys = {}
    for role in ("analyst", "compliance", "contributor"):
        issued = api.post("/v1/orgs/probe-retail/keys", key=admin, json={"role": role})
        assert issued.status_code == 201, issued.text
        body = issued.json()
        assert set(body) == {"key_id", "org", "role", "secret"}
        assert body["org"] == "probe-retail" and body["role"] == role
        keys[role] = body["secret"]
    collab = api.post(
        "/v1/collaborations",
        key=admin,
        json={"id": "acme-probe", "name": "ACME x Probe", "members": ["acme", "probe-retail"]},
    )
    assert collab.status_code == 201, collab.text
    return keys


# --- authentication ------------------------------------------------------------------------


def _wrong_secret(key: str) -> str:
    key_id, secret = key.split(".", 1)
    return f"{key_id}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


AUTH_HEADERS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "no header": lambda keys: None,
    "empty": lambda keys: "",
    "basic scheme": lambda keys: "Basic " + keys["acme"]["analyst"],
    "bearer without token": lambda keys: "Bearer ",
    "no prefix": lambda keys: "Bearer " + keys["acme"]["analyst"][len("igw_") :],
    "no dot": lambda keys: "Bearer igw_" + "0" * 16,
    "unknown key id": lambda keys: "Bearer igw_0123456789abcdef.not-a-real-secret",
    "wrong secret": lambda keys: "Bearer " + _wrong_secret(keys["acme"]["analyst"]),
    "secret of another key": lambda keys: (
        "Bearer "
        + keys["acme"]["analyst"].split(".")[0]
        + "."
        + keys["bigmart"]["analyst"].split(".", 1)[1]
    ),
}

AUTH_ENDPOINTS = [
    ("POST", QUERIES, COUNT_BY_REGION),
    ("POST", EXPLAIN, COUNT_BY_REGION),
    ("GET", f"/v1/collaborations/{DEMO}/budget", None),
    ("GET", f"/v1/collaborations/{DEMO}/audit", None),
    ("GET", f"/v1/collaborations/{DEMO}/policy", None),
    ("GET", f"/v1/collaborations/{DEMO}/datasets", None),
    ("GET", f"/v1/collaborations/{DEMO}", None),
    ("GET", "/v1/me", None),
    ("POST", "/v1/orgs", {"id": "intruder", "name": "Intruder", "kind": "partner"}),
]


@pytest.mark.parametrize("case", sorted(AUTH_HEADERS))
def test_bad_credentials_are_401_and_spend_nothing(
    case: str, api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    authorization = AUTH_HEADERS[case](demo_keys)
    headers = {} if authorization is None else {"Authorization": authorization}
    before = snapshot()
    messages = set()
    for method, path, body in AUTH_ENDPOINTS:
        response = api.request(method, path, json=body, headers=headers)
        error = assert_error(response, 401, "unauthenticated")
        assert response.headers.get("www-authenticate") == "Bearer"
        messages.add(error["message"])
    # One message for every failure: the answer does not tell which part was wrong.
    assert len(messages) == 1
    assert snapshot() == before


def test_bad_credentials_cannot_upload(
    upload: Any, demo_tables: Any, encode: Any, snapshot: Any, assert_error: Any
) -> None:
    before = snapshot()
    body = encode.parquet(demo_tables.loyalty.slice(0, 100))
    assert_error(upload("bigmart", "loyalty", body, key="igw_0123.nope"), 401, "unauthenticated")
    assert snapshot() == before


# --- roles ---------------------------------------------------------------------------------

ROLE_CASES: list[tuple[str, str, str, str, Any]] = [
    # (case, who, method, path, json body)
    ("contributor queries", "acme.contributor", "POST", QUERIES, COUNT_BY_REGION),
    ("contributor explains", "acme.contributor", "POST", EXPLAIN, COUNT_BY_REGION),
    ("compliance queries", "acme.compliance", "POST", QUERIES, COUNT_BY_REGION),
    ("admin queries", "admin", "POST", QUERIES, COUNT_BY_REGION),
    (
        "analyst creates org",
        "acme.analyst",
        "POST",
        "/v1/orgs",
        {"id": "rogue", "name": "Rogue", "kind": "partner"},
    ),
    (
        "compliance creates org",
        "bigmart.compliance",
        "POST",
        "/v1/orgs",
        {"id": "rogue", "name": "Rogue", "kind": "partner"},
    ),
    ("compliance issues key", "acme.compliance", "POST", "/v1/orgs/acme/keys", {"role": "analyst"}),
    (
        "contributor issues key",
        "bigmart.contributor",
        "POST",
        "/v1/orgs/bigmart/keys",
        {"role": "compliance"},
    ),
    (
        "analyst creates collaboration",
        "acme.analyst",
        "POST",
        "/v1/collaborations",
        {"id": "sneaky", "name": "Sneaky", "members": ["acme", "bigmart"]},
    ),
    ("analyst reads audit", "acme.analyst", "GET", f"/v1/collaborations/{DEMO}/audit", None),
    (
        "analyst verifies audit",
        "acme.analyst",
        "GET",
        f"/v1/collaborations/{DEMO}/audit/verify",
        None,
    ),
    (
        "contributor reads audit",
        "bigmart.contributor",
        "GET",
        f"/v1/collaborations/{DEMO}/audit",
        None,
    ),
    (
        "contributor reads budget",
        "bigmart.contributor",
        "GET",
        f"/v1/collaborations/{DEMO}/budget",
        None,
    ),
]


def _key(keys: dict[str, Any], who: str) -> str:
    if who == "admin":
        return str(keys["admin"])
    org, role = who.split(".")
    return str(keys[org][role])


@pytest.mark.parametrize("case", ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_wrong_role_is_403(
    case: tuple[str, str, str, str, Any],
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, who, method, path, body = case
    before = snapshot()
    response = api.request(method, path, key=_key(demo_keys, who), json=body)
    assert_error(response, 403, "forbidden")
    assert snapshot() == before


def test_analyst_cannot_upload(
    upload: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    encode: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    before = snapshot()
    body = encode.parquet(demo_tables.loyalty.slice(0, 100))
    for role in ("analyst", "compliance"):
        response = upload("bigmart", "loyalty", body, key=demo_keys["bigmart"][role])
        assert_error(response, 403, "forbidden")
    assert snapshot() == before


@pytest.mark.parametrize("role", ["analyst", "contributor"])
def test_only_compliance_puts_policy(
    role: str,
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    before = snapshot()
    response = api.put(
        f"/v1/collaborations/{DEMO}/policy",
        key=demo_keys["acme"][role],
        json=demo_policy,
    )
    assert_error(response, 403, "forbidden")
    assert snapshot() == before


# --- membership ----------------------------------------------------------------------------


def test_non_member_gets_404_like_a_missing_collaboration(
    api: Any,
    probe: dict[str, str],
    demo_keys: dict[str, Any],
    demo_tables: Any,
    encode: Any,
    demo_policy: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    before = snapshot()
    parquet = encode.parquet(demo_tables.loyalty.slice(0, 100))
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("analyst", "POST", "/queries", {"json": COUNT_BY_REGION}),
        ("analyst", "POST", "/queries/explain", {"json": COUNT_BY_REGION}),
        ("analyst", "GET", "/budget", {}),
        ("analyst", "GET", "", {}),
        ("analyst", "GET", "/datasets", {}),
        ("analyst", "GET", "/policy", {}),
        ("compliance", "GET", "/audit", {}),
        ("compliance", "GET", "/audit/verify", {}),
        ("compliance", "GET", "/budget", {}),
        ("compliance", "PUT", "/policy", {"json": demo_policy}),
        (
            "contributor",
            "POST",
            "/datasets/loyalty",
            {"content": parquet, "headers": {"Content-Type": PARQUET}},
        ),
    ]
    for role, method, suffix, kwargs in calls:
        member = api.request(
            method, f"/v1/collaborations/{DEMO}{suffix}", key=probe[role], **kwargs
        )
        missing = api.request(
            method, f"/v1/collaborations/no-such-collab{suffix}", key=probe[role], **kwargs
        )
        error = assert_error(member, 404, "not_found")
        other = assert_error(missing, 404, "not_found")
        # The same answer as for a collaboration that does not exist.
        assert error["message"] == other["message"].replace("no-such-collab", DEMO)
    # And the other way round: a demo member cannot see ACME's collaboration with Probe.
    for role in ("analyst", "compliance"):
        response = api.get("/v1/collaborations/acme-probe", key=demo_keys["bigmart"][role])
        assert_error(response, 404, "not_found")
    assert snapshot() == before


# --- policy --------------------------------------------------------------------------------

POLICY_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "group by hidden column",
        count_plan(group_by=["email"]),
        "datasets.bigmart.loyalty.columns.email.use",
    ),
    (
        "filter on hidden column",
        count_plan(where=[{"column": "email", "op": "eq", "value": "x@example.invalid"}]),
        "datasets.bigmart.loyalty.columns.email.use",
    ),
    (
        "aggregate hidden column",
        count_plan(aggregates=[{"fn": "sum", "column": "email", "as": "s"}]),
        "datasets.bigmart.loyalty.columns.email.use",
    ),
    (
        "hidden column of joined dataset",
        count_plan(join=["acme.survey"], group_by=["phone"]),
        "datasets.acme.survey.columns.phone.use",
    ),
    (
        "group by a measure",
        count_plan(group_by=["spend_90d"]),
        "datasets.bigmart.loyalty.columns.spend_90d.use",
    ),
    (
        "filter on a measure",
        count_plan(where=[{"column": "visits_90d", "op": "eq", "value": 3}]),
        "datasets.bigmart.loyalty.columns.visits_90d.use",
    ),
    (
        "mean of a dimension",
        count_plan(aggregates=[{"fn": "mean", "column": "region", "as": "m"}]),
        "datasets.bigmart.loyalty.columns.region.use",
    ),
    (
        "aggregate not allowed",
        count_plan(aggregates=[{"fn": "sum", "column": "nps_score", "as": "s"}]),
        "datasets.bigmart.loyalty.columns.nps_score.aggregates",
    ),
    (
        "group by customer key",
        count_plan(group_by=["customer_key"]),
        "datasets.bigmart.loyalty.customer_key",
    ),
    (
        "unknown column",
        count_plan(group_by=["favourite_colour"]),
        "datasets.bigmart.loyalty.columns",
    ),
    (
        "unknown dataset",
        {"plan": {"from": "bigmart.secret", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1},
        "datasets",
    ),
    (
        "epsilon above the cap",
        count_plan(epsilon=1.5, group_by=["region"]),
        "privacy.max_epsilon_per_query",
    ),
]


@pytest.mark.parametrize("endpoint", [QUERIES, EXPLAIN], ids=["query", "explain"])
@pytest.mark.parametrize("case", POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_policy_violations_are_403_with_the_rule_path(
    case: tuple[str, dict[str, Any], str],
    endpoint: str,
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, body, path = case
    before = snapshot()
    response = api.post(endpoint, key=demo_keys["acme"]["analyst"], json=body)
    error = assert_error(response, 403, "policy_violation")
    assert f"policy rule: {path})" in error["message"]
    assert snapshot() == before


EDITED_POLICY_CASES: list[
    tuple[str, Callable[[dict[str, Any]], None], str, dict[str, Any], str]
] = [
    (
        "org without budget",
        lambda doc: doc["budgets"].pop("bigmart"),
        "bigmart",
        COUNT_BY_REGION,
        "budgets.bigmart",
    ),
    (
        "join not allowed",
        lambda doc: doc.update(joins=[]),
        "acme",
        count_plan(join=["acme.survey"], group_by=["region"]),
        "joins",
    ),
    (
        "too many groups",
        lambda doc: doc["rules"].update(max_groups_per_query=2),
        "acme",
        COUNT_BY_REGION,
        "rules.max_groups_per_query",
    ),
    (
        "too many groups across dimensions",
        lambda doc: doc["rules"].update(max_groups_per_query=11),
        "acme",
        count_plan(group_by=["region", "channel"]),
        "rules.max_groups_per_query",
    ),
]


@pytest.mark.parametrize("endpoint", [QUERIES, EXPLAIN], ids=["query", "explain"])
@pytest.mark.parametrize("case", EDITED_POLICY_CASES, ids=[c[0] for c in EDITED_POLICY_CASES])
def test_policy_rules_refuse_with_their_path(
    case: tuple[str, Callable[[dict[str, Any]], None], str, dict[str, Any], str],
    endpoint: str,
    api: Any,
    demo_keys: dict[str, Any],
    put_policy: Any,
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, edit, org, body, path = case
    put_policy(edit)
    before = snapshot()
    response = api.post(endpoint, key=demo_keys[org]["analyst"], json=body)
    error = assert_error(response, 403, "policy_violation")
    assert f"policy rule: {path})" in error["message"]
    assert snapshot() == before


# --- budget --------------------------------------------------------------------------------


def _acme_budget(api: Any, keys: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/v1/collaborations/{DEMO}/budget", key=keys["acme"]["analyst"])
    assert response.status_code == 200, response.text
    (entry,) = response.json()["budgets"]
    assert entry["org"] == "acme"
    return dict(entry)


def test_budget_exceeded_is_429_and_reserves_nothing(
    api: Any,
    demo_keys: dict[str, Any],
    put_policy: Any,
    snapshot: Any,
    assert_error: Any,
    services: Any,
) -> None:
    put_policy(lambda doc: doc["budgets"]["acme"].update(epsilon=1.0))
    analyst = demo_keys["acme"]["analyst"]
    spent = api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.6, group_by=["region"]))
    assert spent.status_code == 200, spent.text
    assert spent.json()["budget"] == {
        "epsilon_total": 1.0,
        "epsilon_spent": 0.6,
        "epsilon_left": 0.4,
    }

    before = snapshot()
    refused = api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.5, group_by=["channel"]))
    error = assert_error(refused, 429, "budget_exceeded")
    assert "spent 0.6" in error["message"]
    assert "asked 0.5" in error["message"]
    assert "left 0.4" in error["message"]
    assert snapshot() == before
    reserved = services.db.one("SELECT COUNT(*) FROM ledger WHERE status = 'reserved'")
    assert reserved == (0,)
    assert _acme_budget(api, demo_keys)["epsilon_left"] == pytest.approx(0.4)

    # Explain tells the analyst in advance, and spends nothing either.
    explained = api.post(EXPLAIN, key=analyst, json=count_plan(epsilon=0.5, group_by=["channel"]))
    assert explained.status_code == 200
    assert explained.json()["within_budget"] is False
    assert snapshot() == before

    # What is left can still be spent, exactly.
    rest = api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.4, group_by=["channel"]))
    assert rest.status_code == 200, rest.text
    assert rest.json()["budget"]["epsilon_left"] == pytest.approx(0.0, abs=1e-9)
    assert_error(
        api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.01)), 429, "budget_exceeded"
    )


def test_lowering_the_budget_below_what_was_spent(
    api: Any, demo_keys: dict[str, Any], put_policy: Any, snapshot: Any, assert_error: Any
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    response = api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.6, group_by=["region"]))
    assert response.status_code == 200, response.text
    put_policy(lambda doc: doc["budgets"]["acme"].update(epsilon=0.5))

    entry = _acme_budget(api, demo_keys)
    assert entry["epsilon_total"] == 0.5
    assert entry["epsilon_spent"] == pytest.approx(0.6)
    assert entry["epsilon_left"] == 0

    before = snapshot()
    error = assert_error(
        api.post(QUERIES, key=analyst, json=count_plan(epsilon=0.01)), 429, "budget_exceeded"
    )
    assert "left 0 " in error["message"]
    explained = api.post(EXPLAIN, key=analyst, json=count_plan(epsilon=0.01))
    assert explained.json()["budget"]["epsilon_left"] == 0
    assert explained.json()["within_budget"] is False
    assert snapshot() == before


# --- bad input -----------------------------------------------------------------------------

BAD_INPUT: list[tuple[str, dict[str, Any]]] = [
    ("malformed JSON", {"content": b'{"plan": {', "headers": {"Content-Type": "application/json"}}),
    ("not JSON at all", {"content": b"SELECT 1", "headers": {"Content-Type": "application/json"}}),
    ("JSON array", {"json": [COUNT_BY_REGION]}),
    ("SQL next to a plan", {"json": {**COUNT_BY_REGION, "sql": "SELECT COUNT(*) FROM t"}}),
    ("epsilon next to an accuracy target", {"json": {**COUNT_BY_REGION, "accuracy": {"abs": 9}}}),
    ("accuracy target of 0", {"json": {"plan": COUNT_BY_REGION["plan"], "accuracy": {"abs": 0}}}),
    ("no plan", {"json": {"epsilon": 0.1}}),
    ("no epsilon", {"json": {"plan": COUNT_BY_REGION["plan"]}}),
    ("negative epsilon", {"json": count_plan(epsilon=-0.1)}),
    ("zero epsilon", {"json": count_plan(epsilon=0)}),
    ("epsilon as string", {"json": {**COUNT_BY_REGION, "epsilon": "0.1"}}),
    ("no aggregates", {"json": count_plan(aggregates=[])}),
    ("unknown aggregate", {"json": count_plan(aggregates=[{"fn": "mode", "column": "x"}])}),
    (
        "quantile without q",
        {"json": count_plan(aggregates=[{"fn": "quantile", "column": "spend_90d"}])},
    ),
    (
        "unqualified dataset",
        {"json": {"plan": {"from": "loyalty", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1}},
    ),
    (
        "bad filter op",
        {"json": count_plan(where=[{"column": "region", "op": "like", "value": "n%"}])},
    ),
    (
        "filter value of the wrong type",
        {"json": count_plan(where=[{"column": "region", "op": "eq", "value": 3}])},
    ),
    (
        "duplicate output name",
        {"json": count_plan(group_by=["region"], aggregates=[{"fn": "count", "as": "region"}])},
    ),
]


@pytest.mark.parametrize("endpoint", [QUERIES, EXPLAIN], ids=["query", "explain"])
@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_400(
    case: tuple[str, dict[str, Any]],
    endpoint: str,
    api: Any,
    demo_keys: dict[str, Any],
    snapshot: Any,
    assert_error: Any,
) -> None:
    _, kwargs = case
    before = snapshot()
    response = api.post(endpoint, key=demo_keys["acme"]["analyst"], **kwargs)
    assert_error(response, 400, "invalid_request")
    assert snapshot() == before


def test_admin_bad_input(
    api: Any, demo_keys: dict[str, Any], snapshot: Any, assert_error: Any
) -> None:
    admin = demo_keys["admin"]
    before = snapshot()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/orgs", {"json": {"id": "Bad Id", "name": "x", "kind": "brand"}}),
        ("/v1/orgs", {"json": {"id": "newco", "name": "x", "kind": "charity"}}),
        ("/v1/orgs", {"json": {"id": "newco", "name": "", "kind": "brand"}}),
        ("/v1/orgs", {"json": {"id": "newco"}}),
        ("/v1/orgs", {"content": b"{", "headers": {"Content-Type": "application/json"}}),
        ("/v1/orgs/acme/keys", {"json": {"role": "superuser"}}),
        ("/v1/orgs/acme/keys", {"json": {"role": "admin"}}),
        ("/v1/collaborations", {"json": {"id": "solo", "name": "Solo", "members": ["acme"]}}),
        ("/v1/collaborations", {"json": {"id": "dup", "name": "Dup", "members": ["acme", "acme"]}}),
    ]
    for path, kwargs in cases:
        assert_error(api.post(path, key=admin, **kwargs), 400, "invalid_request")
    assert_error(
        api.post("/v1/orgs/nobody/keys", key=admin, json={"role": "analyst"}), 404, "not_found"
    )
    assert_error(
        api.post(
            "/v1/collaborations",
            key=admin,
            json={"id": "ghost", "name": "Ghost", "members": ["acme", "nobody"]},
        ),
        404,
        "not_found",
    )
    assert_error(
        api.post("/v1/orgs", key=admin, json={"id": "acme", "name": "ACME", "kind": "brand"}),
        409,
        "conflict",
    )
    assert_error(
        api.post(
            "/v1/collaborations",
            key=admin,
            json={"id": DEMO, "name": "Again", "members": ["acme", "bigmart"]},
        ),
        409,
        "conflict",
    )
    assert snapshot() == before
