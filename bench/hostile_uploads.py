"""Benchmark: hostile uploads at full size against a real gateway process, with its peak memory.

Runs every hostile upload of ``tests/integration/test_int_hostile_uploads.py`` against
``python -m gateway.cli serve --demo`` (2,000 customers per partner) on 127.0.0.1, in a
temporary data directory, with the default settings (so the default ``max_decoded_bytes`` of
8 GiB and ``max_upload_bytes`` of 4 GiB apply), and the cases the suite can only run small at
full size:

- a 1 GiB single CSV line and a 1 GiB CSV header line, streamed from a generator in 1 MiB
  chunks (never built in memory);
- a Parquet decompression bomb of 254 KiB that decodes to 10.5 GiB (dictionary-encoded
  strings, zstd), written to a temporary file and streamed from it;
- 100,000 columns in CSV and in Parquet.

Beyond the issue's list it also sends two bombs of other shapes: an Arrow IPC stream whose one
record batch is zstd-compressed (50 KiB on the wire, 1.5 GiB as read, 11.9 GiB with its
dictionaries expanded), and a Parquet file whose one row holds a 512 MiB customer key.

For each case it records the status and error code, the seconds the request took, and the
server process's peak resident memory during the case: its ``VmHWM`` from /proc, reset before
each case by writing 5 to ``/proc/<pid>/clear_refs`` (a server still holding more than 256 MiB
over its start-up size from an earlier case is restarted first, so figures do not carry over),
and what it still holds afterwards. Right after each case it checks that
``GET /v1/health`` answers 200 and that a normal query (count by region, a fresh ε each time
so that it is not a replay) answers 200. A watchdog samples the server's RSS every 10 ms and
SIGKILLs it above ``--max-rss-gib`` (default 6) so that a runaway case cannot take a shared
machine down; a killed or dead server is reported and restarted for the next case.

By default the server runs from a snapshot of ``HEAD`` (``git archive``), not the working tree,
so the figures belong to a commit; ``--working-tree`` runs the checkout as it is.

Appends one JSON line per case (with the run's time, commit and machine) to
``bench/results/hostile_uploads.jsonl`` and prints a table. A case is flagged when its answer
is not a 4xx, when it took over 60 s, when the server's peak exceeded 1.5 GiB, or when the
server was not healthy right after.

Usage: python bench/hostile_uploads.py [--only SUBSTRING] [--max-rss-gib 6] [--working-tree]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
COLLABORATION = "acme-bigmart-cx"
CUSTOMERS = 2_000
START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 600.0
GIB = 1024**3
MIB = 1024**2
CHUNK = MIB
SLOW_S = 60.0
HEAVY_BYTES = int(1.5 * GIB)
RETAINED_LIMIT = 256 * MIB
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
LOYALTY_COLUMNS = [
    "customer_key",
    "region",
    "store_id",
    "channel",
    "spend_90d",
    "visits_90d",
    "nps_score",
    "email",
]

Body = bytes | Callable[[], Iterator[bytes]]
"""A body is either bytes, or a function that returns a fresh iterator of chunks (streamed)."""


# ---- bodies ---------------------------------------------------------------------------------


def loyalty_sample(rows: int = 200) -> pa.Table:
    """Rows shaped like the demo's ``bigmart.loyalty`` (what the policy describes)."""
    keys = [f"C{i:07d}" for i in range(rows)]
    return pa.table(
        {
            "customer_key": keys,
            "region": ["north", "south", "east", "west"] * (rows // 4),
            "store_id": [f"S{i % 50:03d}" for i in range(rows)],
            "channel": ["store", "online"] * (rows // 2),
            "spend_90d": np.linspace(0.0, 1999.0, rows),
            "visits_90d": np.arange(rows, dtype=np.int64) % 60,
            "nps_score": np.arange(rows, dtype=np.int64) % 11,
            "email": [f"{k}@example.com" for k in keys],
        }
    )


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with paipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=50)
    return bytes(sink.getvalue().to_pybytes())


def zigzag_varint(value: int) -> bytes:
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if not number:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def corrupt_footer(good: bytes) -> bytes:
    footer_len = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - footer_len
    return good[:start] + bytes([0xFF, 0x13, 0x37] * (footer_len // 3 + 1))[:footer_len] + good[-8:]


def forged_footer(good: bytes, rows: int) -> bytes:
    """The footer claims 2**40 rows instead of ``rows``."""
    footer_len = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - footer_len
    footer = good[start:-8].replace(zigzag_varint(rows), zigzag_varint(2**40))
    return good[:start] + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def streamed_line(head: bytes, size: int, tail: bytes) -> Callable[[], Iterator[bytes]]:
    """``head``, then ``size`` bytes of ``a`` in 1 MiB chunks, then ``tail``: O(1 MiB) memory."""

    def chunks() -> Iterator[bytes]:
        yield head
        block = b"a" * CHUNK
        left = size
        while left > 0:
            yield block if left >= CHUNK else block[:left]
            left -= CHUNK
        yield tail

    return chunks


def streamed_file(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while block := fh.read(CHUNK):
                yield block

    return chunks


def _bomb_columns(rows: int, key_length: int) -> dict[str, pa.Array]:
    """Loyalty columns of ``rows`` rows, every string one dictionary value repeated."""
    zeros = pa.array(np.zeros(rows, dtype=np.int32))

    def repeated(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(zeros, pa.array([value]))

    return {
        "customer_key": repeated("k" * key_length),
        "region": repeated("north"),
        "store_id": repeated("S001"),
        "channel": repeated("store"),
        "spend_90d": pa.array(np.ones(rows)),
        "visits_90d": pa.array(np.ones(rows, dtype=np.int64)),
        "nps_score": pa.array(np.full(rows, 5, dtype=np.int64)),
    }


def parquet_bomb(path: Path, decoded_target: int) -> int:
    """A zstd Parquet file whose strings are one dictionary value each; returns decoded bytes.

    Rows are written in row groups of 2**21 (about 2 MiB of indices per column in the bench's
    memory); the key is 600 characters, so a row decodes to about 680 bytes.
    """
    chunk, key_length = 2**21, 600
    table = pa.table(_bomb_columns(chunk, key_length))
    per_row = key_length + 5 + 4 + 5 + 4 * 8 + 3 * 8  # strings, their offsets, the numbers
    groups = -(-decoded_target // (per_row * chunk))
    with pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=False) as w:
        for _ in range(groups):
            w.write_table(table, row_group_size=chunk)
    return groups * chunk * per_row


def arrow_bomb(path: Path, rows: int, key_length: int) -> tuple[int, int]:
    """An Arrow IPC stream of one zstd-compressed record batch of ``rows`` rows.

    Every column reads one buffer of zeros (the bench holds ``8 * rows`` bytes): the numbers
    are 0, the strings are dictionary indices into one value each, the customer key a
    ``key_length``-character one. Returns the batch's bytes in memory and its decoded bytes
    (dictionaries expanded), which is what the gateway's guard counts.
    """
    zeros = pa.py_buffer(np.zeros(rows, dtype=np.int64))

    def number(kind: pa.DataType) -> pa.Array:
        return pa.Array.from_buffers(kind, rows, [None, zeros])

    def repeated(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(number(pa.int32()), pa.array([value]))

    table = pa.table(
        {
            "customer_key": repeated("k" * key_length),
            "region": repeated("north"),
            "store_id": repeated("S001"),
            "channel": repeated("store"),
            "spend_90d": number(pa.float64()),
            "visits_90d": number(pa.int64()),
            "nps_score": number(pa.int64()),
        }
    )
    options = paipc.IpcWriteOptions(compression="zstd")
    with (
        pa.OSFile(str(path), "wb") as sink,
        paipc.new_stream(sink, table.schema, options=options) as writer,
    ):
        writer.write_batch(table.to_batches(max_chunksize=rows)[0])
    in_memory = 4 * rows * 4 + 3 * rows * 8
    decoded = rows * (key_length + 5 + 4 + 5 + 4 * 8) + 3 * rows * 8
    return in_memory, decoded


def parquet_giant_cell(path: Path, size: int) -> None:
    """One row whose customer key is ``size`` bytes of ``k`` (zstd: tens of KiB on disk).

    Writing it takes about 3 times ``size`` of memory in the bench (page buffers).
    """
    data = np.full(size, ord("k"), dtype=np.uint8)
    keys = pa.StringArray.from_buffers(
        1, pa.py_buffer(np.array([0, size], dtype=np.int32)), pa.py_buffer(data)
    )
    one = {name: column[:1] for name, column in _bomb_columns(1, 1).items()}
    one["customer_key"] = keys
    pq.write_table(
        pa.table(one), path, compression="zstd", use_dictionary=False, write_statistics=False
    )


# ---- cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    content_type: str
    body: Body
    size: int  # bytes on the wire
    note: str = ""


def build_cases(work: Path, only: str | None) -> list[Case]:
    """Every case; the big ones are only built when selected (``--only``)."""
    wanted = (lambda name: only.lower() in name.lower()) if only else (lambda name: True)
    t = loyalty_sample()
    good_parquet = parquet_bytes(t)
    header = (",".join(t.column_names) + "\n").encode()
    arrow = arrow_bytes(t)
    cases: list[Case] = []

    def add(
        name: str, content_type: str, body: Body, size: int | None = None, note: str = ""
    ) -> None:
        if wanted(name):
            length = size if size is not None else len(body) if isinstance(body, bytes) else 0
            cases.append(Case(name, content_type, body, length, note))

    add("corrupt parquet footer", PARQUET, corrupt_footer(good_parquet))
    add("parquet magic only", PARQUET, b"PAR1" + b"\0" * 64 + b"PAR1")
    add("forged parquet footer (2**40 rows)", PARQUET, forged_footer(good_parquet, t.num_rows))
    if wanted("parquet decompression bomb"):
        path = work / "bomb.parquet"
        decoded = parquet_bomb(path, 10 * GIB)
        add(
            "parquet decompression bomb",
            PARQUET,
            streamed_file(path),
            path.stat().st_size,
            f"decodes to {decoded / GIB:.1f} GiB",
        )
    if wanted("arrow ipc zstd bomb"):
        path = work / "bomb.arrows"
        in_memory, decoded = arrow_bomb(path, 40_000_000, 250)
        add(
            "arrow ipc zstd bomb (one batch)",
            ARROW,
            streamed_file(path),
            path.stat().st_size,
            f"one batch of 40M rows: {in_memory / GIB:.1f} GiB as read, "
            f"{decoded / GIB:.1f} GiB with its dictionaries expanded",
        )
    if wanted("parquet one 512 mib cell"):
        path = work / "giant-cell.parquet"
        parquet_giant_cell(path, 512 * MIB)
        add(
            "parquet one 512 MiB cell",
            PARQUET,
            streamed_file(path),
            path.stat().st_size,
            "one row whose customer key is 512 MiB",
        )
    wide_csv = (",".join(f"c{i}" for i in range(100_000)) + "\n" + "1," * 99_999 + "1\n").encode()
    add("100,000 columns csv", CSV, wide_csv)
    if wanted("100,000 columns parquet"):
        wide = pa.table({f"c{i}": pa.array([1], pa.int8()) for i in range(100_000)})
        add("100,000 columns parquet", PARQUET, parquet_bytes(wide))
    add(
        "1 GiB single csv line",
        CSV,
        streamed_line(header, GIB, b"\n"),
        len(header) + GIB + 1,
    )
    add("1 GiB csv header line", CSV, streamed_line(b"", GIB, b"\n1\n"), GIB + 3)
    add("utf-16 csv", CSV, csv_bytes(t).decode().encode("utf-16"))
    add("latin-1 bytes in a string column", CSV, csv_bytes(t).replace(b"north", b"n\xf6rth"))
    add("NUL bytes csv", CSV, csv_bytes(t).replace(b"north", b"no\0rth"))
    add("NUL bytes in the csv header", CSV, b"\0\0\0\n\0\n")
    add("arrow stream cut mid-batch", ARROW, arrow[: len(arrow) // 2 + 7])
    add("arrow garbage", ARROW, b"\xff\xff\xff\xff" + b"\x7f" * 64)
    add("header only csv", CSV, header)
    add("header only parquet", PARQUET, parquet_bytes(t.slice(0, 0)))
    add("header only arrow", ARROW, arrow_bytes(t.slice(0, 0)))
    add("gzip body", "application/gzip", b"\x1f\x8b\x08\x00" + b"\0" * 32)
    add("empty body", CSV, b"")
    return cases


# ---- the server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Server:
    """One ``serve --demo`` process, its RSS watchdog, and its output files."""

    def __init__(self, source: Path, data_dir: Path, log_dir: Path, n: int, max_rss: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_rss = max_rss
        self.killed_at: int | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env |= {"PYTHONPATH": str(source), "GATEWAY_DEMO_CUSTOMERS": str(CUSTOMERS)}
        env["GATEWAY_LOG_LEVEL"] = "warning"
        self.stderr_path = log_dir / f"server{n}.stderr"
        command = [sys.executable, "-m", "gateway.cli", "serve", "--demo", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--data-dir", str(data_dir)]
        with (log_dir / f"server{n}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, cwd=source, env=env, stdout=out, stderr=err)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()

    def _watchdog(self) -> None:
        while not self._stop.is_set() and self.process.poll() is None:
            rss = _status_kib(self.process.pid, "VmRSS")
            if rss is not None and rss * 1024 > self.max_rss:
                self.killed_at = rss * 1024
                self.process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.01)

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not start:\n{self.stderr_path.read_text()[-4000:]}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def reset_peak(self) -> int | None:
        """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns that RSS."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        rss = _status_kib(self.process.pid, "VmRSS")
        return None if rss is None else rss * 1024

    def peak(self) -> int | None:
        hwm = _status_kib(self.process.pid, "VmHWM")
        return None if hwm is None else hwm * 1024

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


# ---- running a case -------------------------------------------------------------------------


def _query_ok(url: str, key: str, epsilon: float) -> bool:
    plan = {"from": "bigmart.loyalty", "group_by": ["region"], "aggregates": [{"fn": "count"}]}
    try:
        response = httpx.post(
            f"{url}/v1/collaborations/{COLLABORATION}/queries",
            json={"plan": plan, "epsilon": epsilon},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60.0,
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200 and len(response.json().get("rows", [])) == 4


def _health_ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=10.0).status_code == 200
    except httpx.TransportError:
        return False


def run_case(server: Server, case: Case, keys: dict[str, Any], n: int) -> dict[str, Any]:
    base_rss = server.reset_peak()
    content = case.body() if callable(case.body) else case.body
    started = time.monotonic()
    status: int | None = None
    code = message = None
    try:
        response = httpx.post(
            f"{server.url}/v1/collaborations/{COLLABORATION}/datasets/loyalty",
            content=content,
            headers={
                "Authorization": f"Bearer {keys['bigmart']['contributor']}",
                "Content-Type": case.content_type,
            },
            timeout=REQUEST_TIMEOUT,
        )
        status = response.status_code
        try:
            error = response.json().get("error") or {}
            code, message = error.get("code"), error.get("message")
        except ValueError:
            message = response.text[:200]
    except httpx.HTTPError as exc:
        message = f"no answer: {type(exc).__name__}"
    seconds = time.monotonic() - started
    peak = server.peak() if server.alive else server.killed_at
    held_after = _status_kib(server.process.pid, "VmRSS") if server.alive else None
    health = _health_ok(server.url) if server.alive else False
    query = _query_ok(server.url, keys["acme"]["analyst"], 0.01 + n * 1e-4) if health else False
    result = {
        "case": case.name,
        "content_type": case.content_type,
        "body_bytes": case.size,
        "note": case.note,
        "status": status,
        "code": code,
        "message": message,
        "seconds": round(seconds, 3),
        "server_rss_before_mib": None if base_rss is None else round(base_rss / MIB, 1),
        "server_peak_rss_mib": None if peak is None else round(peak / MIB, 1),
        "server_rss_after_mib": None if held_after is None else round(held_after / 1024, 1),
        "killed_by_watchdog": server.killed_at is not None,
        "server_alive": server.alive,
        "health_after": health,
        "query_after": query,
    }
    result["flags"] = flags(result)
    return result


def flags(r: dict[str, Any]) -> list[str]:
    out = []
    if r["status"] is None or not 400 <= r["status"] < 500:
        out.append("not a 4xx")
    if r["seconds"] > SLOW_S:
        out.append(f"over {SLOW_S:.0f} s")
    if r["server_peak_rss_mib"] is not None and r["server_peak_rss_mib"] * MIB > HEAVY_BYTES:
        out.append("peak over 1.5 GiB")
    if r["killed_by_watchdog"]:
        out.append("killed by the watchdog")
    if not (r["health_after"] and r["query_after"]):
        out.append("not healthy after")
    return out


# ---- main -----------------------------------------------------------------------------------


def _source(work: Path, working_tree: bool) -> tuple[Path, str]:
    """Where the server runs from, and the commit it is (``+dirty`` for the working tree)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if working_tree:
        return ROOT, f"{commit}+working-tree"
    snapshot = work / "src"
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(snapshot, filter="data")
    return snapshot, commit


def _machine() -> dict[str, Any]:
    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(total / GIB, 1),
        "platform": platform.platform(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
    }


def _table(results: list[dict[str, Any]]) -> str:
    head = f"{'case':<36} {'status':>6} {'code':<24} {'s':>7} {'peak MiB':>9} {'after':<8} flags"
    lines = [head, "-" * len(head)]
    for r in results:
        after = "ok" if r["health_after"] and r["query_after"] else "FAILED"
        peak = "-" if r["server_peak_rss_mib"] is None else f"{r['server_peak_rss_mib']:,.0f}"
        lines.append(
            f"{r['case'][:36]:<36} {r['status'] or '-':>6} {(r['code'] or '-')[:24]:<24} "
            f"{r['seconds']:>7.2f} {peak:>9} {after:<8} {', '.join(r['flags'])}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", help="run only the cases whose name holds this text")
    parser.add_argument("--max-rss-gib", type=float, default=6.0)
    parser.add_argument("--working-tree", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/hostile_uploads.jsonl")
    args = parser.parse_args()

    run_at = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hostile-uploads-") as tmp:
        work = Path(tmp)
        source, commit = _source(work, args.working_tree)
        built = time.monotonic()
        cases = build_cases(work, args.only)
        print(f"built {len(cases)} cases in {time.monotonic() - built:.1f} s", flush=True)
        data_dir = work / "var"
        n = 0
        server = Server(source, data_dir, work, n, int(args.max_rss_gib * GIB))
        try:
            server.wait_healthy()
            keys = json.loads((data_dir / "demo-keys.json").read_text())
            fresh = server.reset_peak() or 0
            for i, case in enumerate(cases):
                held = server.reset_peak() if server.alive else None
                if held is None or held > fresh + RETAINED_LIMIT:
                    server.stop()
                    n += 1
                    server = Server(source, data_dir, work, n, int(args.max_rss_gib * GIB))
                    server.wait_healthy()
                result = run_case(server, case, keys, i)
                results.append(result)
                print(_table([result]).splitlines()[-1], flush=True)
        finally:
            server.stop()
    machine = _machine()
    with args.out.open("a") as fh:
        for r in results:
            fh.write(json.dumps({"bench": "hostile_uploads", "at": run_at, "commit": commit,
                                 **r, "machine": machine}) + "\n")  # fmt: skip
    print()
    print(_table(results))
    flagged = [r for r in results if r["flags"]]
    print(f"\n{len(results)} cases, {len(flagged)} flagged; results appended to {args.out}")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
