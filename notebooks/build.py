"""Build the notebooks (``notebooks/*.ipynb``) from their sources in ``notebooks/src/``.

Each source is a Python file in the "percent" format that editors understand: a line
``# %% [markdown]`` starts a markdown cell whose lines are comments (``# `` is stripped), a
line ``# %%`` starts a code cell. The notebooks are written with no outputs and stable cell ids,
so building twice gives the same bytes and a diff shows only what changed in the source.

Usage (from the repository root)::

    .venv/bin/python notebooks/build.py          # rewrite notebooks/*.ipynb
    .venv/bin/python notebooks/build.py --check  # exit 1 if a notebook is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
NOTEBOOKS = ("retailer_upload", "brand_analyst", "compliance_officer")

_MARKDOWN = "# %% [markdown]"
_CODE = "# %%"


def _cells(text: str) -> list[tuple[str, str]]:
    """``(kind, source)`` of each cell of a percent-format script, in order."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped == _MARKDOWN:
            cells.append(("markdown", []))
        elif stripped == _CODE:
            cells.append(("code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if stripped and not stripped.startswith("#"):
                    raise ValueError(f"markdown cells hold comment lines only: {line!r}")
                stripped = stripped[2:] if stripped.startswith("# ") else stripped[1:]
            lines.append(stripped)
        elif stripped and not stripped.startswith('"""') and not stripped.startswith("#"):
            raise ValueError(f"text before the first cell marker: {line!r}")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as built from ``src/<name>.py``, with no outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(_cells((SOURCES / f"{name}.py").read_text())):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"{name}-{index:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    """The file content of notebook ``name``."""
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check they are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        text = render(name)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/build.py", file=sys.stderr)
        return 1
    print(("up to date" if not stale else f"wrote {', '.join(stale)}") if not args.check else "ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
