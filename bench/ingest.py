"""Benchmark: ingest of a large Parquet upload (validation, tokenisation, encryption, storage).

Issue 6's target: a 10M-row upload at >= 1M rows/s with the server's peak memory under 2 GB.

Generates a customer table shaped like the demo's ``bigmart.loyalty`` (8 columns, one row per
customer, distinct keys) as a Parquet file in a temporary directory (in a child process, so
the measuring processes start clean), then uploads it twice into fresh demo stores:

* ``inproc``: in a child process, through the service layer exactly as the HTTP route does it:
  the body is streamed into a sealed spool (1 MiB reads), then ``upload_dataset`` parses,
  checks, tokenises and seals it into the dataset file. Timed from the first byte spooled to
  the catalog row; peak RSS is that process's VmHWM, reset just before the upload.
* ``http``: a real ``insightgw serve --demo`` child on 127.0.0.1, the SDK's
  ``GatewayClient.upload`` streaming the file. Timed around the SDK call; peak RSS is the
  server's VmHWM (``/proc/<pid>/status``), reset just before the upload.

Both check the stored version (rows, one row per customer) and read it back once (the query
engine's decrypt-to-Arrow path), which is timed too. One JSON line per mode, with machine
information and the load average before and after, goes to ``bench/results/ingest.jsonl``.

Usage:
    python bench/ingest.py [--rows 10000000] [--modes inproc,http] [--profile out.html]
    python bench/ingest.py --rows 1000000 --modes inproc --no-record   # a quick look
    INGEST_BENCH_TREE=/path/to/older/checkout python bench/ingest.py --note before
        # the same measurement of another source tree (e.g. ``git archive`` of an older
        # commit): how the "before" figures in bench/README.md were taken
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("INGEST_BENCH_TREE", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results" / "ingest.jsonl"

COLLABORATION = "acme-bigmart-cx"
SEED_CUSTOMERS = 1_000
BLOCK = 1_000_000
READ_BYTES = 1 << 20


def _status(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory figure in MiB (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def _reset_peak(pid: int | str) -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def machine() -> dict[str, Any]:
    import cryptography
    import duckdb
    import pyarrow

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(),
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        "cryptography": cryptography.__version__,
        "commit": commit,
        "tree": str(ROOT),
    }


def generate(path: Path, rows: int) -> None:
    """Write ``rows`` loyalty rows (distinct keys) to ``path``, a million at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from gateway.demo.data import generate_demo_tables

    writer: pq.ParquetWriter | None = None
    for block, start in enumerate(range(0, rows, BLOCK)):
        size = min(BLOCK, rows - start)
        table = generate_demo_tables(customers=max(size, 100), seed=block + 1).loyalty
        table = table.slice(0, size)
        keys = pc.binary_join_element_wise(f"B{block:03d}-", table.column("customer_key"), "")
        table = table.set_column(0, "customer_key", keys.cast(pa.string()))
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table)
    assert writer is not None
    writer.close()


def _seeded_store(data_dir: Path) -> tuple[Any, dict[str, Any]]:
    from gateway.config import Settings
    from gateway.demo.seed import seed_demo
    from gateway.service.context import open_services

    settings = Settings(data_dir=data_dir, demo=True, demo_customers=SEED_CUSTOMERS)
    services = open_services(settings)
    keys = seed_demo(services, customers=SEED_CUSTOMERS, progress=lambda _: None)
    return services, keys


def _read_back(services: Any, repeats: int = 3) -> dict[str, Any]:
    """Decrypt the stored version into Arrow (the query engine's cold path), best of
    ``repeats`` after a warm-up, interleaved with the same table in the earlier
    single-message zstd format."""
    import io

    import pyarrow.parquet as pq

    from gateway.store.files import DatasetFiles

    dv = services.catalog.latest_datasets(COLLABORATION)["bigmart.loyalty"]
    root = services.settings.datasets_dir

    def once(version: Any) -> tuple[float, Any]:
        files = DatasetFiles(root, services.keyring)  # a fresh cache each time
        start = time.perf_counter()
        table = files.read(version)
        return time.perf_counter() - start, table

    seconds, table = once(dv)  # warms the page cache and Arrow's allocator for both formats
    assert table.num_rows == dv.rows
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")  # what files.py wrote before
    old_file = dv.file.replace(".parquet.enc", ".single.enc")
    wrapped, blob = services.keyring.seal(buffer.getvalue(), dv.aad)
    del buffer
    (root / old_file).write_bytes(blob)
    old = dataclasses.replace(dv, file=old_file, wrapped_key=wrapped)
    seconds, old_table = once(old)
    assert old_table.equals(table)
    del table, old_table
    chunked, single = [], []
    for _ in range(repeats):  # interleaved, so that load drifts hit both alike
        chunked.append(once(dv)[0])
        single.append(once(old)[0])
    chunked_s, single_s = min(chunked), min(single)
    return {
        "read_back_s": round(chunked_s, 3),
        "read_back_single_message_zstd_s": round(single_s, 3),
        "stored_mib": round((root / dv.file).stat().st_size / 2**20, 1),
        "stored_single_message_zstd_mib": round(len(blob) / 2**20, 1),
        "stored_max_rows_per_customer": int(dv.max_rows_per_customer),
        "stored_rows": int(dv.rows),
    }


def run_inproc(source: Path, data_dir: Path, profile: Path | None) -> dict[str, Any]:
    """The upload through the service layer, in this (fresh) process."""
    from gateway.service import datasets
    from gateway.service.access import authenticate

    services, keys = _seeded_store(data_dir)
    principal = authenticate(services, f"Bearer {keys['bigmart']['contributor']}")
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
    base_rss = _status("self", "VmRSS")
    _reset_peak("self")
    if profiler is not None:
        profiler.start()
    cpu_start = time.process_time()
    start = time.perf_counter()
    if hasattr(datasets, "open_spool"):
        with datasets.open_spool(services) as spool, source.open("rb") as body:
            while chunk := body.read(READ_BYTES):
                spool.write(chunk)
            spooled = time.perf_counter()
            answer = datasets.upload_dataset(
                services, principal, COLLABORATION, "loyalty", spool, "parquet"
            )
    else:  # a tree from before the sealed spool: a plaintext spool file, as its route did
        plain = services.settings.upload_tmp_dir / "bench.upload"
        plain.parent.mkdir(parents=True, exist_ok=True)
        with plain.open("wb") as out, source.open("rb") as body:
            while chunk := body.read(READ_BYTES):
                out.write(chunk)
        spooled = time.perf_counter()
        try:
            answer = datasets.upload_dataset(
                services, principal, COLLABORATION, "loyalty", plain, "parquet"
            )
        finally:
            plain.unlink()
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.stop()
    cpu = time.process_time() - cpu_start
    peak = _status("self", "VmHWM")
    if profiler is not None and profile is not None:
        profile.write_text(profiler.output_html())
        print(profiler.output_text(unicode=True, color=False, show_all=False), file=sys.stderr)
    result = {
        "rows": answer["rows"],
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "spool_seconds": round(spooled - start, 3),
        "rows_per_s": round(answer["rows"] / seconds),
        "peak_rss_mib": peak,
        "rss_before_mib": base_rss,
    }
    result |= _read_back(services)
    services.close()
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_http(source: Path, data_dir: Path) -> dict[str, Any]:
    """The upload with the SDK to a real ``insightgw serve --demo`` child process."""
    from clients import GatewayClient
    from gateway.config import Settings
    from gateway.service.context import open_services

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_DEMO_CUSTOMERS": str(SEED_CUSTOMERS), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--demo", "--host", "127.0.0.1"]
        + ["--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        keys_file = data_dir / "demo-keys.json"
        deadline = time.monotonic() + 120
        while not keys_file.exists() or not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.2)
        keys = json.loads(keys_file.read_text())
        client = GatewayClient(url, keys["bigmart"]["contributor"], timeout=1800)
        base_rss = _status(server.pid, "VmRSS")
        _reset_peak(server.pid)
        cpu_start = _cpu_seconds(server.pid)
        start = time.perf_counter()
        answer = client.upload(COLLABORATION, "loyalty", source)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds(server.pid) - cpu_start
        peak = _status(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = {
        "rows": answer["rows"],
        "seconds": round(seconds, 3),
        "server_cpu_seconds": round(cpu, 3),
        "rows_per_s": round(answer["rows"] / seconds),
        "peak_rss_mib": peak,
        "rss_before_mib": base_rss,
    }
    services = open_services(Settings(data_dir=data_dir, demo=True))
    try:
        rows, max_rows = _stored(services)
    finally:
        services.close()
    return result | {"stored_rows": rows, "stored_max_rows_per_customer": max_rows}


def _stored(services: Any) -> tuple[int, int]:
    dv = services.catalog.latest_datasets(COLLABORATION)["bigmart.loyalty"]
    return int(dv.rows), int(dv.max_rows_per_customer)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _child(args: list[str]) -> dict[str, Any]:
    """Run this script in a fresh process for one step; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"step {args[:2]} failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--modes", default="inproc,http")
    parser.add_argument("--source", type=Path, default=None, help="reuse this Parquet file")
    parser.add_argument("--profile", type=Path, default=None, help="pyinstrument HTML (inproc)")
    parser.add_argument("--no-record", action="store_true", help="do not append to results")
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--step", choices=["generate", "inproc", "http"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step == "generate":
        start = time.perf_counter()
        generate(args.source, args.rows)
        print(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
        return
    if args.step == "inproc":
        print(json.dumps(run_inproc(args.source, args.dir, args.profile)))
        return
    if args.step == "http":
        print(json.dumps(run_http(args.source, args.dir)))
        return

    info = machine()
    with tempfile.TemporaryDirectory(prefix="igw-bench-ingest-") as tmp:
        work = Path(tmp)
        source = args.source
        if source is None:
            source = work / "loyalty.parquet"
            made = _child(["--step", "generate", "--rows", str(args.rows), "--source", str(source)])
            print(f"generated {args.rows:,} rows in {made['seconds']} s", file=sys.stderr)
        for mode in [m for m in args.modes.split(",") if m]:
            data_dir = work / f"var-{mode}"
            load_before = os.getloadavg()
            step = ["--step", mode, "--source", str(source), "--dir", str(data_dir)]
            if mode == "inproc" and args.profile is not None:
                step += ["--profile", str(args.profile)]
            result = _child(step)
            line = {
                "bench": "ingest",
                "mode": mode,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source_mib": round(source.stat().st_size / 2**20, 1),
                **result,
                "load_avg_before": [round(x, 2) for x in load_before],
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                "note": args.note,
                "machine": info,
            }
            shutil.rmtree(data_dir, ignore_errors=True)
            print(json.dumps(line))
            if not args.no_record:
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                with RESULTS.open("a") as fh:
                    fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
