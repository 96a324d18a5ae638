"""How ``insightgw`` prints for people: rich tables, coloured diffs, one-line audit summaries.

Releases and explanations have their own layout in :mod:`gateway.cli_release`; ``--json``
output bypasses this module (and rich) altogether.

Rich interprets ``[...]`` as markup, and policies are full of YAML lists, so markup and
highlighting are off: every cell is plain text, styled only where this module says so. Piped
output gets a wide console (no terminal to measure) so that tables do not wrap mid-cell.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 200
SUMMARY_CHARS = 160


def console(file: TextIO | None = None) -> Console:
    """A console for ``file`` (stdout by default) that prints text exactly as given."""
    width = shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
    return Console(file=file or sys.stdout, markup=False, highlight=False, width=width)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A table with ``columns``; ``None`` cells print as ``-``, numbers right-aligned."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    materialised = [list(r) for r in rows]
    for i, name in enumerate(columns):
        numeric = bool(materialised) and all(
            isinstance(r[i], int | float) and not isinstance(r[i], bool)
            for r in materialised
            if r[i] is not None
        )
        grid.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for r in materialised:
        grid.add_row(*(Text("-" if v is None else _cell(v)) for v in r))
    return grid


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def timestamp(value: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC, as the gateway stores it)."""
    if not isinstance(value, str):
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def approvals(value: Any) -> str:
    """``{"acme": True, "bigmart": False}`` as ``acme: approved, bigmart: waiting``."""
    if not isinstance(value, Mapping) or not value:
        return "-"
    return ", ".join(
        f"{org}: {'approved' if ok else 'waiting'}" for org, ok in sorted(value.items())
    )


def unified_diff(before: str, after: str, fromfile: str, tofile: str) -> str:
    """A unified diff of two texts; empty when they are the same line for line."""

    def lines(text: str) -> list[str]:
        return [line + "\n" for line in text.splitlines()]

    return "".join(difflib.unified_diff(lines(before), lines(after), fromfile, tofile))


def diff(out: Console, text: str) -> None:
    """A unified diff, added lines green, removed red, hunk headers cyan."""
    for line in text.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        out.print(Text(line, style=style), soft_wrap=True)


def actor(event: Mapping[str, Any]) -> str:
    """``org/role`` of an audit event; ``operator`` for the offline commands (no key)."""
    who = event.get("actor")
    if not isinstance(who, Mapping) or who.get("org") is None:
        return "operator"
    return f"{who.get('org')}/{who.get('role')}"


# The details worth a glance, in the order they are shown; the full record stays in the API.
_SUMMARY_KEYS = (
    ("outcome", "{}"),
    ("dataset", "{}"),
    ("datasets", "on {}"),
    ("org", "org {}"),
    ("role", "role {}"),
    ("key_id", "key {}"),
    ("version", "v{}"),
    ("rows", "{} rows"),
    ("epsilon", "ε={}"),
    ("epsilon_spent", "spent ε={}"),
    ("policy_version", "policy v{}"),
    ("previous", "previous v{}"),
    ("members", "members {}"),
    ("code", "{}"),
    ("message", "{}"),
    ("sql", "sql: {}"),
)


def summary(details: Any) -> str:
    """One line out of an event's details, e.g. ``released on bigmart.loyalty ε=0.5 policy v1``."""
    if not isinstance(details, Mapping):
        return ""
    parts = []
    for key, fmt in _SUMMARY_KEYS:
        value = details.get(key)
        if value is None or value == [] or (key == "sql" and not value):
            continue
        if key == "datasets" and value == [details.get("dataset")]:
            continue  # an upload names its one dataset already
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        parts.append(fmt.format(" ".join(str(value).split())))
    if details.get("sql") is None and isinstance(details.get("plan"), Mapping):
        parts.append("plan")
    line = " ".join(parts)
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"
