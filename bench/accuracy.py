"""Benchmark: accuracy of the gateway's releases next to OpenDP's own Polars API.

One synthetic retailer table (one row per customer: region, store, channel, spend, nps) is
uploaded to an in-process gateway through the service layer (tokenise, validate, encrypt), and
four queries are asked at ε = 1 each, ``--repeats`` times:

  * count by region (10 public keys);
  * sum of spend, clamped to [0, 2000], by region;
  * mean of nps (0..10) by store (1,000 public keys);
  * median of spend by channel (3 public keys).

The same queries run through OpenDP's Polars API (``dp.Context.compositor``) on the same data,
with the same privacy unit (one row = one customer, add/remove), the same bounds, the same ε per
query and the public keys as margins (``invariant="keys"``). OpenDP's median needs a candidate
list: the baseline is a 1-unit grid over the bounds; it is also run on the gateway's own grid
(read from ``explain``) and on a 0.01 grid, to separate the grid from the mechanism.

Error: for every group of every repetition, |noisy − exact| / |exact|, where the exact answer is
computed with numpy over the same (clamped) data; the figure is the median over all of them.
Timing: wall-clock per query. Gateway: ``run_query`` in process (parse, check, reserve budget,
DuckDB, OpenDP noise, store the release, audit), after one warm-up query that decrypts the
table. OpenDP: from building the Context to the collected release (its scale search included).

Appends one JSON line per (system, query) to bench/results/accuracy.jsonl and refreshes the
"Accuracy at ε=1" section of bench/README.md.

Usage: python bench/accuracy.py [--customers N] [--repeats R] [--seed S] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import Settings  # noqa: E402
from gateway.domain.model import Principal  # noqa: E402
from gateway.service import admin, datasets, policies, queries  # noqa: E402
from gateway.service.access import authenticate  # noqa: E402
from gateway.service.context import Services, open_services  # noqa: E402

EPSILON = 1.0
SPEND_BOUNDS = (0.0, 2000.0)
NPS_BOUNDS = (0, 10)
COLLABORATION = "retail-bench"
DATASET = "bigmart.customers"
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
STORES = tuple(f"store_{i:04d}" for i in range(1000))
CHANNELS = ("store", "online", "app")
RESULTS = ROOT / "bench" / "results" / "accuracy.jsonl"
README = ROOT / "bench" / "README.md"
SECTION = "## Accuracy at ε=1"

POLICY = f"""\
collaboration: {COLLABORATION}
privacy: {{mechanism: laplace, max_epsilon_per_query: 1.0, delta: 1.0e-7}}
budgets:
  acme: {{epsilon: 1000000.0, period: none}}
datasets:
  {DATASET}:
    owner: bigmart
    customer_key: customer_id
    max_rows_per_unit: 1
    columns:
      region:  {{use: dimension, keys: [{", ".join(REGIONS)}]}}
      store:   {{use: dimension, keys: [{", ".join(STORES)}]}}
      channel: {{use: dimension, keys: [{", ".join(CHANNELS)}]}}
      spend:   {{use: measure, type: float, bounds: [0, 2000], aggregates: [sum, mean, quantile]}}
      nps:     {{use: measure, type: int, bounds: [0, 10], aggregates: [mean, quantile]}}
rules: {{min_group_size: 0, max_groups_per_query: 10000}}
"""


# --- data ------------------------------------------------------------------------------------


def generate(customers: int, seed: int) -> pa.Table:
    """One row per customer. numpy's generator is fine here: this is data, not privacy noise.

    Region and store sizes vary (Dirichlet shares), spend is lognormal (median ≈ 70, about 0.1%
    above the policy's upper bound of 2000, rounded to cents), nps is an integer 0..10 whose
    mean varies by store.
    """
    rng = np.random.default_rng(seed)
    region = rng.choice(len(REGIONS), size=customers, p=rng.dirichlet(np.full(len(REGIONS), 5)))
    store = rng.choice(len(STORES), size=customers, p=rng.dirichlet(np.full(len(STORES), 3)))
    channel = rng.choice(len(CHANNELS), size=customers, p=[0.55, 0.30, 0.15])
    log_spend = (
        4.1
        + np.array([0.0, 0.35, 0.15])[channel]
        + rng.normal(0.0, 0.1, len(REGIONS))[region]
        + rng.normal(0.0, 1.05, customers)
    )
    spend = np.round(np.exp(log_spend), 2)
    store_mood = rng.normal(7.0, 0.8, len(STORES))
    nps = np.clip(np.rint(rng.normal(store_mood[store], 2.2)), 0, 10).astype(np.int64)
    digits = np.char.zfill(np.arange(customers).astype(str), 8)
    return pa.table(
        {
            "customer_id": pa.array(np.char.add("C", digits)),
            "region": pa.array(np.asarray(REGIONS)[region]),
            "store": pa.array(np.asarray(STORES)[store]),
            "channel": pa.array(np.asarray(CHANNELS)[channel]),
            "spend": pa.array(spend, pa.float64()),
            "nps": pa.array(nps, pa.int64()),
        }
    )


@dataclass(frozen=True)
class Query:
    key: str
    title: str
    dimension: str
    keys: tuple[str, ...]
    aggregate: dict[str, Any]


QUERIES = (
    Query("count", "count by region (10 groups)", "region", REGIONS, {"fn": "count"}),
    Query(
        "sum",
        "sum of spend by region (10 groups)",
        "region",
        REGIONS,
        {"fn": "sum", "column": "spend"},
    ),
    Query(
        "mean",
        "mean NPS by store (1,000 groups)",
        "store",
        STORES,
        {"fn": "mean", "column": "nps"},
    ),
    Query(
        "median",
        "median spend by channel (3 groups)",
        "channel",
        CHANNELS,
        {"fn": "median", "column": "spend"},
    ),
)


def exact_answers(table: pa.Table) -> dict[str, dict[str, float]]:
    """The exact answer of every query per group, over the data clamped as the policy says."""
    spend = np.clip(table["spend"].to_numpy(), *SPEND_BOUNDS)
    nps = np.clip(table["nps"].to_numpy(), *NPS_BOUNDS).astype(np.float64)

    def codes(q: Query) -> np.ndarray:
        index = pc.index_in(table[q.dimension], value_set=pa.array(q.keys))
        return index.to_numpy().astype(np.int64)  # every value is a key: no nulls

    out: dict[str, dict[str, float]] = {}
    for q in QUERIES:
        g = codes(q)
        counts = np.bincount(g, minlength=len(q.keys)).astype(np.float64)
        if q.key == "count":
            values = counts
        elif q.key == "sum":
            values = np.bincount(g, weights=spend, minlength=len(q.keys))
        elif q.key == "mean":
            sums = np.bincount(g, weights=nps, minlength=len(q.keys))
            values = np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
        else:
            values = np.array(
                [np.median(spend[g == i]) if counts[i] else np.nan for i in range(len(q.keys))]
            )
        out[q.key] = {k: float(v) for k, v in zip(q.keys, values, strict=True)}
    return out


# --- measurement -------------------------------------------------------------------------------


@dataclass
class Measured:
    system: str
    query: Query
    variant: str = ""
    rel_errors: list[float] = field(default_factory=list)
    abs_errors: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    noise: Any = None

    def add(self, released: dict[str, float], exact: dict[str, float], seconds: float) -> None:
        # Empty groups (tiny --customers only) have no relative error; OpenDP omits them.
        scored = {k: v for k, v in exact.items() if np.isfinite(v) and v != 0}
        if not set(scored) <= set(released):
            raise RuntimeError(f"{self.system} {self.query.key}: a non-empty group is missing")
        for k, truth in scored.items():
            self.abs_errors.append(abs(released[k] - truth))
            self.rel_errors.append(abs(released[k] - truth) / abs(truth))
        self.ms.append(seconds * 1e3)

    @property
    def median_rel_error(self) -> float:
        return float(np.median(self.rel_errors))


def _principal(services: Services, secret: str) -> Principal:
    return authenticate(services, f"Bearer {secret}")


def open_gateway(tmp: Path, table: pa.Table) -> tuple[Services, Principal]:
    """Organisations, keys, collaboration, policy and upload, as gateway/demo/seed.py does."""
    services = open_services(Settings(data_dir=tmp, demo=True))
    for org_id, name, kind in (
        ("operator", "Gateway operator", "operator"),
        ("acme", "ACME Brands", "brand"),
        ("bigmart", "BigMart Retail", "retailer"),
    ):
        admin.create_org(services, None, org_id, name, kind)
    operator = _principal(services, admin.issue_key(services, None, "operator", "admin")["secret"])
    keys = {
        org: {role: admin.issue_key(services, None, org, role)["secret"] for role in roles}
        for org, roles in (("acme", ("analyst",)), ("bigmart", ("compliance", "contributor")))
    }
    admin.create_collaboration(
        services, operator, COLLABORATION, "Accuracy benchmark", ["acme", "bigmart"]
    )
    policies.put_policy(
        services,
        _principal(services, keys["bigmart"]["compliance"]),
        COLLABORATION,
        POLICY.encode(),
        "application/yaml",
    )
    spool_dir = services.settings.upload_tmp_dir
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    spool = spool_dir / "customers.parquet"
    pq.write_table(table, spool)
    try:
        datasets.upload_dataset(
            services,
            _principal(services, keys["bigmart"]["contributor"]),
            COLLABORATION,
            DATASET.split(".", 1)[1],
            spool,
            "parquet",
        )
    finally:
        spool.unlink(missing_ok=True)
    return services, _principal(services, keys["acme"]["analyst"])


def _body(q: Query, epsilon: float) -> dict[str, Any]:
    return {
        "plan": {
            "from": DATASET,
            "group_by": [q.dimension],
            "aggregates": [{**q.aggregate, "as": "v"}],
        },
        "epsilon": epsilon,
    }


def _retrying(call: Callable[[], Any], attempts: int = 5, wait_s: float = 120.0) -> Any:
    """The gateway is edited concurrently: an in-progress change may break a call for a while."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # report and retry whatever broke
            if attempt == attempts - 1:
                raise
            print(f"  gateway call failed ({type(exc).__name__}: {exc}); retrying in {wait_s:.0f}s")
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def measure_gateway(
    services: Services,
    analyst: Principal,
    exact: dict[str, dict[str, float]],
    repeats: int,
) -> tuple[list[Measured], dict[str, Any]]:
    warm = {**_body(QUERIES[0], 0.5)}
    warm["plan"] = {**warm["plan"], "group_by": ["channel"]}
    _retrying(lambda: queries.run_query(services, analyst, COLLABORATION, warm))
    results, explained = [], {}
    serial = 0
    for q in QUERIES:
        m = Measured("gateway", q)
        try:
            explained[q.key] = queries.explain_query(
                services, analyst, COLLABORATION, _body(q, EPSILON)
            )
            m.noise = {
                "statistics": explained[q.key].get("statistics"),
                "aggregates": explained[q.key].get("aggregates"),
            }
        except Exception as exc:  # explain is informative only
            m.noise = {"explain_failed": type(exc).__name__}
        for _ in range(repeats):
            body = _body(q, EPSILON - serial * 1e-9)  # a new ε: never a replay
            serial += 1
            t = time.perf_counter()
            release = _retrying(
                lambda body=body: queries.run_query(services, analyst, COLLABORATION, body)
            )
            seconds = time.perf_counter() - t
            if release.get("replay"):
                raise RuntimeError("a repetition was answered from the replay cache")
            values = {row[q.dimension]: float(row["v"]["value"]) for row in release["rows"]}
            m.add(values, exact[q.key], seconds)
        results.append(m)
        print(f"  gateway  {q.key:<6} median rel. error {m.median_rel_error:.3e}")
    return results, explained


def gateway_grid(explained: dict[str, Any]) -> float:
    """Step of the gateway's median candidate grid, from explain (fallback: its default)."""
    for entry in explained.get("median", {}).get("aggregates", []):
        if isinstance(entry, dict) and entry.get("grid_step"):
            return float(entry["grid_step"])
    return (SPEND_BOUNDS[1] - SPEND_BOUNDS[0]) / 16384


def measure_opendp(
    table: pa.Table, exact: dict[str, dict[str, float]], repeats: int, grid_step: float
) -> list[Measured]:
    import opendp.prelude as dp
    import polars as pl

    dp.enable_features("contrib")
    lf = pl.from_arrow(table.drop_columns(["customer_id"])).lazy()  # type: ignore[union-attr]
    n = table.num_rows
    lo, hi = SPEND_BOUNDS

    def grid(step: float) -> list[float]:
        count = round((hi - lo) / step)
        return [lo + i * step for i in range(count + 1)]

    spend = pl.col("spend").fill_null(0.0)
    nps = pl.col("nps").fill_null(0)
    variants: list[tuple[Query, str, Any]] = [
        (QUERIES[0], "", pl.len().dp.noise()),
        (QUERIES[1], "", spend.dp.sum(bounds=SPEND_BOUNDS)),
        (QUERIES[2], "", nps.dp.mean(bounds=NPS_BOUNDS)),
    ]
    for label, step in (
        ("a 1-unit grid", 1.0),
        (f"the gateway's grid (step {grid_step:g})", grid_step),
        ("a 0.01 grid", 0.01),
    ):
        candidates = grid(step)
        variant = f"{label}, {len(candidates):,} candidates"
        variants.append((QUERIES[3], variant, spend.dp.quantile(0.5, candidates)))

    def query(q: Query, expr: Any) -> Any:
        context = dp.Context.compositor(
            data=lf,
            privacy_unit=dp.unit_of(contributions=1),
            privacy_loss=dp.loss_of(epsilon=EPSILON),
            split_evenly_over=1,
            margins=[
                dp.polars.Margin(
                    by=[q.dimension], invariant="keys", max_length=n, max_groups=len(q.keys)
                )
            ],
        )
        return context.query().group_by(q.dimension).agg(expr.alias("v"))

    results = []
    for q, variant, expr in variants:
        m = Measured("opendp-polars", q, variant)
        m.noise = query(q, expr).summarize().to_dicts()
        for _ in range(repeats):
            t = time.perf_counter()
            df = query(q, expr).release().collect()
            seconds = time.perf_counter() - t
            values = {str(k): float(v) for k, v in zip(df[q.dimension], df["v"], strict=True)}
            m.add(values, exact[q.key], seconds)
        results.append(m)
        print(f"  opendp   {q.key:<6} median rel. error {m.median_rel_error:.3e}  {variant}")
    return results


# --- reporting ---------------------------------------------------------------------------------


def _fmt_err(x: float) -> str:
    return f"{x:.2e}"


def _fmt_ms(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}"


def readme_section(gateway: list[Measured], opendp: list[Measured], meta: dict[str, Any]) -> str:
    by_key = {m.query.key: m for m in gateway}
    customers = meta["customers"]
    lines = [
        f"{SECTION} on {customers:,} customers",
        "",
        f"`accuracy.py --customers {customers} --repeats {meta['repeats']}` "
        f"({meta['cpus']} cores, {meta['date']}, whole run {meta['run_s']:.0f} s; opendp "
        f"{meta['versions']['opendp']}, polars {meta['versions']['polars']}, duckdb "
        f"{meta['versions']['duckdb']}). One synthetic retailer table, one row per customer; "
        "ε = 1 per query; spend clamped to [0, 2000], NPS in [0, 10]. Error: the median, over "
        f"all groups and {meta['repeats']} repetitions, of |noisy − exact| / |exact|. Time: "
        "median wall-clock per query (gateway: `run_query` in process, table already "
        "decrypted; OpenDP: Context to collected release).",
        "",
        "| query | gateway median rel. error | OpenDP Polars median rel. error | gateway ms "
        "| OpenDP ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in opendp:
        g = by_key[m.query.key]
        title = m.query.title + (f"; OpenDP's candidates: {m.variant}" if m.variant else "")
        lines.append(
            f"| {title} | {_fmt_err(g.median_rel_error)} | {_fmt_err(m.median_rel_error)} "
            f"| {_fmt_ms(g.ms)} | {_fmt_ms(m.ms)} |"
        )
    lines += [
        "",
        "Both sides use one row per customer (add/remove neighbours), the same bounds and the "
        "public keys. Counts and sums get the same noise on both sides (discrete Laplace of "
        "scale 1 for counts; scale 2000 for sums, the gateway's on integer cents, OpenDP's on "
        "floats), so those rows differ only by chance: each figure is the median of "
        f"{meta['repeats']} × 10 draws, and a count's noise is 0 with probability 0.46. Means: "
        "the gateway releases centre + noisy centred sum / noisy count with ε split evenly, so "
        "its sum noise has half the scale of OpenDP's `dp.mean` (plain sum / count; for NPS, "
        "sum noise of scale 10 against 20). Medians: both use the exponential mechanism "
        "(report noisy min, scale 2/ε) over a candidate grid, and at this size both pick the "
        "grid point nearest the median, "
        "so the grid sets the error: the gateway picks its own (step "
        f"{meta['grid_step']:g} here, `grid_step` in `explain`) and matches OpenDP on the same "
        "grid; OpenDP needs the candidate list from the analyst, and spend is in cents, so a "
        "0.01 grid holds the exact median.",
        "",
        "Figures per run, with the noise scales: `results/accuracy.jsonl`.",
        "",
    ]
    return "\n".join(lines)


def refresh_readme(section: str) -> None:
    text = README.read_text()
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        rest = "" if end == -1 else text[end + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    README.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--no-readme", action="store_true", help="do not refresh bench/README.md")
    args = parser.parse_args()

    t_run = time.perf_counter()
    t = time.perf_counter()
    table = generate(args.customers, args.seed)
    exact = exact_answers(table)
    print(f"generated {args.customers:,} customers in {time.perf_counter() - t:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        services, analyst = open_gateway(Path(tmp), table)
        upload_s = time.perf_counter() - t
        print(f"gateway: set up and uploaded in {upload_s:.1f} s")
        try:
            gateway, explained = measure_gateway(services, analyst, exact, args.repeats)
        finally:
            services.close()
    grid_step = gateway_grid(explained)
    opendp = measure_opendp(table, exact, args.repeats, grid_step)
    run_s = time.perf_counter() - t_run

    now = datetime.now(UTC)
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    versions = {p: version(p) for p in ("opendp", "polars", "duckdb", "numpy")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        for m in [*gateway, *opendp]:
            line = {
                "bench": "accuracy",
                "at": now.isoformat(timespec="seconds"),
                "system": m.system,
                "query": m.query.key,
                "title": m.query.title,
                "variant": m.variant or None,
                "customers": args.customers,
                "groups": len(m.query.keys),
                "epsilon": EPSILON,
                "repeats": args.repeats,
                "seed": args.seed,
                "median_rel_error": m.median_rel_error,
                "p90_rel_error": float(np.quantile(m.rel_errors, 0.9)),
                "median_abs_error": float(np.median(m.abs_errors)),
                "median_ms": round(statistics.median(m.ms), 1),
                "max_ms": round(max(m.ms), 1),
                "noise": m.noise,
                "gateway_upload_s": round(upload_s, 2),
                "run_s": round(run_s, 1),
                "versions": versions,
                "machine": machine,
            }
            fh.write(json.dumps(line, default=str) + "\n")
    section = readme_section(
        gateway,
        opendp,
        {
            "customers": args.customers,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "date": now.date().isoformat(),
            "run_s": run_s,
            "versions": versions,
            "grid_step": grid_step,
        },
    )
    print()
    print(section)
    if not args.no_readme:
        refresh_readme(section)


if __name__ == "__main__":
    main()
