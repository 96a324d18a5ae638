"""Bar charts of a release with its 95% intervals as error bars (matplotlib, imported lazily).

The chart shows only what the release holds: noisy values and their intervals. Suppressed
groups keep their place on the axis, with no bar, so the reader sees that the key exists and
that its values were withheld, exactly as the release says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clients.release import _cell, _pair

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from clients.release import Release

_SUPPRESSED_NOTE = "suppressed"
_ROTATE_AFTER = 6  # more category labels than this are drawn at an angle


@dataclass(frozen=True)
class _Bar:
    """One bar: its noisy value and interval, NaN where the release holds none."""

    value: float
    low: float
    high: float
    suppressed: bool = False


@dataclass(frozen=True)
class _Series:
    """Bars of one colour, one per category (``None`` where the release has no such cell)."""

    label: str | None
    bars: list[_Bar | None]


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "Release.plot() needs matplotlib; install it with `pip install 'insight-gateway[plot]'`"
        ) from exc


def _number(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _bar(cell: Any, suppressed: bool) -> _Bar:
    if suppressed:
        return _Bar(math.nan, math.nan, math.nan, suppressed=True)
    value, low, high = _cell(cell)
    return _Bar(_number(value), _number(low), _number(high))


def _label(values: Sequence[Any]) -> str:
    return " / ".join(str(v) for v in values)


def _scalar_layout(release: Release, measure: str) -> tuple[list[str], list[_Series]]:
    """Categories from the first group-by column, one series per value of the others."""
    if not release.group_by:
        bars = [_bar(row.get(measure), bool(row.get("suppressed"))) for row in release.rows]
        return [measure] * len(bars), [_Series(None, list(bars))]
    first, rest = release.group_by[0], release.group_by[1:]
    categories: dict[str, None] = {}
    series: dict[str, dict[str, _Bar]] = {}
    for row in release.rows:
        category = str(row.get(first))
        categories.setdefault(category, None)
        key = _label([row.get(c) for c in rest])
        series.setdefault(key, {})[category] = _bar(row.get(measure), bool(row.get("suppressed")))
    return list(categories), [
        _Series(key if rest else None, [bars.get(c) for c in categories])
        for key, bars in series.items()
    ]


def _histogram_layout(release: Release, measure: str) -> tuple[list[str], list[_Series]]:
    """Categories are the bins; one series per group."""
    categories: list[str] = []
    series: list[_Series] = []
    for row in release.rows:
        label = _label([row.get(c) for c in release.group_by]) or None
        cell = row.get(measure)
        if row.get("suppressed") or not isinstance(cell, dict):
            series.append(_Series(label, []))  # filled with suppressed bars below
            continue
        if not categories:
            categories = [f"[{_short(lo)}, {_short(hi)})" for lo, hi in cell.get("bins") or []]
        intervals = cell.get("ci95") or []
        bars = []
        for i, value in enumerate(cell.get("values") or []):
            low, high = _pair(intervals[i]) if i < len(intervals) else (None, None)
            bars.append(_Bar(_number(value), _number(low), _number(high)))
        series.append(_Series(label, list(bars)))
    width = len(categories)
    return categories, [
        s if s.bars else _Series(s.label, [_Bar(math.nan, math.nan, math.nan, True)] * width)
        for s in series
    ]


def _short(x: Any) -> str:
    number = float(x)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def plot_release(release: Release, measure: str, ax: Axes | None = None) -> Axes:
    """Draw ``measure`` of ``release`` on ``ax`` (a new figure when None); see Release.plot."""
    kind = release.kind(measure)  # KeyError for an unknown measure, before importing anything
    _require_matplotlib()
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 4.5))
    if kind == "histogram":
        categories, series = _histogram_layout(release, measure)
        xlabel = f"{measure} (bins)"
        legend_title = " / ".join(release.group_by) or None
    else:
        categories, series = _scalar_layout(release, measure)
        xlabel = release.group_by[0] if release.group_by else ""
        legend_title = " / ".join(release.group_by[1:]) or None
    _draw(ax, categories, series)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(measure)
    interval = "no interval (quantile)" if kind == "quantile" else "error bars: 95% intervals"
    ax.set_title(f"{measure} ({interval})")
    if any(s.label is not None for s in series):
        ax.legend(title=legend_title, fontsize="small")
    return ax


def _draw(ax: Axes, categories: list[str], series: list[_Series]) -> None:
    count = max(len(series), 1)
    width = 0.8 / count
    for index, s in enumerate(series):
        offset = (index - (count - 1) / 2) * width
        xs, values, below, above = [], [], [], []
        for position, bar in enumerate(s.bars):
            if bar is None:
                continue
            x = position + offset
            if bar.suppressed:
                ax.annotate(
                    _SUPPRESSED_NOTE,
                    (x, 0),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                    color="grey",
                )
            xs.append(x)
            values.append(bar.value)
            below.append(max(bar.value - bar.low, 0.0) if not math.isnan(bar.low) else 0.0)
            above.append(max(bar.high - bar.value, 0.0) if not math.isnan(bar.high) else 0.0)
        ax.bar(
            xs,
            values,
            width=width * 0.95,
            yerr=[below, above],
            capsize=3,
            label=s.label,
            error_kw={"elinewidth": 1},
        )
    ax.set_xticks(range(len(categories)))
    ax.set_xlim(-0.5, len(categories) - 0.5)  # suppressed groups, drawn as text only, stay in view
    rotate = len(categories) > _ROTATE_AFTER
    ax.set_xticklabels(categories, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.axhline(0, color="black", linewidth=0.5)
