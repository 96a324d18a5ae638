"""One member against the rest of a benchmark network: differences of released means.

When a query splits a network's rows into one member's and the rest's (a ``CASE WHEN`` bucket
on the network's member column, :class:`~gateway.domain.aggregate_rules.Comparison`), the
release also states, for every mean and every combination of the other group keys, the
difference ``member - rest`` with a 95% interval. It is computed from the two released
(noisy) means alone, so it is post-processing and costs nothing.

The two means carry independent noise, so the variance of their difference is the sum of their
variances; the interval's half-width is ``sqrt(h1² + h2²)`` from the two means' 95%
half-widths (the wider side of each, where a mean's interval was clamped to its bounds). For
normal noise that is exact; for Laplace noise, whose tails are heavier, it still covers: the
sum of two equal Laplace variables exceeds ``sqrt(2)`` times one's 95% half-width with
probability 4.5%, and with unequal scales the coverage stays above 95%, tending to it as one
noise dominates. (A mean's own interval is already a ratio approximation.)
"""

from __future__ import annotations

import math
from typing import Any

from gateway.domain.checker import CheckedQuery

__all__ = ["benchmark_comparison"]


def _halfwidth(cell: dict[str, Any]) -> float:
    value = float(cell["value"])
    low, high = (float(b) for b in cell["ci95"])
    return max(value - low, high - value)


def _difference(mine: Any, rest: Any) -> dict[str, Any] | None:
    if not isinstance(mine, dict) or not isinstance(rest, dict):
        return None  # a side withheld (suppressed) or absent: nothing to compare
    if mine.get("value") is None or rest.get("value") is None:
        return None
    difference = float(mine["value"]) - float(rest["value"])
    half = math.hypot(_halfwidth(mine), _halfwidth(rest))
    return {
        "value": round(difference, 6),
        "ci95": [round(difference - half, 6), round(difference + half, 6)],
    }


def benchmark_comparison(checked: CheckedQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"comparison": {...}}`` for a benchmark split, ``{}`` for any other query.

    Example:
        >>> benchmark_comparison(checked, release["rows"])["comparison"]["rows"][0]
        {'region': 'north', 'avg_spend': {'value': -2.41, 'ci95': [-4.02, -0.8]}}
    """
    split = checked.comparison
    if split is None:
        return {}
    others = [g.name for g in checked.group_by if g.name != split.group]
    means = [out.alias for out in checked.outputs if out.fn == "mean"]
    by_side: dict[tuple[Any, tuple[Any, ...]], dict[str, Any]] = {
        (row[split.group], tuple(row[name] for name in others)): row for row in rows
    }
    entries = []
    for key in dict.fromkeys(tuple(row[name] for name in others) for row in rows):
        mine, rest = by_side.get((split.of, key), {}), by_side.get((split.against, key), {})
        entry: dict[str, Any] = dict(zip(others, key, strict=True))
        for alias in means:
            entry[alias] = _difference(mine.get(alias), rest.get(alias))
        entries.append(entry)
    return {
        "comparison": {
            "by": split.group,
            "of": split.of,
            "against": split.against,
            "rows": entries,
        }
    }
