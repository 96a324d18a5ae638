"""An upload is never on disk in the clear: not while received, not while parsed, not after.

A loyalty version carrying a random canary (in customer keys, e-mails and a store id) goes
through ``datasets.receive_upload``, the service entry of the upload route: the body streams
into the sealed spool, then is parsed from it batch by batch into the sealed dataset file.
While the body arrives (from inside the body generator), while each batch is checked (from a
per-batch check hook) and afterwards, every file under the data directory and every file of
the system temp directory written since the test began is searched for the canary in UTF-8 and
UTF-16-LE: 0 occurrences. So is every file written to the temp directory (``TMPDIR`` points to a
directory of the test's own). The spool is gone after success and after every failure path.
"""

from __future__ import annotations

import io
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gateway.api.errors import status_for
from gateway.config import Settings
from gateway.domain.errors import GatewayError, InvalidDataset
from gateway.domain.policy import DatasetPolicy
from gateway.service import datasets
from gateway.service.access import authenticate
from gateway.service.context import Services
from gateway.store.sealed import MAGIC

DEMO = "acme-bigmart-cx"
PARQUET = "application/vnd.apache.parquet"
ROWS = 140_000  # two batches of the Parquet reader (131,072 rows each)
CHUNK = 256 * 1024
REGIONS = ("north", "south", "east", "west")


def canary() -> str:
    return "CANARY-" + secrets.token_hex(6)  # new each run: nothing else on disk holds it


def needles(word: str) -> tuple[bytes, ...]:
    return word.encode("utf-8"), word.encode("utf-16-le")


def loyalty(word: str, rows: int = ROWS) -> pa.Table:
    """Demo-shaped loyalty rows; keys, e-mails and the last row's store carry ``word``."""
    index = pa.array(range(rows), pa.int64())
    keys = pc.binary_join_element_wise(word + "-", index.cast(pa.string()), "")
    stores = pa.array([f"S{1 + i % 40:03d}" for i in range(rows - 1)] + [f"S-{word}"])
    return pa.table(
        {
            "customer_key": keys,
            "region": pa.array([REGIONS[i % 4] for i in range(rows)]),
            "store_id": stores,
            "channel": pa.array([("store", "online", "app")[i % 3] for i in range(rows)]),
            "spend_90d": pc.cast(index, pa.float64()),
            "visits_90d": pc.bit_wise_and(index, pa.scalar(31, pa.int64())),
            "nps_score": pc.bit_wise_and(index, pa.scalar(7, pa.int64())),
            "email": pc.binary_join_element_wise(keys, "@example.com", ""),
        }
    )


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROWS)
    return buffer.getvalue()


def hits(paths: list[Path], word: str) -> tuple[int, int]:
    """Occurrences of ``word`` in ``paths`` and bytes scanned (vanished files are skipped)."""
    found = scanned = 0
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:
            continue
        scanned += len(content)
        found += sum(content.count(n) for n in needles(word))
    return found, scanned


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def chunks(
    body: bytes, during: Callable[[], None] | None = None, fail: bool = False
) -> AsyncIterator[bytes]:
    """``body`` in pieces; ``during`` runs halfway; ``fail`` drops the connection there."""
    for start in range(0, len(body), CHUNK):
        if start >= len(body) // 2 and (during is not None or fail):
            if during is not None:
                during()
                during = None
            if fail:
                raise ConnectionResetError("the client went away")
        yield body[start : start + CHUNK]


def receive(
    services: Services,
    key: str,
    body: AsyncIterator[bytes],
    name: str = "loyalty",
    content_type: str = PARQUET,
    checks: tuple[Any, ...] = (),
) -> dict[str, Any]:
    principal = authenticate(services, f"Bearer {key}")

    async def run() -> dict[str, Any]:
        return await datasets.receive_upload(
            services, principal, DEMO, name, content_type, None, body, checks=checks
        )

    return anyio.run(run)


def state(services: Services, settings: Settings) -> dict[str, Any]:
    """What a refused upload must leave as it was: versions, ledger, audit-free stores, files."""
    settings.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
    return {
        "versions": services.db.execute(
            "SELECT dataset, version, rows FROM dataset_versions ORDER BY 1, 2"
        ),
        "ledger": services.db.execute("SELECT COUNT(*) FROM ledger"),
        "spool": sorted(p.name for p in settings.upload_tmp_dir.iterdir()),
        "stored": sorted(
            str(p.relative_to(settings.datasets_dir)) for p in files_under(settings.datasets_dir)
        ),
    }


def test_an_upload_is_sealed_while_received_while_parsed_and_after(
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system_tmp = tmp_path / "system-tmp"  # the temp directory of this test alone, scanned whole
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    word = canary()
    body = parquet(loyalty(word))
    control = tmp_path / "control.parquet"  # positive control: the scan finds a clear canary
    control.write_bytes(body)
    assert hits([control], word)[0] > 0
    control.unlink()
    seen: dict[str, Any] = {"receiving": [], "parsing": [], "spools": [], "partials": 0}

    def while_receiving() -> None:
        spools = list(settings.upload_tmp_dir.iterdir())
        seen["spools"] = spools
        assert [p.read_bytes()[: len(MAGIC)] for p in spools] == [MAGIC]  # sealed from byte 0
        assert spools[0].stat().st_mode & 0o777 == 0o600
        seen["receiving"].append(hits(files_under(settings.data_dir), word))

    def while_parsing(batch: pa.RecordBatch, policy: DatasetPolicy) -> None:
        assert batch.schema.names[0] == "_token" and "email" not in batch.schema.names
        seen["partials"] += len(list(settings.datasets_dir.rglob("*.partial")))
        seen["parsing"].append(hits(files_under(settings.data_dir), word))

    answer = receive(
        services,
        demo_keys["bigmart"]["contributor"],
        chunks(body, during=while_receiving),
        checks=(while_parsing,),
    )

    assert answer["rows"] == ROWS and answer["dropped_columns"] == ["email"]
    assert answer["max_rows_per_customer"] == 1
    assert len(seen["receiving"]) == 1 and len(seen["parsing"]) == 2
    assert seen["partials"] == 2  # the dataset file being written was among the files scanned
    for found, scanned in seen["receiving"] + seen["parsing"]:
        assert found == 0 and scanned > len(body) // 2
    assert list(settings.upload_tmp_dir.iterdir()) == []  # the spool is gone
    assert not seen["spools"][0].exists()
    assert list(settings.datasets_dir.rglob("*.partial")) == []
    after = hits(files_under(settings.data_dir), word)
    services.close()
    closed = hits(files_under(settings.data_dir), word)
    system = hits(files_under(system_tmp), word)
    assert after[0] == closed[0] == system[0] == 0
    stored = settings.datasets_dir / f"{DEMO}/bigmart.loyalty/v{answer['version']}.parquet.enc"
    assert stored.read_bytes()[: len(MAGIC)] == MAGIC  # the chunked format, and it was scanned


def refuse_second_batch() -> Callable[[pa.RecordBatch, DatasetPolicy], None]:
    """A check that passes the first batch (which is then stored) and refuses the second."""
    calls = []

    def check(batch: pa.RecordBatch, policy: DatasetPolicy) -> None:
        calls.append(batch.num_rows)
        if len(calls) == 2:
            raise InvalidDataset("the check hook refuses this batch")

    return check


FAILURES: list[tuple[str, Callable[[str], dict[str, Any]], int, str]] = [
    ("empty body", lambda w: {"body": b""}, 400, "invalid_request"),
    (
        "unsupported media type",
        lambda w: {"body": parquet(loyalty(w, 100)), "content_type": "application/gzip"},
        415,
        "unsupported_media_type",
    ),
    (
        "unknown column",
        lambda w: {"body": parquet(loyalty(w, 1000).append_column("x", pa.array([1] * 1000)))},
        422,
        "invalid_dataset",
    ),
    (
        "cut parquet body",
        lambda w: {"body": parquet(loyalty(w, 1000))[:-100]},
        422,
        "invalid_dataset",
    ),
    (
        "refused by a check on the second batch",
        lambda w: {"body": parquet(loyalty(w)), "checks": (refuse_second_batch(),)},
        422,
        "invalid_dataset",
    ),
    (
        "dataset not in the policy",
        lambda w: {"body": parquet(loyalty(w, 1000)), "name": "unknown"},
        403,
        "policy_violation",
    ),
]


@pytest.mark.parametrize("case", FAILURES, ids=[c[0] for c in FAILURES])
def test_every_refusal_removes_the_spool_and_stores_nothing(
    case: tuple[str, Callable[[str], dict[str, Any]], int, str],
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
) -> None:
    _, build, status, code = case
    word = canary()
    spec = build(word)
    before = state(services, settings)
    with pytest.raises(GatewayError) as refused:
        receive(
            services,
            demo_keys["bigmart"]["contributor"],
            chunks(spec["body"]),
            name=spec.get("name", "loyalty"),
            content_type=spec.get("content_type", PARQUET),
            checks=spec.get("checks", ()),
        )
    assert (status_for(refused.value), refused.value.code) == (status, code)
    assert word not in refused.value.message
    assert state(services, settings) == before
    assert hits(files_under(settings.data_dir), word)[0] == 0


def test_a_dropped_connection_removes_the_spool(
    services: Services, settings: Settings, demo_keys: dict[str, Any]
) -> None:
    word = canary()
    before = state(services, settings)
    with pytest.raises(ConnectionResetError):
        receive(
            services, demo_keys["bigmart"]["contributor"], chunks(parquet(loyalty(word)), fail=True)
        )
    assert state(services, settings) == before
    assert hits(files_under(settings.data_dir), word)[0] == 0


@pytest.mark.parametrize("settings", [{"max_upload_bytes": 1 << 20}], indirect=True)
def test_a_body_over_the_limit_is_refused_mid_stream(
    services: Services, settings: Settings, demo_keys: dict[str, Any]
) -> None:
    word = canary()
    body = parquet(loyalty(word))
    assert len(body) > 2 << 20
    before = state(services, settings)
    with pytest.raises(GatewayError) as refused:
        receive(services, demo_keys["bigmart"]["contributor"], chunks(body))
    assert (status_for(refused.value), refused.value.code) == (413, "payload_too_large")
    assert state(services, settings) == before
    assert hits(files_under(settings.data_dir), word)[0] == 0


def test_the_upload_route_spools_sealed(
    api: Any, settings: Settings, demo_keys: dict[str, Any]
) -> None:
    """Through the HTTP route: halfway through the body, the spool exists, is sealed from its
    first byte and holds the canary 0 times; afterwards nothing of the upload is left in clear."""
    word = canary()
    body = parquet(loyalty(word))
    seen: list[tuple[int, int, list[bytes]]] = []

    def while_receiving() -> None:
        spools = list(settings.upload_tmp_dir.iterdir())
        seen.append(
            (*hits(files_under(settings.data_dir), word), [p.read_bytes()[:8] for p in spools])
        )

    response = api.post(
        f"/v1/collaborations/{DEMO}/datasets/loyalty",
        key=demo_keys["bigmart"]["contributor"],
        content=chunks(body, during=while_receiving),
        headers={"Content-Type": PARQUET},
    )
    assert response.status_code == 201, response.text
    assert len(seen) == 1
    found, scanned, heads = seen[0]
    assert found == 0 and scanned > len(body) // 2
    assert [h[: len(MAGIC)] for h in heads] == [MAGIC]
    assert list(settings.upload_tmp_dir.iterdir()) == []
    assert hits(files_under(settings.data_dir), word)[0] == 0
