"""The role notebooks run top to bottom against a real gateway, in a kernel of this Python.

Each notebook is executed with nbclient in an IPython kernel started from ``sys.executable``
through a kernel spec written to a temporary directory, so nothing depends on a user-level
Jupyter install or on which ``python`` is on PATH. The gateway is this module's
``insightgw serve --demo`` on a free port; the notebooks find it through ``INSIGHTGW_URL`` and
``INSIGHTGW_KEYS``, as a newcomer's would find ``make run``'s defaults. Beyond "no cell
failed", each test checks the notebook's key outputs and what the gateway recorded. Each test
passes alone as well as after the others (a newcomer may open any notebook first).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from clients import GatewayClient
from gateway.demo.seed import COLLABORATION

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
CELL_TIMEOUT = 120
C = COLLABORATION


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec directory whose ``python3`` is this interpreter's ipykernel."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return root


@pytest.fixture(scope="module")
def run_notebook(
    gateway: Any, kernels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Execute ``notebooks/<name>.ipynb`` against the module's gateway; the executed notebook."""
    workdir = tmp_path_factory.mktemp("notebooks")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "INSIGHTGW_"))}
    env.update(
        INSIGHTGW_URL=gateway.url,
        INSIGHTGW_KEYS=str(gateway.data_dir / "demo-keys.json"),
        PYTHONPATH=str(REPO_ROOT),
        IPYTHONDIR=str(workdir / "ipython"),
        MPLCONFIGDIR=str(workdir / "matplotlib"),
        JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
    )

    def run(name: str) -> nbformat.NotebookNode:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        manager = AsyncKernelManager(
            kernel_name="python3",
            kernel_spec_manager=KernelSpecManager(
                kernel_dirs=[str(kernels)], ensure_native_kernel=False
            ),
            connection_file=str(workdir / f"{name}-kernel.json"),
        )
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=CELL_TIMEOUT,
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute(env=env)
        nbformat.write(notebook, workdir / f"{name}.executed.ipynb")  # kept for debugging
        return notebook

    yield run


def _text(notebook: nbformat.NotebookNode) -> str:
    """Everything the code cells printed or displayed as text, in order."""
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                parts.append(output["text"])
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def _errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [
        f"{output['ename']}: {output['evalue']}"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output["output_type"] == "error"
    ]


def _our_warnings(notebook: nbformat.NotebookNode) -> list[str]:
    """Lines on stderr that come from this project's code (a third-party deprecation notice
    from a newer pandas or matplotlib is not the notebook's fault, and is not checked)."""
    stderr = "".join(
        output["text"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output["output_type"] == "stream" and output["name"] == "stderr"
    )
    ours = ("clients/", "gateway/", "Traceback", "Error")
    return [line for line in stderr.splitlines() if any(mark in line for mark in ours)]


def _budget(gateway: Any, keys: dict[str, Any], org: str) -> dict[str, Any]:
    with GatewayClient(gateway.url, keys[org]["analyst"]) as gw:
        [entry] = gw.budget(C)
        return entry


def test_committed_notebooks_are_built_from_their_sources_without_outputs() -> None:
    build = _builder()
    for name in build.NOTEBOOKS:
        committed = (NOTEBOOKS / f"{name}.ipynb").read_text()
        assert committed == build.render(name), f"run python notebooks/build.py ({name})"
        notebook = nbformat.reads(committed, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code and all(c.outputs == [] and c.execution_count is None for c in code)
        markdown = [c for c in notebook.cells if c.cell_type == "markdown"]
        assert len(markdown) >= len(code) / 2, f"{name} should explain, not only run code"


def test_retailer_upload(run_notebook: Any, gateway: Any, keys: dict[str, Any]) -> None:
    acme_before = _budget(gateway, keys, "acme")
    notebook = run_notebook("retailer_upload")
    assert _errors(notebook) == []
    assert _our_warnings(notebook) == []
    text = _text(notebook)
    assert "100.0%" in text  # the progress bar reached the end
    assert "uploaded bigmart.loyalty version 2: 3,000 rows" in text
    assert "ACME uploaded acme.survey version 2" in text
    assert "columns ACME never sees: email" in text
    assert "refused: policy_violation" in text
    assert "datasets.bigmart.loyalty.columns.email.use" in text
    assert "retailer notebook done" in text
    # No raw key, e-mail or token from the gateway is in anything the partner side printed.
    partner_side = text[text.index("columns ACME can use") :]
    assert "@example.invalid" not in partner_side

    # The refusal spent nothing of ACME's budget; BigMart's check of the join spent 0.1.
    assert _budget(gateway, keys, "acme")["epsilon_spent"] == acme_before["epsilon_spent"]
    assert _budget(gateway, keys, "bigmart")["epsilon_spent"] == pytest.approx(0.1)
    # Both sides were pseudonymised with the same secret: the join still matches about half
    # of the 3,000 customers (1,500 shared; count noise scale 10 at ε = 0.1, so the noisy
    # count is off by more than 300 with probability e^-30).
    line = next(x for x in text.splitlines() if x.startswith("shared customers: about "))
    shared = float(line.split("about ")[1].split(" of")[0].replace(",", ""))
    assert 1_200 <= shared <= 1_800


def test_brand_analyst(run_notebook: Any, gateway: Any, keys: dict[str, Any]) -> None:
    before = _budget(gateway, keys, "acme")
    notebook = run_notebook("brand_analyst")
    assert _errors(notebook) == []
    assert _our_warnings(notebook) == []
    text = _text(notebook)
    assert "groups in the answer: 16" in text
    assert "customers_ci95_low" in text and "avg_spend_ci95_high" in text
    assert "replay: True | ε spent: 0" in text
    assert "same values: True" in text
    assert "this notebook spent ε = 0.75" in text
    assert "brand analyst notebook done" in text
    assert _images(notebook) >= 3  # the two means, the histogram, the budget
    after = _budget(gateway, keys, "acme")
    assert after["epsilon_spent"] - before["epsilon_spent"] == pytest.approx(0.75, abs=1e-9)


def _queries_audited(officer: GatewayClient) -> int:
    events = officer.audit(C, limit=1000)
    return sum(e["action"] == "query.released" for e in events)


def test_compliance_officer(run_notebook: Any, gateway: Any, keys: dict[str, Any]) -> None:
    with GatewayClient(gateway.url, keys["acme"]["compliance"]) as officer:
        demo_policy = officer.policy_document(C)["document"]
        first_new = len(officer.policy_versions(C)) + 1
        queried_before = _queries_audited(officer)
        acme_before = _budget(gateway, keys, "acme")
        notebook = run_notebook("compliance_officer")
        versions = {v["version"]: v for v in officer.policy_versions(C)}
        active = officer.policy_document(C)
        verified = officer.verify_audit(C)
        queried_after = _queries_audited(officer)
        history = officer.budget_history(C)
    assert _errors(notebook) == []
    assert _our_warnings(notebook) == []
    text = _text(notebook)
    assert f"version {first_new} is pending" in text
    assert f"version {first_new} is now active" in text
    assert f"you rejected it: version {first_new + 1} is rejected" in text
    assert "chain ok: True" in text
    assert "compliance officer notebook done" in text
    assert _images(notebook) >= 1

    # On a gateway nobody has queried (this test alone, or a fresh `make run`), the notebook
    # has ACME's analyst ask one question, so the trail shows one; otherwise it asks nothing.
    asked = "no query yet: ACME's analyst asked one (ε = 0.1)" in text
    assert asked == (queried_before == 0)
    assert queried_after == queried_before + asked >= 1
    acme_spent = _budget(gateway, keys, "acme")["epsilon_spent"]
    assert acme_spent == pytest.approx(acme_before["epsilon_spent"] + 0.1 * asked, abs=1e-9)
    # The chart's figures are the ledger's (budget_history), one line per analyst organisation.
    for org in ("acme", "bigmart"):
        [current] = [s for s in history if s["org"] == org][-1:]
        spent = _budget(gateway, keys, org)["epsilon_spent"]
        charges = len(current["points"])
        assert f"{org} in {current['period']}: ε {spent:g} spent; charges: {charges}" in text

    # What the gateway recorded: stricter rule approved, BigMart's budget rise rejected, and
    # the demo policy back in force as a new version.
    assert versions[first_new]["status"] == "superseded"
    assert versions[first_new]["approvals"] == {"acme": True, "bigmart": True}
    assert versions[first_new + 1]["status"] == "rejected"
    assert versions[first_new + 1]["proposed_by"] == "bigmart"
    assert active["version"] == first_new + 2
    assert active["document"] == demo_policy
    assert yaml.safe_load(active["document"])["budgets"]["bigmart"]["epsilon"] == 4.0
    assert verified["ok"] is True and verified["first_bad"] is None
