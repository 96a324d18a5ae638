"""Uploads through the sync SDK: Parquet and CSV files, a pyarrow Table, a pandas DataFrame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from clients import GatewayClient
from gateway.demo.data import generate_demo_tables
from gateway.demo.seed import COLLABORATION

pytestmark = pytest.mark.e2e

C = COLLABORATION
CUSTOMERS = 500
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def contributor(gateway: Any, keys: dict[str, Any]) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.url, keys["bigmart"]["contributor"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def analyst(gateway: Any, keys: dict[str, Any]) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.url, keys["acme"]["analyst"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def loyalty() -> pa.Table:
    return generate_demo_tables(customers=CUSTOMERS).loyalty


def _loyalty_version(analyst: GatewayClient) -> int:
    [loyalty] = [d for d in analyst.datasets(C)["datasets"] if d["id"] == "bigmart.loyalty"]
    version: int = loyalty["version"]
    return version


def _upload(
    contributor: GatewayClient, analyst: GatewayClient, source: Any
) -> tuple[dict[str, Any], list[int]]:
    """Upload ``source`` as bigmart.loyalty; check it became the next version."""
    before = _loyalty_version(analyst)
    sent: list[int] = []
    answer = contributor.upload(C, "loyalty", source, progress=sent.append)
    assert answer["dataset"] == "bigmart.loyalty"
    assert answer["version"] == before + 1
    assert answer["rows"] == CUSTOMERS
    assert "email" not in answer["schema"]  # hidden columns are dropped at ingest
    assert _loyalty_version(analyst) == before + 1
    assert sent, "the progress callback was never called"
    assert all(a < b for a, b in zip(sent, sent[1:], strict=False)), sent
    assert all(b - a <= CHUNK for a, b in zip([0, *sent], sent, strict=False)), sent
    return answer, sent


def test_upload_parquet_path(
    contributor: GatewayClient, analyst: GatewayClient, loyalty: pa.Table, tmp_path: Path
) -> None:
    path = tmp_path / "loyalty.parquet"
    pq.write_table(loyalty, path)
    _, sent = _upload(contributor, analyst, path)
    assert sent[-1] == path.stat().st_size


def test_upload_csv_path(
    contributor: GatewayClient, analyst: GatewayClient, loyalty: pa.Table, tmp_path: Path
) -> None:
    path = tmp_path / "loyalty.csv"
    pa_csv.write_csv(loyalty, path)
    _, sent = _upload(contributor, analyst, str(path))
    assert sent[-1] == path.stat().st_size


def test_upload_pyarrow_table(
    contributor: GatewayClient, analyst: GatewayClient, loyalty: pa.Table
) -> None:
    _upload(contributor, analyst, loyalty)


def test_upload_pandas_dataframe(
    contributor: GatewayClient, analyst: GatewayClient, loyalty: pa.Table
) -> None:
    frame = loyalty.to_pandas()
    frame.index = frame.index + 1_000  # a non-default index must not become a column
    _upload(contributor, analyst, frame)


def test_progress_reports_increasing_byte_counts_over_many_chunks(
    contributor: GatewayClient, analyst: GatewayClient, tmp_path: Path
) -> None:
    """A CSV of a few thousand customers spans several 64 KiB chunks."""
    bigger = generate_demo_tables(customers=2_000).loyalty
    path = tmp_path / "loyalty-2000.csv"
    pa_csv.write_csv(bigger, path)
    before = _loyalty_version(analyst)
    sent: list[int] = []
    answer = contributor.upload(C, "loyalty", path, progress=sent.append)
    assert answer["version"] == before + 1
    assert answer["rows"] == 2_000
    assert len(sent) >= 3
    assert all(a < b for a, b in zip(sent, sent[1:], strict=False)), sent
    assert sent[-1] == path.stat().st_size
