"""Integration fixtures: the real app over a real store, started from a seeded demo.

Seeding the demo (2,000 customers per partner) takes about a second, so it is done once per
session into a template directory; each test gets a private copy of that directory. The
``settings`` fixture below therefore points at an already seeded store, and the root
``demo_keys`` fixture finds the seeded state and returns its keys (``seed_demo`` reuses it).

Settings can be overridden per test with indirect parametrisation::

    @pytest.mark.parametrize("settings", [{"max_upload_bytes": 2048}], indirect=True)
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq
import pytest
import yaml

from gateway.config import Settings
from gateway.demo.data import DemoTables, generate_demo_tables
from gateway.demo.seed import POLICY_FILE, seed_demo
from gateway.service.context import Services, open_services

DEMO = "acme-bigmart-cx"
CUSTOMERS = 2_000


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the seeded demo, closed so that it can be copied."""
    data_dir = tmp_path_factory.mktemp("demo-template") / "var"
    services = open_services(Settings(data_dir=data_dir, demo=True, demo_customers=CUSTOMERS))
    try:
        seed_demo(services, customers=CUSTOMERS, progress=lambda _: None)
    finally:
        services.close()
    return data_dir


@pytest.fixture
def settings(tmp_path: Path, demo_template: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings over a private copy of the seeded demo (overrides the root fixture)."""
    data_dir = tmp_path / "var"
    shutil.copytree(demo_template, data_dir)
    overrides: dict[str, Any] = getattr(request, "param", {})
    return Settings(data_dir=data_dir, demo=True, demo_customers=CUSTOMERS, **overrides)


@pytest.fixture(scope="session")
def demo_tables() -> DemoTables:
    """The tables the demo was seeded with (same size, default seed)."""
    return generate_demo_tables(customers=CUSTOMERS)


class Encode:
    """Arrow tables to upload bodies, with the media type each format is sent with."""

    PARQUET = "application/vnd.apache.parquet"
    CSV = "text/csv"
    ARROW = "application/vnd.apache.arrow.stream"

    @staticmethod
    def parquet(table: pa.Table) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    @staticmethod
    def csv(table: pa.Table) -> bytes:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        return buffer.getvalue()

    @staticmethod
    def arrow(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with paipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=500)
        return bytes(sink.getvalue().to_pybytes())


@pytest.fixture
def encode() -> type[Encode]:
    return Encode


@pytest.fixture
def upload(api: Any, demo_keys: dict[str, Any]) -> Callable[..., httpx.Response]:
    """POST a dataset body as ``org``'s contributor (or ``key``)."""

    def post(
        org: str,
        name: str,
        content: Any,
        content_type: str = Encode.PARQUET,
        key: str | None = None,
        collab: str = DEMO,
    ) -> httpx.Response:
        response: httpx.Response = api.post(
            f"/v1/collaborations/{collab}/datasets/{name}",
            key=key if key is not None else demo_keys[org]["contributor"],
            content=content,
            headers={"Content-Type": content_type},
        )
        return response

    return post


@pytest.fixture
def demo_policy() -> dict[str, Any]:
    """A fresh, mutable copy of the demo policy document."""
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    return copy.deepcopy(document)


@pytest.fixture
def put_policy(
    api: Any, demo_keys: dict[str, Any], demo_policy: dict[str, Any]
) -> Callable[..., dict[str, Any]]:
    """Activate a variant of the demo policy: ``put_policy(lambda doc: ...)`` edits a copy.

    ``org`` proposes it; unless ``approve=False``, every other owner whose approval it needs
    approves it, so it is active when this returns.
    """

    def put(
        edit: Callable[[dict[str, Any]], None] | None = None,
        org: str = "acme",
        approve: bool = True,
    ) -> Any:
        document = copy.deepcopy(demo_policy)
        if edit is not None:
            edit(document)
        response = api.put(
            f"/v1/collaborations/{DEMO}/policy",
            key=demo_keys[org]["compliance"],
            content=yaml.safe_dump(document, sort_keys=False).encode(),
            headers={"Content-Type": "application/yaml"},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        if approve and answer["status"] == "pending":
            for other, approved in answer["approvals"].items():
                if approved:
                    continue
                decided = api.post(
                    f"/v1/collaborations/{DEMO}/policy/versions/{answer['version']}/approve",
                    key=demo_keys[other]["compliance"],
                )
                assert decided.status_code == 200, decided.text
                answer = decided.json()
            assert answer["status"] == "active", answer
        return answer

    return put


def _count(services: Services, table: str) -> int:
    row = services.db.one(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def snapshot(
    api: Any, services: Services, settings: Settings, demo_keys: dict[str, Any]
) -> Callable[[], dict[str, Any]]:
    """What a refusal must leave untouched: budgets, ledger, versions, releases, files, orgs."""

    def take() -> dict[str, Any]:
        budgets = api.get(f"/v1/collaborations/{DEMO}/budget", key=demo_keys["acme"]["compliance"])
        assert budgets.status_code == 200, budgets.text
        settings.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        return {
            "budgets": budgets.json(),
            "ledger": _count(services, "ledger"),
            "dataset_versions": _count(services, "dataset_versions"),
            "releases": _count(services, "releases"),
            "policy_versions": _count(services, "policy_versions"),
            "orgs": _count(services, "orgs"),
            "api_keys": _count(services, "api_keys"),
            "collaborations": _count(services, "collaborations"),
            "spool": _files(settings.upload_tmp_dir),
            "stored": _files(settings.datasets_dir),
        }

    return take


@pytest.fixture
def assert_error() -> Callable[[httpx.Response, int, str], dict[str, str]]:
    """Check status, the exact ``{"error": {"code", "message"}}`` shape and the code."""

    def check(response: httpx.Response, status: int, code: str) -> dict[str, str]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = json.loads(response.text)
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message"}, body
        assert isinstance(error["code"], str) and isinstance(error["message"], str), body
        assert error["message"], body
        assert error["code"] == code, body
        return error

    return check
