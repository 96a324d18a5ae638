"""Dependency direction: api → service → domain; domain imports no framework or adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent

FORBIDDEN_IN_DOMAIN = (
    "fastapi",
    "starlette",
    "duckdb",
    "opendp",
    "httpx",
    "cryptography",
    "pyarrow",
    "gateway.api",
    "gateway.service",
    "gateway.store",
    "gateway.engine",
    "gateway.dp",
)
RULES = {
    "domain": FORBIDDEN_IN_DOMAIN,
    "dp": (
        "fastapi",
        "duckdb",
        "httpx",
        "gateway.api",
        "gateway.service",
        "gateway.store",
        "gateway.engine",
    ),
    "engine": (
        "fastapi",
        "opendp",
        "httpx",
        "gateway.api",
        "gateway.service",
        "gateway.store",
        "gateway.dp",
    ),
    "store": (
        "fastapi",
        "opendp",
        "httpx",
        "gateway.api",
        "gateway.service",
        "gateway.dp",
        "gateway.engine",
    ),
    "service": ("fastapi", "starlette", "gateway.api"),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers_import_only_downwards() -> None:
    offences = []
    for package, forbidden in RULES.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in imports_of(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    offences.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert offences == []


def test_noise_comes_only_from_opendp() -> None:
    """No module draws randomness with numpy or `random` outside the demo data generator."""
    offences = []
    for path in ROOT.rglob("*.py"):
        if path.parent.name == "demo":
            continue
        text = path.read_text()
        for needle in ("import random", "from random", "np.random", "numpy.random"):
            if needle in text:
                offences.append(f"{path.relative_to(ROOT.parent)}: {needle}")
    assert offences == []


def test_no_unsafe_opendp_feature_is_ever_enabled() -> None:
    """Only ``contrib``: never floating-point, honest-but-curious or idealized-numerics."""
    import opendp.mod

    import gateway.dp.accuracy  # noqa: F401
    import gateway.dp.release  # noqa: F401
    import gateway.dp.selection  # noqa: F401

    assert set(opendp.mod.GLOBAL_FEATURES) == {"contrib"}
    calls = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "enable_features":
                calls.append([getattr(a, "value", None) for a in node.args])
    assert calls and all(args == ["contrib"] for args in calls), calls
