"""Encryption at rest: a canary uploaded in a dataset is never found on disk in the clear.

BigMart uploads a loyalty version whose customer keys, e-mails and one store id carry a
distinctive canary. While queries run over it (including a group by ``store_id``, which runs in
DuckDB and goes through DP partition selection) and after they finish, every file under the data
directory (catalog, its WAL, the encrypted dataset files, the upload spool) and every file of the
system temp directory written during the test is read as raw bytes and searched for the canary
in UTF-8 and UTF-16-LE. The expected count is 0.

The canary store has a single customer, so partition selection releases it only with
probability δ ≤ 1e-7: a released group key would (rightly) be stored in the replay cache.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from gateway.config import Settings
from gateway.engine.runner import connect
from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
QUERIES = f"/v1/collaborations/{DEMO}/queries"
CANARY = "CANARY-" + "7f3a"  # built at run time: this source file never holds the whole needle
NEEDLES = (CANARY.encode("utf-8"), CANARY.encode("utf-16-le"))
REGIONS = ("north", "south", "east", "west")
STORES = ("S101", "S102", "S103")


@dataclass
class Scan:
    files: int = 0
    bytes: int = 0
    hits: int = 0
    where: tuple[str, ...] = ()

    def add(self, other: Scan) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.hits += other.hits
        self.where += other.where


def scan_files(paths: list[Path]) -> Scan:
    """Count canary occurrences in ``paths``; files that vanish or cannot be read are skipped."""
    result = Scan()
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:
            continue
        hits = sum(content.count(needle) for needle in NEEDLES)
        result.files += 1
        result.bytes += len(content)
        result.hits += hits
        if hits:
            result.where += (str(path),)
    return result


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def temp_files_since(start: float, skip: Path) -> list[Path]:
    """Regular files of the system temp directory modified since ``start``, outside ``skip``."""
    found: list[Path] = []
    for directory, _, names in os.walk(tempfile.gettempdir(), onerror=lambda _: None):
        if Path(directory).is_relative_to(skip):
            continue
        for name in names:
            path = Path(directory, name)
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= start:
                    found.append(path)
            except OSError:
                continue
    return found


def canary_loyalty(customers: int = 600) -> pa.Table:
    """A loyalty version: canary customer keys and e-mails, one canary store of one customer."""
    stores = [STORES[i % len(STORES)] for i in range(customers - 1)] + [f"S-{CANARY}"]
    return pa.table(
        {
            "customer_key": [f"{CANARY}-{i}" for i in range(customers)],
            "region": [REGIONS[i % 4] for i in range(customers)],
            "store_id": stores,
            "channel": ["store", "online", "app"] * (customers // 3),
            "spend_90d": [float(10 + i % 500) for i in range(customers)],
            "visits_90d": pa.array([i % 30 for i in range(customers)], type=pa.int64()),
            "nps_score": pa.array([i % 11 for i in range(customers)], type=pa.int64()),
            "email": [f"{CANARY}-{i}@example.com" for i in range(customers)],
        }
    )


def plans() -> list[dict[str, Any]]:
    """Queries that read the canary version: DuckDB, partition selection, joins, filters."""
    return [
        {"from": "bigmart.loyalty", "group_by": ["store_id"], "aggregates": [{"fn": "count"}]},
        {
            "from": "bigmart.loyalty",
            "group_by": ["region"],
            "aggregates": [{"fn": "sum", "column": "spend_90d"}, {"fn": "count"}],
        },
        {
            "from": "bigmart.loyalty",
            "where": [{"column": "channel", "op": "in", "values": ["store", "app"]}],
            "group_by": ["store_id", "channel"],
            "aggregates": [{"fn": "mean", "column": "visits_90d"}],
        },
        {
            "from": "bigmart.loyalty",
            "join": ["acme.survey"],
            "group_by": ["region"],
            "aggregates": [{"fn": "count"}],
        },
    ]


def run_queries(api: Any, key: str, rounds: int, errors: list[str]) -> None:
    """Each plan ``rounds`` times, each time with a new ε so that it runs (no replay)."""
    step = 0
    for _ in range(rounds):
        for plan in plans():
            step += 1
            body = {"plan": plan, "epsilon": round(0.02 + 0.001 * step, 3)}
            response = api.post(QUERIES, key=key, json=body)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")


def test_query_connections_cannot_spill_to_disk() -> None:
    con = connect()
    try:
        row = con.execute("SELECT current_setting('temp_directory')").fetchone()
    finally:
        con.close()
    assert row == ("",)


def test_canary_is_never_on_disk_in_the_clear(
    api: Any,
    services: Services,
    settings: Settings,
    demo_keys: dict[str, Any],
    upload: Any,
    encode: Any,
    tmp_path: Path,
) -> None:
    start = time.time() - 1
    table = canary_loyalty()
    body = encode.parquet(table)
    plain = tmp_path / "plain.parquet"  # positive control: the scan finds the clear canary
    plain.write_bytes(body)
    assert scan_files([plain]).hits > 0
    plain.unlink()
    response = upload("bigmart", "loyalty", body)
    assert response.status_code == 201, response.text
    stored_version = services.catalog.latest_datasets(DEMO)["bigmart.loyalty"]
    assert stored_version.rows == table.num_rows
    version = stored_version.version
    assert scan_files(files_under(settings.data_dir)).hits == 0

    # While queries run: scan the data directory again and again from this thread.
    errors: list[str] = []
    worker = threading.Thread(
        target=run_queries, args=(api, demo_keys["acme"]["analyst"], 5, errors)
    )
    during = Scan()
    scans = 0
    worker.start()
    while worker.is_alive() or scans < 3:
        during.add(scan_files(files_under(settings.data_dir)))
        scans += 1
        time.sleep(0.01)
    worker.join()
    assert errors == []
    assert scans >= 3
    assert during.hits == 0, during.where

    # After: with the catalog open, then closed (checkpointed), and the system temp dir.
    after = scan_files(files_under(settings.data_dir))
    services.close()
    closed = scan_files(files_under(settings.data_dir))
    system = scan_files(temp_files_since(start, skip=settings.data_dir))
    for result in (after, closed, system):
        assert result.hits == 0, result.where
    assert (settings.data_dir / "catalog.duckdb").is_file()
    stored = settings.datasets_dir / f"{DEMO}/bigmart.loyalty/v{version}.parquet.enc"
    assert stored.is_file()  # the scan did cover the canary version's file
    print(
        f"\ncanary at rest: {during.hits + after.hits + closed.hits + system.hits} occurrences; "
        f"{scans} scans during queries ({during.bytes:,} bytes), after ({after.bytes:,} bytes), "
        f"after close ({closed.bytes:,} bytes in {closed.files} files), "
        f"system temp ({system.bytes:,} bytes in {system.files} files)"
    )
