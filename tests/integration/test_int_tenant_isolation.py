"""Tenant isolation: every endpoint refuses every caller who may not use it, and leaks nothing.

The matrix is generated from the app's own route table, so a new endpoint cannot be forgotten:
a route under ``/v1`` without an entry in :data:`ENDPOINTS` fails the test. For each endpoint
and each kind of caller (no key, a bad key, the admin, an organisation that belongs to no
collaboration, a member without the role, a member of another collaboration; every role of
each) it checks:

- 0 successes: the exact status and error code the access rules give;
- existence stays private: the same request naming a collaboration, policy version, dataset or
  organisation that does not exist gets the same status, code and message (up to the name);
- nothing is spent, stored or audited: every table of the catalog and every stored file is
  unchanged.

A second collaboration (``carco-dealers``, its own organisations, policy and data) is built
through the admin API, and its members then try to reach the demo collaboration's datasets,
policy versions and uploads from inside their own.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.routing import APIRoute, iter_route_contexts

from gateway.config import Settings
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
OTHER = "carco-dealers"
MISSING = "no-such-collab"
ROLES = ("analyst", "compliance", "contributor")
ANY_KEY = frozenset({"admin", *ROLES})
ADMIN_ONLY = frozenset({"admin"})
UNKNOWN_KEY = "igw_0123456789abcdef.not-a-real-secret"
COUNT_BY_REGION = {
    "plan": {
        "from": "bigmart.loyalty",
        "group_by": ["region"],
        "aggregates": [{"fn": "count", "as": "customers"}],
    },
    "epsilon": 0.1,
}


@dataclass(frozen=True)
class Caller:
    """A kind of caller; ``membership`` says how its organisation relates to the demo."""

    kind: str
    key: str | None
    org: str | None = None
    role: str | None = None
    membership: str = "none"  # member | outsider | other collaboration | none (no valid key)


@dataclass
class World:
    """The demo collaboration, a second one, an outsider organisation, and their keys."""

    keys: dict[str, Any]
    callers: list[Caller]
    parquet: bytes
    policy_yaml: bytes
    other_policy: dict[str, Any]
    pending: int = 0

    def key(self, org: str, role: str) -> str:
        return str(self.keys["admin"] if role == "admin" else self.keys[org][role])


@dataclass(frozen=True)
class Endpoint:
    """Who may call an endpoint and a well-formed request to it.

    ``roles``: the roles that may call it (ANY_KEY: every valid key; None: every member of the
    collaboration whatever its role). ``params``: path values that exist in the demo;
    ``missing``: values of the same parameters that exist nowhere.
    """

    roles: frozenset[str] | None
    request: Callable[[World], dict[str, Any]] = lambda _: {}
    params: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    admin_reads: bool = False  # the admin may read it too (collaboration metadata)


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("GET", "/v1/me"): Endpoint(ANY_KEY),
    ("POST", "/v1/orgs"): Endpoint(
        ADMIN_ONLY, lambda w: {"json": {"id": "matrix-org", "name": "M", "kind": "partner"}}
    ),
    ("POST", "/v1/orgs/{org}/keys"): Endpoint(
        ADMIN_ONLY,
        lambda w: {"json": {"role": "analyst"}},
        params={"org": "acme"},
        missing={"org": "no-such-org"},
    ),
    ("POST", "/v1/collaborations"): Endpoint(
        ADMIN_ONLY,
        lambda w: {"json": {"id": "matrix-c", "name": "M", "members": ["acme", "bigmart"]}},
    ),
    ("GET", "/v1/collaborations/{c}"): Endpoint(None, admin_reads=True),
    ("POST", "/v1/collaborations/{c}/datasets/{name}"): Endpoint(
        frozenset({"contributor"}),
        lambda w: {
            "content": w.parquet,
            "headers": {"Content-Type": "application/vnd.apache.parquet"},
        },
        params={"name": "loyalty"},
        missing={"name": "nosuch"},
    ),
    ("GET", "/v1/collaborations/{c}/datasets"): Endpoint(None),
    ("GET", "/v1/collaborations/{c}/policy"): Endpoint(None),
    ("PUT", "/v1/collaborations/{c}/policy"): Endpoint(
        frozenset({"compliance"}),
        lambda w: {"content": w.policy_yaml, "headers": {"Content-Type": "application/yaml"}},
    ),
    ("GET", "/v1/collaborations/{c}/policy/versions"): Endpoint(None),
    ("GET", "/v1/collaborations/{c}/policy/versions/{v}"): Endpoint(
        None, params={"v": "1"}, missing={"v": "99"}
    ),
    **{
        ("POST", f"/v1/collaborations/{{c}}/policy/versions/{{v}}/{decision}"): Endpoint(
            frozenset({"compliance"}), params={"v": "2"}, missing={"v": "99"}
        )
        for decision in ("approve", "reject", "withdraw")
    },
    ("POST", "/v1/collaborations/{c}/queries"): Endpoint(
        frozenset({"analyst"}), lambda w: {"json": COUNT_BY_REGION}
    ),
    ("POST", "/v1/collaborations/{c}/queries/explain"): Endpoint(
        frozenset({"analyst"}), lambda w: {"json": COUNT_BY_REGION}
    ),
    ("GET", "/v1/collaborations/{c}/budget"): Endpoint(frozenset({"analyst", "compliance"})),
    ("GET", "/v1/collaborations/{c}/budget/history"): Endpoint(
        frozenset({"analyst", "compliance"})
    ),
    ("GET", "/v1/collaborations/{c}/audit"): Endpoint(frozenset({"compliance"})),
    ("GET", "/v1/collaborations/{c}/audit/verify"): Endpoint(frozenset({"compliance"})),
    # the web console's draft check follows the rules of the proposal it previews
    ("POST", "/console/api/collaborations/{c}/policy/check"): Endpoint(
        frozenset({"compliance"}),
        lambda w: {"content": w.policy_yaml, "headers": {"Content-Type": "application/yaml"}},
    ),
}
NOT_TENANT_SCOPED = {("GET", "/v1/health")}  # liveness and version, for anyone


def expected(endpoint: Endpoint, caller: Caller) -> tuple[int, str] | None:
    """The refusal the access rules give ``caller``, or None for a caller who may use it.

    The role is checked before membership, so a caller without the role gets the same 403
    whether or not the collaboration exists; a caller with it but outside the collaboration
    gets the 404 a collaboration that does not exist gets.
    """
    if caller.membership == "none":
        return 401, "unauthenticated"
    if endpoint.roles == ANY_KEY:
        return None
    if endpoint.roles == ADMIN_ONLY:
        return None if caller.role == "admin" else (403, "forbidden")
    if caller.role == "admin":
        if endpoint.admin_reads:
            return None
        return (404, "not_found") if endpoint.roles is None else (403, "forbidden")
    if endpoint.roles is not None and caller.role not in endpoint.roles:
        return 403, "forbidden"
    if caller.membership != "member":
        return 404, "not_found"
    return None


def _state(services: Services, settings: Settings) -> dict[str, Any]:
    """Every row of every catalog table, and every stored or spooled file."""
    tables = [
        str(row[0])
        for row in services.db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "ORDER BY table_name"
        )
    ]
    rows = {t: sorted(map(repr, services.db.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    files = {
        str(p.relative_to(settings.data_dir))
        for d in (settings.datasets_dir, settings.upload_tmp_dir)
        if d.exists()
        for p in Path(d).rglob("*")
        if p.is_file()
    }
    return {"rows": rows, "files": sorted(files)}


def _scoped_state(services: Services, collab: str) -> dict[str, Any]:
    """The rows of one collaboration in every table that has a ``collaboration`` column."""
    tables = [
        str(row[0])
        for row in services.db.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND column_name = 'collaboration' ORDER BY table_name"
        )
    ]
    return {
        t: sorted(
            map(repr, services.db.execute(f'SELECT * FROM "{t}" WHERE collaboration = ?', [collab]))
        )
        for t in tables
    }


def _post_ok(api: Any, path: str, key: str, **kwargs: Any) -> Any:
    response = api.post(path, key=key, **kwargs)
    assert response.status_code in (200, 201), (path, response.text)
    return response.json()


def _other_policy(demo_policy: dict[str, Any]) -> dict[str, Any]:
    """The demo policy, renamed: carco (a brand) and dealer-north (a dealer) share the same
    kind of tables in their own collaboration."""
    document = copy.deepcopy(demo_policy)
    document["collaboration"] = OTHER
    loyalty = document["datasets"].pop("bigmart.loyalty")
    survey = document["datasets"].pop("acme.survey")
    document["datasets"] = {
        "dealer-north.loyalty": {**loyalty, "owner": "dealer-north"},
        "carco.survey": {**survey, "owner": "carco"},
    }
    document["budgets"] = {"carco": {"epsilon": 8.0, "period": "month"}}
    document["joins"] = [["dealer-north.loyalty", "carco.survey"]]
    return document


@pytest.fixture
def world(
    api: Any,
    demo_keys: dict[str, Any],
    demo_policy: dict[str, Any],
    demo_tables: Any,
) -> World:
    """Builds, through the admin API: an outsider organisation, and a second collaboration
    with its own organisations, policy (approved by both owners) and uploaded data; and a
    pending policy version in the demo, for the decision endpoints."""
    admin = demo_keys["admin"]
    keys: dict[str, Any] = copy.deepcopy(demo_keys)
    for org, kind in [("outsider", "partner"), ("carco", "brand"), ("dealer-north", "partner")]:
        _post_ok(api, "/v1/orgs", admin, json={"id": org, "name": org.title(), "kind": kind})
        keys[org] = {
            role: _post_ok(api, f"/v1/orgs/{org}/keys", admin, json={"role": role})["secret"]
            for role in ROLES
        }
    members = {"id": OTHER, "name": "CarCo dealers", "members": ["carco", "dealer-north"]}
    _post_ok(api, "/v1/collaborations", admin, json=members)
    other_policy = _other_policy(demo_policy)
    proposed = api.put(
        f"/v1/collaborations/{OTHER}/policy",
        key=keys["carco"]["compliance"],
        content=yaml.safe_dump(other_policy).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    assert proposed.status_code == 200 and proposed.json()["status"] == "pending", proposed.text
    approve = f"/v1/collaborations/{OTHER}/policy/versions/1/approve"
    assert _post_ok(api, approve, keys["dealer-north"]["compliance"])["status"] == "active"

    def parquet(table: Any) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    loyalty, survey = demo_tables.loyalty.slice(0, 400), demo_tables.survey.slice(0, 400)
    for org, name, table in [("dealer-north", "loyalty", loyalty), ("carco", "survey", survey)]:
        _post_ok(
            api,
            f"/v1/collaborations/{OTHER}/datasets/{name}",
            keys[org]["contributor"],
            content=parquet(table),
            headers={"Content-Type": "application/vnd.apache.parquet"},
        )

    change = copy.deepcopy(demo_policy)
    change["rules"]["min_group_size"] = 26
    policy_yaml = yaml.safe_dump(change).encode()
    pending = api.put(
        f"/v1/collaborations/{DEMO}/policy",
        key=keys["acme"]["compliance"],
        content=policy_yaml,
        headers={"Content-Type": "application/yaml"},
    )
    assert pending.status_code == 200 and pending.json()["version"] == 2, pending.text

    callers = [
        Caller("no key", None),
        Caller("unknown key", UNKNOWN_KEY),
        Caller("malformed key", "not-a-key"),
        Caller("admin", str(admin), "operator", "admin", "operator"),
    ]
    for org, membership in [
        ("outsider", "outsider"),
        ("acme", "member"),
        ("bigmart", "member"),
        ("carco", "other collaboration"),
        ("dealer-north", "other collaboration"),
    ]:
        callers += [
            Caller(f"{membership} {org} {role}", keys[org][role], org, role, membership)
            for role in ROLES
        ]
    return World(keys, callers, parquet(loyalty), policy_yaml, other_policy, pending=2)


def _fill(template: str, values: dict[str, str]) -> str:
    path = template
    for name, value in values.items():
        path = path.replace(f"{{{name}}}", value)
    return path


def _routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every API route under /v1 and of any route naming a collaboration
    (the web console's draft check), from the app's own route table."""
    return {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        and (str(route.path).startswith("/v1/") or "{c}" in str(route.path))
        for method in (route.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_v1_route_has_a_matrix_entry(api: Any) -> None:
    """Generated from the route table: a new endpoint without an entry fails here."""
    routes = _routes(api.app)
    assert len(routes) >= 20
    assert routes - NOT_TENANT_SCOPED - set(ENDPOINTS) == set(), "routes without a matrix entry"
    assert set(ENDPOINTS) - routes == set(), "matrix entries without a route"


def test_tenant_isolation_matrix(
    api: Any,
    world: World,
    services: Services,
    settings: Settings,
    assert_error: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = requests = successes = 0
    routes = sorted(_routes(api.app) - NOT_TENANT_SCOPED)
    before = _state(services, settings)
    for method, template in routes:
        endpoint = ENDPOINTS[(method, template)]
        base = {"c": DEMO, **endpoint.params} if "{c}" in template else dict(endpoint.params)
        variants = [base, *({**base, name: v} for name, v in endpoint.missing.items())]
        if "{c}" in template:
            variants.append({**base, "c": MISSING})
        for caller in world.callers:
            refusal = expected(endpoint, caller)
            if refusal is None:
                continue
            cases += 1
            answers = set()
            for values in variants:
                response = api.request(
                    method, _fill(template, values), caller.key, **endpoint.request(world)
                )
                requests += 1
                successes += response.is_success
                error = assert_error(response, *refusal)
                message = error["message"]
                for name, value in values.items():
                    message = message.replace(repr(value), f"{{{name}}}")
                    message = message.replace(value, f"{{{name}}}")
                answers.add((response.status_code, error["code"], message))
            # a caller who may not use it cannot tell whether what it names exists
            assert len(answers) == 1, (method, template, caller.kind, answers)
        assert _state(services, settings) == before, (method, template)
    assert successes == 0
    with capsys.disabled():
        print(
            f"\ntenant isolation: {len(routes)} endpoints x {len(world.callers)} caller kinds, "
            f"{cases} refusal cases, {requests} requests (existence variants included), "
            f"{successes} successes"
        )


def test_the_refused_requests_succeed_for_the_right_caller(
    api: Any, world: World, services: Services
) -> None:
    """The controls: each matrix request, made by a caller who may, is answered 2xx, so the
    refusals above come from who asks, not from what is asked."""
    acme, bigmart = "acme", "bigmart"
    versions = "/v1/collaborations/{c}/policy/versions/{v}"

    def change(min_group_size: int) -> dict[str, Any]:
        document = yaml.safe_load(world.policy_yaml)
        document["rules"]["min_group_size"] = min_group_size
        content = yaml.safe_dump(document).encode()
        return {"content": content, "headers": {"Content-Type": "application/yaml"}}

    controls: list[tuple[str, str, tuple[str, str], dict[str, str]]] = [
        ("GET", "/v1/me", (acme, "analyst"), {}),
        ("POST", "/v1/orgs", ("operator", "admin"), {}),
        ("POST", "/v1/orgs/{org}/keys", ("operator", "admin"), {"org": "acme"}),
        ("POST", "/v1/collaborations", ("operator", "admin"), {}),
        ("GET", "/v1/collaborations/{c}", (acme, "contributor"), {}),
        ("GET", "/v1/collaborations/{c}", ("operator", "admin"), {}),
        ("POST", "/v1/collaborations/{c}/datasets/{name}", (bigmart, "contributor"), {}),
        ("GET", "/v1/collaborations/{c}/datasets", (bigmart, "contributor"), {}),
        ("GET", "/v1/collaborations/{c}/policy", (acme, "contributor"), {}),
        ("GET", "/v1/collaborations/{c}/policy/versions", (bigmart, "analyst"), {}),
        ("GET", versions, (bigmart, "analyst"), {}),
        ("POST", "/v1/collaborations/{c}/queries/explain", (bigmart, "analyst"), {}),
        ("POST", "/v1/collaborations/{c}/queries", (acme, "analyst"), {}),
        ("GET", "/v1/collaborations/{c}/budget", (bigmart, "compliance"), {}),
        ("GET", "/v1/collaborations/{c}/budget/history", (acme, "analyst"), {}),
        ("GET", "/v1/collaborations/{c}/audit", (bigmart, "compliance"), {}),
        ("GET", "/v1/collaborations/{c}/audit/verify", (acme, "compliance"), {}),
        ("POST", versions + "/approve", (bigmart, "compliance"), {"v": "2"}),
        ("PUT", "/v1/collaborations/{c}/policy", (acme, "compliance"), {"change": "27"}),
        ("POST", versions + "/reject", (bigmart, "compliance"), {"v": "3"}),
        ("PUT", "/v1/collaborations/{c}/policy", (bigmart, "compliance"), {"change": "28"}),
        ("POST", versions + "/withdraw", (bigmart, "compliance"), {"v": "4"}),
        ("POST", "/console/api/collaborations/{c}/policy/check", (acme, "compliance"), {}),
    ]
    covered = set()
    for method, template, (org, role), values in controls:
        endpoint = ENDPOINTS[(method, template)]
        request = change(int(values.pop("change"))) if "change" in values else None
        path_values = {"c": DEMO, **endpoint.params, **values}
        response = api.request(
            method,
            _fill(template, path_values),
            world.key(org, role),
            **(request or endpoint.request(world)),
        )
        assert response.is_success, (method, template, org, role, response.text)
        covered.add((method, template))
    assert covered == set(ENDPOINTS)
    # every valid key sees only its own organisation and role
    for caller in world.callers:
        if caller.membership != "none":
            me = api.get("/v1/me", key=caller.key).json()
            assert (me["org"], me["role"]) == (caller.org, caller.role)


def test_members_of_another_collaboration_cannot_reach_the_demo_from_their_own(
    api: Any, world: World, services: Services, assert_error: Any
) -> None:
    """CarCo's and Dealer North's keys, inside their own collaboration, name the demo's
    datasets, policy versions and owners: every attempt is refused exactly as for a name that
    exists nowhere, and the demo's rows are untouched."""
    demo_before = _scoped_state(services, DEMO)
    carco = world.keys["carco"]
    other = f"/v1/collaborations/{OTHER}"

    # before any attempt, what the other collaboration's members read mentions nothing of the demo
    demo_names = ("acme", "bigmart", DEMO)
    reads = [
        (f"{other}/datasets", carco["analyst"]),
        (f"{other}/policy", carco["analyst"]),
        (f"{other}/policy/versions", carco["analyst"]),
        (f"{other}/budget", carco["compliance"]),
        (f"{other}/budget/history", carco["compliance"]),
        (f"{other}/audit", carco["compliance"]),
        (f"{other}/audit", world.keys["dealer-north"]["compliance"]),
        (other, carco["analyst"]),
    ]
    for path, key in reads:
        response = api.get(path, key=key)
        assert response.status_code == 200, response.text
        assert not any(name in response.text for name in demo_names), path
    # and the demo's compliance officers see none of the other collaboration's events
    for org in ("acme", "bigmart"):
        audit = api.get(f"/v1/collaborations/{DEMO}/audit", key=world.keys[org]["compliance"])
        assert audit.status_code == 200
        assert not any(name in audit.text for name in (OTHER, "carco", "dealer-north"))

    def same_answer(
        method: str, path: str, key: str, status: int, code: str, named: dict[str, str], **kw: Any
    ) -> None:
        """The answer for the demo's name and for a name that exists nowhere is the same."""
        answers = set()
        for real, fake in named.items():
            for name in (real, fake):
                body = kw.get("json") or kw.get("content")
                swapped = dict(kw)
                if isinstance(body, dict):
                    swapped["json"] = yaml.safe_load(yaml.safe_dump(body).replace(real, name))
                elif isinstance(body, bytes):
                    swapped["content"] = body.replace(real.encode(), name.encode())
                response = api.request(method, path.replace(real, name), key, **swapped)
                error = assert_error(response, status, code)
                answers.add(error["message"].replace(name.strip("/"), "<name>"))
        assert len(answers) == 1, answers

    analyst = carco["analyst"]
    for suffix in ("queries", "queries/explain"):
        plan_on_demo = {
            "plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]},
            "epsilon": 0.1,
        }
        joined = {
            "plan": {
                "from": "carco.survey",
                "join": ["acme.survey"],
                "aggregates": [{"fn": "count"}],
            },
            "epsilon": 0.1,
        }
        sql = {"sql": "SELECT COUNT(*) FROM bigmart.loyalty", "epsilon": 0.1}
        for body, real in [(plan_on_demo, "bigmart"), (joined, "acme"), (sql, "bigmart")]:
            same_answer(
                "POST",
                f"{other}/{suffix}",
                analyst,
                403,
                "policy_violation",
                {real: "nosuchorg"},
                json=body,
            )

    # the demo's pending version 2, approved or rejected through the other collaboration
    for decision in ("approve", "reject", "withdraw"):
        same_answer(
            "POST",
            f"{other}/policy/versions/2/{decision}",
            carco["compliance"],
            404,
            "not_found",
            {"/2/": "/77/"},
        )
    same_answer(
        "GET", f"{other}/policy/versions/2", carco["analyst"], 404, "not_found", {"/2": "/77"}
    )

    # a policy of the other collaboration that claims the demo's datasets or budgets
    claims = copy.deepcopy(world.other_policy)
    claims["datasets"]["bigmart.loyalty"] = {
        **claims["datasets"]["dealer-north.loyalty"],
        "owner": "bigmart",
    }
    same_answer(
        "PUT",
        f"{other}/policy",
        carco["compliance"],
        422,
        "invalid_policy",
        {"bigmart": "nosuchorg"},
        content=yaml.safe_dump(claims).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    budgets = copy.deepcopy(world.other_policy)
    budgets["budgets"]["acme"] = {"epsilon": 8.0, "period": "month"}
    same_answer(
        "PUT",
        f"{other}/policy",
        carco["compliance"],
        422,
        "invalid_policy",
        {"acme": "nosuchorg"},
        content=yaml.safe_dump(budgets).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    # an upload under the demo dataset's name lands, if anywhere, in the caller's own org
    same_answer(
        "POST",
        f"{other}/datasets/loyalty",
        carco["contributor"],
        403,
        "policy_violation",
        {"loyalty": "nosuch"},
        content=world.parquet,
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    assert _scoped_state(services, DEMO) == demo_before
