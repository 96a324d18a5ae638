"""End-to-end fixtures: the real ``insightgw serve`` in a subprocess on 127.0.0.1.

One server per test module (module scope), on a free port, in a fresh data directory, always
terminated at teardown. Its stdout and stderr go to files rather than pipes (a pipe nobody
reads would block uvicorn's access log once full); a server that does not answer
``GET /v1/health`` within ``START_TIMEOUT`` seconds fails the fixture with both outputs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CUSTOMERS = 3_000
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any GATEWAY_ setting, plus the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["GATEWAY_DEMO_CUSTOMERS"] = str(DEMO_CUSTOMERS)
    env.update(extra or {})
    return env


@dataclass
class GatewayProcess:
    """One running ``insightgw serve`` and where its output goes."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = json.loads((self.data_dir / "demo-keys.json").read_text())
        return keys

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def stop(self) -> int:
        """SIGTERM (graceful uvicorn shutdown), then SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        return self.process.returncode


class Launcher:
    """Starts gateway processes for one module and stops every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[GatewayProcess] = []

    def start(
        self,
        data_dir: Path | None = None,
        *,
        demo: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> GatewayProcess:
        """Start ``serve [--demo]`` and return once /v1/health answers 200.

        A port taken between choosing and binding it is retried on another port.
        """
        data_dir = data_dir or self.workdir / f"var{len(self.started)}"
        for _ in range(3):
            gateway = self._spawn(data_dir, demo, env)
            if self._wait_healthy(gateway):
                return gateway
            code = gateway.process.poll()
            gateway.stop()
            if "address already in use" not in gateway.stderr().lower():
                break
        why = f"exited with code {code}" if code is not None else "still starting"
        pytest.fail(
            f"the gateway did not answer /v1/health within {START_TIMEOUT:.0f} s "
            f"({why}; stopped now)\n{gateway.output()}"
        )

    def _spawn(self, data_dir: Path, demo: bool, env: Mapping[str, str] | None) -> GatewayProcess:
        port = _free_port()
        n = len(self.started)
        stdout_path = self.workdir / f"server{n}.stdout"
        stderr_path = self.workdir / f"server{n}.stderr"
        command = [sys.executable, "-m", "gateway.cli", "serve"]
        command += ["--demo"] if demo else []
        command += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=_base_env(env), stdout=out, stderr=err
            )
        gateway = GatewayProcess(port, data_dir, process, stdout_path, stderr_path)
        self.started.append(gateway)
        return gateway

    @staticmethod
    def _wait_healthy(gateway: GatewayProcess) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if gateway.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{gateway.url}/v1/health", timeout=2.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    def stop_all(self) -> None:
        for gateway in self.started:
            gateway.stop()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Start extra gateways (restarts, other data directories); all stopped at teardown."""
    started = Launcher(tmp_path_factory.mktemp("gateway"))
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="module")
def gateway(launcher: Launcher) -> GatewayProcess:
    """This module's ``serve --demo`` on a fresh data directory, seeded with 3,000 customers."""
    return launcher.start()


@pytest.fixture(scope="module")
def keys(gateway: GatewayProcess) -> dict[str, Any]:
    """The content of the module gateway's demo-keys.json."""
    return gateway.keys()


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m gateway.cli ARGS`` from the repo root; ``env`` adds variables."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=REPO_ROOT,
            env=_base_env(env),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )

    return run
