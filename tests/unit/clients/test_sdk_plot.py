"""Release.plot draws the release's noisy values with their 95% intervals, headless."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest

from clients import Release

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

REGIONS = ["north", "south"]
SEGMENTS = ["value", "premium", "luxury"]


def _release(group_by: list[str], rows: list[dict[str, Any]]) -> Release:
    return Release.from_json(
        {
            "query_id": "q",
            "replay": False,
            "epsilon_spent": 0.5,
            "policy_version": 1,
            "budget": {},
            "group_by": group_by,
            "rows": rows,
        }
    )


def _cell(value: float, half: float) -> dict[str, Any]:
    return {"value": value, "ci95": [value - half, value + half]}


def _bars(ax: Axes) -> list[tuple[float, float]]:
    """(centre x, height) of every drawn bar, left to right; NaN heights are suppressed groups."""
    return sorted((p.get_x() + p.get_width() / 2, p.get_height()) for p in ax.patches)


def _error_bars(ax: Axes) -> list[tuple[float, float, float]]:
    """(x, low, high) of every error-bar segment drawn (none for a suppressed group)."""
    segments = []
    for collection in ax.collections:
        for path in collection.get_segments():  # type: ignore[attr-defined]
            if len(path) != 2 or any(math.isnan(v) for point in path for v in point):
                continue
            (x0, y0), (_, y1) = path
            segments.append((float(x0), float(min(y0, y1)), float(max(y0, y1))))
    return sorted(segments)


def test_one_bar_per_group_with_its_interval(release_json: dict[str, Any]) -> None:
    release = Release.from_json(release_json)
    ax = release.plot("avg_spend")
    assert isinstance(ax, Axes)
    bars = _bars(ax)
    assert bars[0] == pytest.approx((0.0, 81.4))
    assert math.isnan(bars[1][1])  # south is suppressed: no bar
    assert _error_bars(ax) == [pytest.approx((0.0, 79.9, 82.9))]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["north", "south"]
    assert [t.get_text() for t in ax.texts] == ["suppressed"]
    assert ax.texts[0].xy == (1.0, 0)
    assert ax.get_xlabel() == "region"
    assert ax.get_ylabel() == "avg_spend"
    assert "95%" in ax.get_title()


def test_draws_on_the_given_axes() -> None:
    figure = Figure()
    ax = figure.add_subplot()
    release = _release(["region"], [{"region": "north", "n": _cell(120, 12)}])
    assert release.plot("n", ax=ax) is ax
    assert _bars(ax) == [pytest.approx((0.0, 120.0))]


def test_two_group_columns_give_grouped_bars_with_a_legend() -> None:
    rows = [
        {"region": r, "segment": s, "n": _cell(100 * i + 10 * j, 5)}
        for i, r in enumerate(REGIONS)
        for j, s in enumerate(SEGMENTS)
    ]
    ax = _release(["region", "segment"], rows).plot("n")
    assert [t.get_text() for t in ax.get_xticklabels()] == REGIONS
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == SEGMENTS
    assert legend.get_title().get_text() == "segment"
    heights = [h for _, h in _bars(ax)]
    assert heights == [0, 10, 20, 100, 110, 120]
    assert len(_error_bars(ax)) == 6


def test_release_without_group_by_is_one_bar() -> None:
    ax = _release([], [{"customers": _cell(1500, 12)}]).plot("customers")
    assert _bars(ax) == [pytest.approx((0.0, 1500.0))]
    assert _error_bars(ax) == [pytest.approx((0.0, 1488.0, 1512.0))]


def test_quantile_has_no_error_bar() -> None:
    rows = [{"region": "north", "median": {"value": 40.0, "ci95": None, "rank_error95": 9.0}}]
    ax = _release(["region"], rows).plot("median")
    assert _bars(ax) == [pytest.approx((0.0, 40.0))]
    assert all(low == high for _, low, high in _error_bars(ax))
    assert "quantile" in ax.get_title()


def test_histogram_is_drawn_bin_by_bin_per_group() -> None:
    cell = {"bins": [[0, 50], [50, 100]], "values": [30, 12], "ci95": [[26, 34], [8, 16]]}
    rows = [
        {"region": "north", "spend": cell},
        {"region": "south", "spend": None, "suppressed": True},
    ]
    ax = _release(["region"], rows).plot("spend")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[0, 50)", "[50, 100)"]
    drawn = [(x, h) for x, h in _bars(ax) if not math.isnan(h)]
    assert drawn == [pytest.approx((-0.2, 30.0)), pytest.approx((0.8, 12.0))]
    assert [t.get_text() for t in ax.texts] == ["suppressed", "suppressed"]
    assert [(round(lo), round(hi)) for _, lo, hi in _error_bars(ax)] == [(26, 34), (8, 16)]


def test_unknown_measure_is_refused_before_drawing(release_json: dict[str, Any]) -> None:
    with pytest.raises(KeyError, match="nps"):
        Release.from_json(release_json).plot("nps")


def test_without_matplotlib_says_what_to_install(
    release_json: dict[str, Any], uninstall: Callable[[str], None]
) -> None:
    uninstall("matplotlib")
    with pytest.raises(ImportError, match=r"insight-gateway\[plot\]"):
        Release.from_json(copy.deepcopy(release_json)).plot("customers")
