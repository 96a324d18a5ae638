"""The console's draft check: validates like a proposal, says who must approve, stores nothing.

One seeded store for the module (checks never write, and each test checks that), called
through the real app over ``httpx.ASGITransport``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.demo.seed import POLICY_FILE, seed_demo
from gateway.service.context import Services, open_services
from gateway.web.console import SECURITY_HEADERS

CHECK = "/console/api/collaborations/acme-bigmart-cx/policy/check"
DOCUMENT = POLICY_FILE.read_text()
MARKUP = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, dict[str, Any]]]:
    data_dir: Path = tmp_path_factory.mktemp("console") / "var"
    services = open_services(Settings(data_dir=data_dir, demo=True, demo_customers=200))
    keys = seed_demo(services, customers=200, progress=lambda _: None)
    yield services, keys
    services.close()


@pytest.fixture(scope="module")
def keys(store: tuple[Services, dict[str, Any]]) -> dict[str, Any]:
    return store[1]


def counts(services: Services) -> dict[str, int]:
    found = {}
    for table in ("policy_versions", "policy_decisions", "audit_events", "ledger"):
        row = services.db.one(f"SELECT COUNT(*) FROM {table}")
        assert row is not None
        found[table] = int(row[0])
    return found


@pytest.fixture
def check(store: tuple[Services, dict[str, Any]]) -> Iterator[Any]:
    """POST a draft to the check; afterwards, assert that nothing was stored or audited."""
    services, _ = store
    app = create_app(services=services)
    before = counts(services)

    def post(body: str, key: str | None, media: str = "application/yaml") -> httpx.Response:
        headers = {"Content-Type": media}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.post(CHECK, content=body.encode(), headers=headers)

        response = anyio.run(call)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        return response

    yield post
    assert counts(services) == before


def test_a_valid_draft_names_whose_approval_it_needs(check: Any, keys: dict[str, Any]) -> None:
    officer = keys["acme"]["compliance"]
    same = check(DOCUMENT, officer)
    assert same.status_code == 200
    assert same.json() == {"valid": True, "active_version": 1, "required": ["acme"]}

    budgets = DOCUMENT.replace("acme: {epsilon: 8.0", "acme: {epsilon: 6.0")
    assert budgets != DOCUMENT
    assert check(budgets, officer).json()["required"] == ["acme", "bigmart"]

    survey_only = DOCUMENT.replace(
        "phone:         {use: hidden}", "phone: {use: hidden}\n      x: {use: hidden}"
    )
    assert check(survey_only, officer).json()["required"] == ["acme"]


def test_an_invalid_draft_is_located_and_not_echoed_as_markup(
    check: Any, keys: dict[str, Any]
) -> None:
    draft = DOCUMENT.replace(
        "      phone:         {use: hidden}",
        f"      phone:         {{use: hidden}}\n      '{MARKUP}': {{use: bogus}}",
    )
    line = draft.splitlines().index(f"      '{MARKUP}': {{use: bogus}}") + 1
    answer = check(draft, keys["bigmart"]["compliance"])
    assert answer.status_code == 200
    verdict = answer.json()
    assert verdict["valid"] is False
    error = verdict["error"]
    assert error["code"] == "invalid_policy"
    assert error["path"] == f"datasets.acme.survey.columns.{MARKUP}.use"
    assert error["line"] == line and isinstance(error["column"], int)
    assert answer.headers["content-type"] == "application/json"  # never rendered as HTML


@pytest.mark.parametrize(
    ("edit", "code", "path"),
    [
        (
            lambda d: d.replace("collaboration: acme-bigmart-cx", "collaboration: other"),
            "invalid_policy",
            "collaboration",
        ),
        (
            lambda d: d.replace("  bigmart: {epsilon: 4.0", "  stranger: {epsilon: 4.0"),
            "invalid_policy",
            "budgets.stranger",
        ),
        (lambda d: "collaboration: [unclosed", "invalid_policy", None),
        (lambda d: d + "#" * 300_000, "invalid_request", None),
    ],
)
def test_refusals_are_reported_in_the_verdict(
    check: Any, keys: dict[str, Any], edit: Any, code: str, path: str | None
) -> None:
    verdict = check(edit(DOCUMENT), keys["acme"]["compliance"]).json()
    assert verdict["valid"] is False
    assert verdict["error"]["code"] == code
    if path is not None:
        assert verdict["error"]["path"] == path


@pytest.mark.parametrize(
    ("role", "status", "code"),
    [
        (None, 401, "unauthenticated"),
        ("analyst", 403, "forbidden"),
        ("contributor", 403, "forbidden"),
    ],
)
def test_only_compliance_officers_may_check(
    check: Any, keys: dict[str, Any], role: str | None, status: int, code: str
) -> None:
    key = keys["acme"][role] if role else None
    answer = check(DOCUMENT, key)
    assert answer.status_code == status
    assert answer.json() == {"error": {"code": code, "message": answer.json()["error"]["message"]}}
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


def test_an_operator_key_may_not_check(check: Any, keys: dict[str, Any]) -> None:
    answer = check(DOCUMENT, keys["admin"])
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_another_collaboration_is_not_found(store: Any, keys: dict[str, Any]) -> None:
    services, _ = store
    before = counts(services)
    app = create_app(services=services)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(
                CHECK.replace("acme-bigmart-cx", "someone-else"),
                content=DOCUMENT.encode(),
                headers={"Authorization": f"Bearer {keys['acme']['compliance']}"},
            )

    answer = anyio.run(call)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert counts(services) == before
