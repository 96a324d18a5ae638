"""Synthetic workload of the performance benchmarks (``perf.py``, ``load.py``).

Two customer-level tables, one row per customer, ``customers`` rows each, half of the customers
in both (same customer id):

* the retailer's ``bigmart.customers``: region (10 public keys), store_id (1,000 public keys),
  channel (3), spend (float, lognormal, about 0.1% above the policy's bound of 2,000, in cents),
  nps (int 0..10, mean varying by store), visits (int);
* the brand's ``acme.customers``: segment (4), product_line (4), satisfaction (1..5), tenure.

The policy is ``bench/perf_policy.yaml``.

:func:`open_gateway` builds a gateway store under a data directory the way a deployment would
(organisations, keys, collaboration, the policy of :data:`POLICY_FILE`, both uploads through the
service layer: validate, tokenise, encrypt) and writes ``bench-state.json`` next to it, so a
later run with the same size and seed reuses the stored datasets instead of uploading again.

Noise here is numpy's seeded generator: this is data generation, never privacy noise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.config import Settings  # noqa: E402
from gateway.domain.model import Principal  # noqa: E402
from gateway.service import admin, datasets, policies  # noqa: E402
from gateway.service.access import authenticate  # noqa: E402
from gateway.service.context import Services, open_services  # noqa: E402

COLLABORATION = "perf-bench"
RETAILER = "bigmart.customers"
BRAND = "acme.customers"
REGIONS = (
    "north",
    "north-east",
    "east",
    "south-east",
    "south",
    "south-west",
    "west",
    "north-west",
    "central",
    "islands",
)
STORES = tuple(f"S{i:04d}" for i in range(1000))
CHANNELS = ("store", "online", "app")
SEGMENTS = ("value", "mainstream", "premium", "luxury")
PRODUCT_LINES = ("apparel", "footwear", "accessories", "outdoor")
SPEND_BOUNDS = (0.0, 2000.0)
NPS_BOUNDS = (0, 10)
STATE_FILE = "bench-state.json"
DEFAULT_SEED = 20261125


POLICY_FILE = ROOT / "bench" / "perf_policy.yaml"
POLICY = POLICY_FILE.read_text()
"""The benchmark's policy: public keys for every grouped dimension, a budget of 10^9."""


@dataclass(frozen=True)
class Tables:
    """The two uploads as the contributors hold them (raw customer ids)."""

    retailer: pa.Table
    brand: pa.Table


def _ids(start: int, count: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + count)), pa.string()), 10, "0")
    return pc.binary_join_element_wise("C", digits, "")


def _pick(values: tuple[str, ...], index: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(index.astype(np.int32)), pa.array(values)
    ).dictionary_decode()


def generate(customers: int, seed: int = DEFAULT_SEED) -> Tables:
    """Both tables, deterministic for ``(customers, seed)``; vectorised (10M rows in seconds).

    The retailer holds customers ``0 … n-1``, the brand ``n/2 … 3n/2-1``: half of each table's
    customers are in the other.
    """
    rng = np.random.default_rng(seed)
    n = customers
    region = rng.choice(len(REGIONS), size=n, p=rng.dirichlet(np.full(len(REGIONS), 5)))
    store = rng.choice(len(STORES), size=n, p=rng.dirichlet(np.full(len(STORES), 3)))
    channel = rng.choice(len(CHANNELS), size=n, p=[0.55, 0.30, 0.15])
    log_spend = (
        4.1
        + np.array([0.0, 0.35, 0.15])[channel]
        + rng.normal(0.0, 0.1, len(REGIONS))[region]
        + rng.normal(0.0, 1.05, n)
    )
    spend = np.round(np.exp(log_spend), 2)
    mood = rng.normal(7.0, 0.8, len(STORES))
    nps = np.clip(np.rint(rng.normal(mood[store], 2.2)), 0, 10).astype(np.int64)
    visits = rng.poisson(6.0, n).astype(np.int64)
    retailer = pa.table(
        {
            "customer_id": _ids(0, n),
            "region": _pick(REGIONS, region),
            "store_id": _pick(STORES, store),
            "channel": _pick(CHANNELS, channel),
            "spend": pa.array(spend, pa.float64()),
            "nps": pa.array(nps, pa.int64()),
            "visits": pa.array(visits, pa.int64()),
        }
    )
    segment = rng.choice(len(SEGMENTS), size=n, p=[0.4, 0.35, 0.18, 0.07])
    product = rng.choice(len(PRODUCT_LINES), size=n)
    satisfaction = np.clip(np.rint(rng.normal(3.2 + 0.3 * segment, 0.9)), 1, 5).astype(np.int64)
    tenure = rng.integers(0, 241, n).astype(np.int64)
    brand = pa.table(
        {
            "customer_id": _ids(n // 2, n),
            "segment": _pick(SEGMENTS, segment),
            "product_line": _pick(PRODUCT_LINES, product),
            "satisfaction": pa.array(satisfaction, pa.int64()),
            "tenure_months": pa.array(tenure, pa.int64()),
        }
    )
    return Tables(retailer, brand)


def _principal(services: Services, secret: str) -> Principal:
    return authenticate(services, f"Bearer {secret}")


def _upload(services: Services, key: str, dataset: str, table: pa.Table) -> None:
    spool_dir = services.settings.upload_tmp_dir
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    spool = spool_dir / "bench-upload.parquet"
    pq.write_table(table, spool)
    try:
        datasets.upload_dataset(
            services,
            _principal(services, key),
            COLLABORATION,
            dataset.split(".", 1)[1],
            spool,
            "parquet",
        )
    finally:
        spool.unlink(missing_ok=True)


def open_gateway(data_dir: Path, tables: Tables, seed: int) -> tuple[Services, dict[str, Any]]:
    """Open the bench store under ``data_dir``, creating and uploading it when needed.

    Returns the services and the state (``keys``: the analyst's and contributors' secrets,
    ``customers``, ``seed``, ``upload_s``). A store left by a run with another size or seed
    is refused: pass an empty directory.
    """
    state_path = data_dir / STATE_FILE
    customers = tables.retailer.num_rows
    if state_path.exists():
        state: dict[str, Any] = json.loads(state_path.read_text())
        if (state["customers"], state["seed"]) != (customers, seed):
            raise SystemExit(f"{data_dir} holds another workload; use an empty directory")
        return open_services(Settings(data_dir=data_dir, demo=True)), state
    t = time.perf_counter()
    services = open_services(Settings(data_dir=data_dir, demo=True))
    for org_id, name, kind in (
        ("operator", "Gateway operator", "operator"),
        ("acme", "ACME Brands", "brand"),
        ("bigmart", "BigMart Retail", "retailer"),
    ):
        admin.create_org(services, None, org_id, name, kind)
    operator = _principal(services, admin.issue_key(services, None, "operator", "admin")["secret"])
    keys = {
        org: {role: admin.issue_key(services, None, org, role)["secret"] for role in roles}
        for org, roles in (
            ("acme", ("analyst", "compliance", "contributor")),
            ("bigmart", ("compliance", "contributor")),
        )
    }
    admin.create_collaboration(
        services, operator, COLLABORATION, "Performance benchmark", ["acme", "bigmart"]
    )
    answer = policies.put_policy(
        services,
        _principal(services, keys["acme"]["compliance"]),
        COLLABORATION,
        POLICY.encode(),
        "application/yaml",
    )
    if answer["status"] != "active":
        policies.decide(
            services,
            _principal(services, keys["bigmart"]["compliance"]),
            COLLABORATION,
            answer["version"],
            "approved",
        )
    _upload(services, keys["bigmart"]["contributor"], RETAILER, tables.retailer)
    _upload(services, keys["acme"]["contributor"], BRAND, tables.brand)
    state = {
        "customers": customers,
        "seed": seed,
        "keys": keys,
        "upload_s": round(time.perf_counter() - t, 1),
    }
    state_path.write_text(json.dumps(state))
    state_path.chmod(0o600)
    return services, state


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``insightgw serve`` on the store in ``data_dir``, in a second process on 127.0.0.1.

    Yields its URL once ``/v1/health`` answers; stops it (SIGTERM, then SIGKILL) on exit. The
    access log is off (log level warning): a log line per request is not the query path.
    """
    import httpx

    port = free_port()
    settings = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    settings.update({"PYTHONPATH": str(ROOT), "GATEWAY_LOG_LEVEL": "warning", **(env or {})})
    log = data_dir / "bench-server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=settings,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited; see {log}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
