"""Master-key rotation: every secret re-wrapped, all data readable, the old key useless.

The store is the seeded demo (a private copy per test); rotation runs through the real CLI in a
subprocess with no ``GATEWAY_*`` variables, so the key comes from ``<data-dir>/master.key``
exactly as the server finds it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway import cli
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.service.context import Services, open_services
from gateway.store import rotation
from gateway.store.crypto import DecryptionFailed, Keyring
from gateway.store.files import DatasetFiles

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
REPO = Path(__file__).resolve().parents[2]


def joint_count(epsilon: float) -> dict[str, Any]:
    """Customers in both tables; a different ε makes a new query (no replay)."""
    return {
        "plan": {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "aggregates": [{"fn": "count", "as": "customers"}],
        },
        "epsilon": epsilon,
    }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    clean["PYTHONPATH"] = str(REPO)
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count_of(api: Any, key: str, epsilon: float) -> float:
    response = api.post(QUERIES, key=key, json=joint_count(epsilon))
    assert response.status_code == 200, response.text
    assert response.json()["replay"] is False
    return float(response.json()["rows"][0]["customers"]["value"])


def wrapped_secrets(services: Services) -> list[tuple[bytes, bytes]]:
    """Every ``(wrapped, aad)`` pair in the catalog."""
    rows = services.db.execute(
        "SELECT wrapped_key, collaboration || '/' || dataset || '/v' || version "
        "FROM dataset_versions"
    )
    rows += services.db.execute("SELECT token_secret, 'token-secret/' || id FROM collaborations")
    rows += services.db.execute("SELECT wrapped, name FROM gateway_secrets")
    return [(bytes(w), str(aad).encode()) for w, aad in rows]


class App:
    """Calls into an app over reopened services (the ``api`` fixture serves the first ones)."""

    def __init__(self, services: Services) -> None:
        self.app = create_app(services=services)

    def post(self, path: str, key: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
                headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
                return await c.post(path, headers=headers, **kwargs)

        return anyio.run(call)


def key_file_state(settings: Settings) -> tuple[bytes, list[str]]:
    """master.key's bytes and every master.key* file in the data directory."""
    names = sorted(p.name for p in settings.data_dir.glob("master.key*"))
    return (settings.data_dir / "master.key").read_bytes(), names


def old_key(settings: Settings) -> bytes:
    return base64.b64decode((settings.data_dir / "master.key").read_text().strip())


def test_rotation_rewraps_every_secret_and_keeps_data_readable(
    api: Any,
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    upload: Any,
    encode: Any,
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    before = count_of(api, analyst, 0.5)
    versions = {name: dv.version for name, dv in services.catalog.latest_datasets(DEMO).items()}
    token_key = services.token_key(DEMO)
    secrets = wrapped_secrets(services)
    n_versions = len(services.db.execute("SELECT 1 FROM dataset_versions"))
    n_collabs = len(services.db.execute("SELECT 1 FROM collaborations"))
    previous_key = old_key(settings)
    services.close()

    done = run_cli("admin", "rotate-master-key", "--data-dir", str(settings.data_dir))
    assert done.returncode == 0, done.stderr
    assert (
        f"re-wrapped {n_versions} data keys, {n_collabs} token secrets and 1 gateway secrets"
        in done.stdout
    )
    new_bytes, names = key_file_state(settings)
    assert names == ["master.key"]  # no .previous or .next left behind
    assert (settings.data_dir / "master.key").stat().st_mode & 0o777 == 0o600
    new_key = base64.b64decode(new_bytes.strip())
    assert len(new_key) == 32 and new_key != previous_key

    reopened = open_services(settings)
    try:
        app = App(reopened)
        assert reopened.audit.verify()[0]  # the signing key was re-wrapped, the chain holds
        assert {n: dv.version for n, dv in reopened.catalog.latest_datasets(DEMO).items()} == (
            versions
        )
        assert reopened.token_key(DEMO) == token_key
        after = count_of(app, analyst, 0.6)
        # Re-uploading the same customers tokenises them to the same tokens: the joint count
        # stays (Laplace noise of scale ≤ 2 on each count; 100 is far beyond it).
        response = app.post(
            f"/v1/collaborations/{DEMO}/datasets/loyalty",
            key=demo_keys["bigmart"]["contributor"],
            content=encode.parquet(demo_tables.loyalty),
            headers={"Content-Type": encode.PARQUET},
        )
        assert response.status_code == 201, response.text
        assert reopened.catalog.latest_datasets(DEMO)["bigmart.loyalty"].version == (
            versions["bigmart.loyalty"] + 1
        )
        again = count_of(app, analyst, 0.7)
        assert before > 500
        assert abs(after - before) < 100 and abs(again - before) < 100
        # Nothing unwraps under the old key any more; everything does under the new one.
        old, new = Keyring(previous_key), Keyring(new_key)
        for wrapped, aad in wrapped_secrets(reopened):
            with pytest.raises(DecryptionFailed):
                old.unwrap(wrapped, aad)
            new.unwrap(wrapped, aad)
        for wrapped, aad in secrets:  # the values stored before the rotation are gone
            assert (wrapped, aad) not in wrapped_secrets(reopened)
    finally:
        reopened.close()
    assert run_cli("audit", "verify", "--data-dir", str(settings.data_dir)).returncode == 0


def fail_after_two_rewraps(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rotation._rewrap
    calls = {"n": 0}

    def rewrap(old: Keyring, new: Keyring, wrapped: bytes, aad: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash mid-rotation")
        return real(old, new, wrapped, aad)

    monkeypatch.setattr(rotation, "_rewrap", rewrap)


def fail_after_the_key_file_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rotation.rotate_master_key

    def rotate(
        db: Any, old: Keyring, new: Keyring, before_commit: Callable[[], None] | None = None
    ) -> dict[str, int]:
        def install_then_crash() -> None:
            assert before_commit is not None
            before_commit()
            raise RuntimeError("simulated crash just before commit")

        return real(db, old, new, install_then_crash)

    monkeypatch.setattr(rotation, "rotate_master_key", rotate)


@pytest.mark.parametrize("failure", [fail_after_two_rewraps, fail_after_the_key_file_is_installed])
def test_a_failed_rotation_changes_nothing(
    api: Any,
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[pytest.MonkeyPatch], None],
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    before = count_of(api, analyst, 0.5)
    secrets = wrapped_secrets(services)
    key_before = key_file_state(settings)
    services.close()
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    failure(monkeypatch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.main(["admin", "rotate-master-key", "--data-dir", str(settings.data_dir)])

    assert key_file_state(settings) == key_before
    reopened = open_services(settings)  # with the OLD key, still in master.key
    try:
        assert sorted(wrapped_secrets(reopened)) == sorted(secrets)
        assert reopened.audit.verify()[0]
        assert abs(count_of(App(reopened), analyst, 0.6) - before) < 100
    finally:
        reopened.close()


def test_rotation_is_refused_while_a_gateway_holds_the_catalog(
    services: Services, settings: Settings, demo_keys: dict[str, Any]
) -> None:
    key_before = key_file_state(settings)
    done = run_cli("admin", "rotate-master-key", "--data-dir", str(settings.data_dir))
    assert done.returncode == 2
    assert "another gateway" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert key_file_state(settings) == key_before


def test_an_environment_key_needs_a_new_key_file(
    services: Services, settings: Settings, demo_keys: dict[str, Any], tmp_path: Path
) -> None:
    previous_key = old_key(settings)
    services.close()
    (settings.data_dir / "master.key").unlink()  # the key now lives only in the environment
    env = {"GATEWAY_MASTER_KEY": base64.b64encode(previous_key).decode()}
    args = ("admin", "rotate-master-key", "--data-dir", str(settings.data_dir))

    refused = run_cli(*args, env=env)
    assert refused.returncode == 2 and "--new-key-file" in refused.stderr

    taken = tmp_path / "taken.key"
    taken.write_text("do not overwrite\n")
    refused = run_cli(*args, "--new-key-file", str(taken), env=env)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    assert taken.read_text() == "do not overwrite\n"

    new_file = tmp_path / "new.key"
    done = run_cli(*args, "--new-key-file", str(new_file), env=env)
    assert done.returncode == 0, done.stderr
    assert "GATEWAY_MASTER_KEY" in done.stderr
    assert new_file.stat().st_mode & 0o777 == 0o600
    reopened = open_services(Settings(data_dir=settings.data_dir, master_key_file=new_file))
    try:
        assert reopened.audit.verify()[0]
        for dv in reopened.catalog.latest_datasets(DEMO).values():
            assert reopened.files.read(dv).num_rows == dv.rows
            with pytest.raises(DecryptionFailed):
                Keyring(previous_key).unwrap(dv.wrapped_key, dv.aad)
    finally:
        reopened.close()


def test_swapped_dataset_files_do_not_decrypt(
    services: Services, demo_keys: dict[str, Any]
) -> None:
    latest = services.catalog.latest_datasets(DEMO)
    loyalty, survey = latest["bigmart.loyalty"], latest["acme.survey"]
    root = services.settings.datasets_dir
    a, b = (root / loyalty.file).read_bytes(), (root / survey.file).read_bytes()
    (root / loyalty.file).write_bytes(b)
    (root / survey.file).write_bytes(a)
    files = DatasetFiles(root, services.keyring)  # a fresh cache: read from disk
    for dv in (loyalty, survey):
        with pytest.raises(DecryptionFailed):
            files.read(dv)
