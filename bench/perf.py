"""Benchmark: query time of the gateway next to exact DuckDB SQL and OpenDP's Polars API.

Workload (``bench/gen.py``): a retailer and a brand table of ``--customers`` customers each,
half of them shared, and five queries at ε = 1:

  count     count by region (10 public keys)
  sum       sum of spend (clamped to [0, 2000]) by region
  mean      mean NPS by store (1,000 public keys)
  joint     count and mean spend by brand segment × retailer region, over the join (40 groups)
  median    median spend by channel (3 public keys)

Systems, side by side in one run:

  (a) floor   the exact, non-private SQL (same join and grouping, no bounding, no noise) on
              the same data, as uploaded, loaded as in-memory DuckDB tables (no temp
              directory), in this process;
  (b) gateway the gateway's query path in process: ``run_query`` (parse, check, reserve budget,
              bounded SQL on its stored, encrypted datasets, hot in memory after the first
              query; OpenDP noise; store the release; audit);
  (c) http    the same through HTTP with the SDK (``GatewayClient.query``) against
              ``insightgw serve`` in a second process on 127.0.0.1;
  (d) opendp  OpenDP's own Polars Context API on the same data (Context to collected release),
              each query in a process of its own.

(a) and (b) run back to back, alternating which goes first, in the same process; so do (a)
and (c). Every gateway run is a new query (ε differs by 1e-9 from the last: never a replay).
The first use of a dataset runs on a per-query connection over its decrypted Arrow table and
the second loads it into the hot database; both are reported (``cold_ms``, ``admit_ms``) and
left out of the medians. Accuracy: for every group of every run,
|released − exact| / |exact| over the clamped data; the median per query, gateway runs (b and
c) against OpenDP's. The 1-minute load average is recorded at the start and end of each phase.

Appends one JSON line per (query, system) to bench/results/perf.jsonl and prints a table.

Usage: python bench/perf.py [--customers N] [--repeats R] [--data-dir D] [--systems abcd]
                            [--queries count,sum,...] [--label L]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import gen  # noqa: E402

from gateway.service import queries  # noqa: E402
from gateway.service.access import authenticate  # noqa: E402

EPSILON = 1.0
RESULTS = ROOT / "bench" / "results" / "perf.jsonl"


@dataclass(frozen=True)
class PerfQuery:
    key: str
    title: str
    plan: dict[str, Any]
    floor_sql: str  # the exact answer, as a warehouse would run it
    exact_sql: str  # the exact answer over clamped data: what the release estimates
    outputs: tuple[str, ...]  # release aliases, in the order of exact_sql's value columns


_SPEND = "LEAST(GREATEST(spend, 0), 2000)"
_NPS = "LEAST(GREATEST(nps, 0), 10)"
_JOIN = "retailer r JOIN brand b ON r.customer_id = b.customer_id"

QUERIES = (
    PerfQuery(
        "count",
        "count by region (10 groups)",
        {
            "from": gen.RETAILER,
            "group_by": ["region"],
            "aggregates": [{"fn": "count", "as": "customers"}],
        },
        "SELECT region, COUNT(*) FROM retailer GROUP BY region",
        "SELECT region, COUNT(*) FROM retailer GROUP BY region",
        ("customers",),
    ),
    PerfQuery(
        "sum",
        "sum of clamped spend by region (10 groups)",
        {
            "from": gen.RETAILER,
            "group_by": ["region"],
            "aggregates": [{"fn": "sum", "column": "spend", "as": "spend"}],
        },
        "SELECT region, SUM(spend) FROM retailer GROUP BY region",
        f"SELECT region, SUM({_SPEND}) FROM retailer GROUP BY region",
        ("spend",),
    ),
    PerfQuery(
        "mean",
        "mean NPS by store (1,000 groups)",
        {
            "from": gen.RETAILER,
            "group_by": ["store_id"],
            "aggregates": [{"fn": "mean", "column": "nps", "as": "nps"}],
        },
        "SELECT store_id, AVG(nps) FROM retailer GROUP BY store_id",
        f"SELECT store_id, AVG({_NPS}) FROM retailer GROUP BY store_id",
        ("nps",),
    ),
    PerfQuery(
        "joint",
        "count + mean spend by segment × region over the join (40 groups)",
        {
            "from": gen.RETAILER,
            "join": [gen.BRAND],
            "group_by": ["segment", "region"],
            "aggregates": [
                {"fn": "count", "as": "customers"},
                {"fn": "mean", "column": "spend", "as": "avg_spend"},
            ],
        },
        f"SELECT b.segment, r.region, COUNT(*), AVG(r.spend) FROM {_JOIN} "
        "GROUP BY b.segment, r.region",
        f"SELECT b.segment, r.region, COUNT(*), AVG(LEAST(GREATEST(r.spend, 0), 2000)) "
        f"FROM {_JOIN} GROUP BY b.segment, r.region",
        ("customers", "avg_spend"),
    ),
    PerfQuery(
        "median",
        "median spend by channel (3 groups)",
        {
            "from": gen.RETAILER,
            "group_by": ["channel"],
            "aggregates": [{"fn": "median", "column": "spend", "as": "median_spend"}],
        },
        "SELECT channel, MEDIAN(spend) FROM retailer GROUP BY channel",
        f"SELECT channel, MEDIAN({_SPEND}) FROM retailer GROUP BY channel",
        ("median_spend",),
    ),
)


# --- measurement -------------------------------------------------------------------------------


@dataclass
class Measured:
    system: str
    query: PerfQuery
    ms: list[float] = field(default_factory=list)
    cold_ms: float | None = None
    admit_ms: float | None = None
    rel_errors: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    noise: Any = None  # the noise scales (gateway: explain; OpenDP: summarize)

    def add_errors(self, rows: list[dict[str, Any]], exact: dict[tuple[Any, ...], Any]) -> None:
        """Relative error of every released value against the exact (clamped) answer."""
        names = self.query.plan["group_by"]
        released = {tuple(row[n] for n in names): row for row in rows}
        for group, values in exact.items():
            row = released.get(group)
            for alias, truth in zip(self.query.outputs, values, strict=True):
                if truth is None or truth == 0:
                    continue
                cell = None if row is None else row.get(alias)
                if isinstance(cell, dict):
                    cell = cell.get("value")
                if cell is None:
                    raise RuntimeError(f"{self.system} {self.query.key}: group {group} missing")
                rel = abs(float(cell) - float(truth)) / abs(float(truth))
                self.rel_errors.setdefault(alias, []).append(rel)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    def median_rel_error(self) -> float:
        pooled = [e for errors in self.rel_errors.values() for e in errors]
        return float(np.median(pooled)) if pooled else float("nan")


class Floor:
    """The uploads as in-memory DuckDB tables: what a warehouse without privacy would query."""

    def __init__(self, tables: gen.Tables) -> None:
        self.con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        self.con.execute("SET temp_directory = ''")
        for name, table in (("retailer", tables.retailer), ("brand", tables.brand)):
            self.con.register("upload", table)
            self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM upload")
            self.con.unregister("upload")

    def run(self, sql: str) -> float:
        t = time.perf_counter()
        self.con.execute(sql).fetchall()
        return (time.perf_counter() - t) * 1e3

    def exact(self, q: PerfQuery) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        groups = len(q.plan["group_by"])
        rows = self.con.execute(q.exact_sql).fetchall()
        return {tuple(r[:groups]): tuple(r[groups:]) for r in rows}


class Epsilons:
    """A new ε for every gateway run (never a replay), all within 1e-3 of ``EPSILON``."""

    def __init__(self) -> None:
        self.base = EPSILON - random.random() * 1e-4
        self.serial = 0

    def next(self) -> float:
        self.serial += 1
        return self.base - self.serial * 1e-9


def _interleave(
    repeats: int, floor: Callable[[], float], system: Callable[[], float]
) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(floor())
            b.append(system())
        else:
            b.append(system())
            a.append(floor())
    return a, b


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def measure_in_process(
    services: Any,
    analyst: Any,
    floor: Floor,
    exact: dict[str, Any],
    selected: list[PerfQuery],
    repeats: int,
    epsilons: Epsilons,
) -> tuple[list[Measured], list[Measured]]:
    floors, gateways = [], []
    for q in selected:
        fm, gm = Measured("a_floor", q), Measured("b_gateway", q)

        def gateway(q: PerfQuery = q, gm: Measured = gm) -> float:
            body = {"plan": q.plan, "epsilon": epsilons.next()}
            t = time.perf_counter()
            release = queries.run_query(services, analyst, gen.COLLABORATION, body)
            ms = (time.perf_counter() - t) * 1e3
            if release["replay"]:
                raise RuntimeError("a gateway run was answered from the replay cache")
            gm.add_errors(release["rows"], exact[q.key])
            return ms

        gm.cold_ms = gateway()  # a first use: a per-query connection over decrypted tables
        gm.admit_ms = gateway()  # a second use: its datasets are loaded into the hot database
        floor.run(q.floor_sql)
        fm.ms, gm.ms = _interleave(repeats, lambda q=q: floor.run(q.floor_sql), gateway)
        floors.append(fm)
        gateways.append(gm)
        print(
            f"  {q.key:<7} (a) {fm.median_ms:8.1f} ms  (b) {gm.median_ms:8.1f} ms  "
            f"b/a {gm.median_ms / fm.median_ms:5.2f}  (first {gm.cold_ms:,.0f} ms, "
            f"second {gm.admit_ms:,.0f} ms)",
            flush=True,
        )
    return floors, gateways


def measure_http(
    url: str,
    key: str,
    floor: Floor,
    exact: dict[str, Any],
    selected: list[PerfQuery],
    repeats: int,
    epsilons: Epsilons,
) -> tuple[list[Measured], list[Measured]]:
    from clients import GatewayClient

    floors, https = [], []
    with GatewayClient(url, key, timeout=600.0) as gw:
        for q in selected:
            fm, hm = Measured("a_floor_http_phase", q), Measured("c_http", q)

            def http(q: PerfQuery = q, hm: Measured = hm) -> float:
                t = time.perf_counter()
                release = gw.query(gen.COLLABORATION, plan=q.plan, epsilon=epsilons.next())
                ms = (time.perf_counter() - t) * 1e3
                if release.replay:
                    raise RuntimeError("an HTTP run was answered from the replay cache")
                hm.add_errors(release.raw["rows"], exact[q.key])
                return ms

            hm.cold_ms = http()
            hm.admit_ms = http()
            floor.run(q.floor_sql)
            fm.ms, hm.ms = _interleave(repeats, lambda q=q: floor.run(q.floor_sql), http)
            floors.append(fm)
            https.append(hm)
            print(
                f"  {q.key:<7} (a) {fm.median_ms:8.1f} ms  (c) {hm.median_ms:8.1f} ms  "
                f"c/a {hm.median_ms / fm.median_ms:5.2f}",
                flush=True,
            )
    return floors, https


_PEER: dict[str, Any] = {}  # what a forked peer process reads (set just before forking)


def _opendp_query(key: str) -> Measured:
    """One query through OpenDP's Context API, in a forked process of its own.

    OpenDP's Polars path holds on to memory from call to call (about 0.9 GB per median release
    on 10M rows, measured), so each query runs in a fresh process: the peer is measured as it
    would run alone, and its memory cannot take down the benchmark.
    """
    import opendp.prelude as dp
    import polars as pl

    dp.enable_features("contrib")
    tables: gen.Tables = _PEER["tables"]
    q = next(q for q in QUERIES if q.key == key)
    n = tables.retailer.num_rows
    lo, hi = gen.SPEND_BOUNDS
    grid_step = _PEER["grid_step"]
    spend = pl.col("spend").fill_null(0.0)
    nps = pl.col("nps").fill_null(0)
    candidates = [lo + i * grid_step for i in range(round((hi - lo) / grid_step) + 1)]
    keys = {
        "region": gen.REGIONS,
        "store_id": gen.STORES,
        "channel": gen.CHANNELS,
        "segment": gen.SEGMENTS,
    }
    expressions: dict[str, list[Any]] = {
        "count": [pl.len().dp.noise().alias("customers")],
        "sum": [spend.dp.sum(bounds=gen.SPEND_BOUNDS).alias("spend")],
        "mean": [nps.dp.mean(bounds=gen.NPS_BOUNDS).alias("nps")],
        "joint": [
            pl.len().dp.noise().alias("customers"),
            spend.dp.mean(bounds=gen.SPEND_BOUNDS).alias("avg_spend"),
        ],
        "median": [spend.dp.quantile(0.5, candidates).alias("median_spend")],
    }
    data = pl.from_arrow(tables.retailer).lazy()  # type: ignore[union-attr]
    if key == "joint":  # OpenDP cannot join two private tables: the join is part of the query
        brand = pl.from_arrow(tables.brand).lazy()  # type: ignore[union-attr]
        data = data.join(brand, on="customer_id", how="inner")
    by = list(q.plan["group_by"])
    groups = int(np.prod([len(keys[c]) for c in by]))

    def query() -> Any:
        context = dp.Context.compositor(
            data=data.drop("customer_id"),
            privacy_unit=dp.unit_of(contributions=1),
            privacy_loss=dp.loss_of(epsilon=EPSILON),
            split_evenly_over=1,
            margins=[dp.polars.Margin(by=by, invariant="keys", max_length=n, max_groups=groups)],
        )
        return context.query().group_by(by).agg(*expressions[key])

    m = Measured("d_opendp", q)
    if key == "median":
        m.note = f"{len(candidates):,} candidates (the gateway's grid, step {grid_step:g})"
    for _ in range(_PEER["repeats"]):
        t = time.perf_counter()
        df = query().release().collect()
        m.ms.append((time.perf_counter() - t) * 1e3)
        m.add_errors(df.to_dicts(), _PEER["exact"][key])
    m.noise = query().summarize().to_dicts()
    return m


def measure_opendp(
    tables: gen.Tables,
    exact: dict[str, Any],
    selected: list[PerfQuery],
    repeats: int,
    grid_step: float,
) -> list[Measured]:
    """OpenDP's Context API, each query in a forked process (see :func:`_opendp_query`)."""
    import multiprocessing

    _PEER.update(tables=tables, exact=exact, repeats=repeats, grid_step=grid_step)
    results = []
    for q in selected:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            m = pool.apply(_opendp_query, (q.key,))
        results.append(m)
        print(f"  {q.key:<7} (d) {m.median_ms:8.1f} ms", flush=True)
    return results


def gateway_noise(services: Any, analyst: Any, selected: list[PerfQuery]) -> dict[str, Any]:
    """Each query's statistics as ``explain`` states them: kind, sensitivity, ε, noise scale
    (fixed-point units for sums: cents for spend)."""
    noise = {}
    for q in selected:
        body = {"plan": q.plan, "epsilon": EPSILON}
        explained = queries.explain_query(services, analyst, gen.COLLABORATION, body)
        noise[q.key] = explained["statistics"]
    return noise


def grid_step_of(services: Any, analyst: Any) -> float:
    body = {"plan": QUERIES[-1].plan, "epsilon": EPSILON}
    explained = queries.explain_query(services, analyst, gen.COLLABORATION, body)
    for entry in explained["aggregates"]:
        if isinstance(entry, dict) and entry.get("grid_step"):
            return float(entry["grid_step"])
    raise RuntimeError("explain gave no grid step for the median")


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=gen.DEFAULT_SEED)
    parser.add_argument("--data-dir", type=Path, help="keep the gateway store here (reused)")
    parser.add_argument("--systems", default="abcd", help="subset of a, b, c, d")
    parser.add_argument("--queries", default=",".join(q.key for q in QUERIES))
    parser.add_argument("--opendp-repeats", type=int, default=3)
    parser.add_argument("--label", default="", help="a label for this run (e.g. before)")
    args = parser.parse_args()
    selected = [q for q in QUERIES if q.key in args.queries.split(",")]

    run_start = time.perf_counter()
    loads: dict[str, float] = {"start": load_average()}
    t = time.perf_counter()
    tables = gen.generate(args.customers, args.seed)
    print(f"generated 2 × {args.customers:,} customers in {time.perf_counter() - t:.1f} s")
    floor = Floor(tables)
    exact = {q.key: floor.exact(q) for q in selected}
    epsilons = Epsilons()

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory()
        data_dir = Path(tmp.name) / "gateway"
    else:
        data_dir = args.data_dir
    measured: list[Measured] = []
    try:
        t = time.perf_counter()
        services, state = gen.open_gateway(data_dir, tables, args.seed)
        print(
            f"gateway store ready in {time.perf_counter() - t:.1f} s (upload {state['upload_s']} s)"
        )
        analyst = authenticate(services, f"Bearer {state['keys']['acme']['analyst']}")
        grid_step = grid_step_of(services, analyst)
        noise = gateway_noise(services, analyst, selected)
        if "b" in args.systems:
            print("(a) floor vs (b) gateway in process:", flush=True)
            loads["ab_start"] = load_average()
            floors, gateways = measure_in_process(
                services, analyst, floor, exact, selected, args.repeats, epsilons
            )
            loads["ab_end"] = load_average()
            measured += floors + gateways
        services.close()
        del services, analyst  # their decrypted tables: gone before the peer runs
        gc.collect()
        if "c" in args.systems:
            print("(a) floor vs (c) HTTP + SDK, server in a second process:", flush=True)
            with gen.serving(data_dir) as url:
                loads["ac_start"] = load_average()
                floors, https = measure_http(
                    url,
                    state["keys"]["acme"]["analyst"],
                    floor,
                    exact,
                    selected,
                    args.repeats,
                    epsilons,
                )
                loads["ac_end"] = load_average()
            measured += floors + https
    finally:
        if tmp is not None:
            tmp.cleanup()
    floor.con.close()
    if "d" in args.systems:
        print("(d) OpenDP Polars:", flush=True)
        loads["d_start"] = load_average()
        measured += measure_opendp(tables, exact, selected, args.opendp_repeats, grid_step)
        loads["d_end"] = load_average()
    loads["end"] = load_average()
    for m in measured:
        if m.system in ("b_gateway", "c_http"):
            m.noise = noise.get(m.query.key)
    report(measured, args, loads, time.perf_counter() - run_start)


def report(measured: list[Measured], args: Any, loads: dict[str, float], run_s: float) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    versions = {p: version(p) for p in ("duckdb", "opendp", "pyarrow", "numpy")}
    with RESULTS.open("a") as fh:
        for m in measured:
            line = {
                "bench": "perf",
                "at": now,
                "label": args.label or None,
                "system": m.system,
                "query": m.query.key,
                "title": m.query.title,
                "customers": args.customers,
                "epsilon": EPSILON,
                "repeats": len(m.ms),
                "median_ms": round(m.median_ms, 1),
                "min_ms": round(min(m.ms), 1) if m.ms else None,
                "max_ms": round(max(m.ms), 1) if m.ms else None,
                "cold_ms": None if m.cold_ms is None else round(m.cold_ms, 1),
                "admit_ms": None if m.admit_ms is None else round(m.admit_ms, 1),
                "median_rel_error": m.median_rel_error() if m.rel_errors else None,
                "median_rel_error_by_output": {
                    k: float(np.median(v)) for k, v in m.rel_errors.items()
                },
                "note": m.note or None,
                "noise": m.noise,
                "load_average": loads,
                "run_s": round(run_s, 1),
                "versions": versions,
                "machine": machine,
            }
            fh.write(json.dumps(line) + "\n")
    by = {(m.system, m.query.key): m for m in measured}
    print()
    print(f"{args.customers:,} customers, ε = {EPSILON}, load average {loads}")
    print("| query | (a) ms | (b) ms | (c) ms | (d) ms | b/a | c/a | d/c | err gw | err OpenDP |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for q in QUERIES:
        a, b = by.get(("a_floor", q.key)), by.get(("b_gateway", q.key))
        a2, c = by.get(("a_floor_http_phase", q.key)), by.get(("c_http", q.key))
        d = by.get(("d_opendp", q.key))
        if not any((a, b, c, d)):
            continue

        def ms(x: Measured | None) -> str:
            return "" if x is None else f"{x.median_ms:,.0f}"

        def ratio(x: Measured | None, y: Measured | None) -> str:
            return "" if x is None or y is None else f"{x.median_ms / y.median_ms:.2f}"

        gw_errors = [e for x in (b, c) if x for v in x.rel_errors.values() for e in v]
        err = f"{np.median(gw_errors):.2e}" if gw_errors else ""
        derr = f"{d.median_rel_error():.2e}" if d else ""
        print(
            f"| {q.key} | {ms(a or a2)} | {ms(b)} | {ms(c)} | {ms(d)} | {ratio(b, a)} "
            f"| {ratio(c, a2)} | {ratio(d, c)} | {err} | {derr} |"
        )


if __name__ == "__main__":
    main()
