"""Accuracy first: the smallest ε whose intervals meet an analyst's target.

The target bounds the ``confidence`` half-width of every count, sum and histogram bin, and of
every mean at the stated group size (worst case over the mean's value). Half-widths shrink as ε
grows, so a bisection over ε finds the smallest sufficient value; it is rounded *up* to four
significant digits so that the same target always gives the same ε (and replays).

Example:
    >>> epsilon_for_accuracy(lambda e: check_query(request, policy, "acme", epsilon=e),
    ...                      Accuracy(abs=50), cap=1.0)
    0.1234
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.domain.checker import CheckedQuery
from gateway.domain.errors import InvalidRequest, PolicyViolation
from gateway.domain.plan import MIN_EPSILON, Accuracy
from gateway.dp.noise import halfwidth


def worst_halfwidth(checked: CheckedQuery, accuracy: Accuracy) -> float:
    """The largest half-width, at ``accuracy.confidence``, over the outputs the target covers."""
    level = accuracy.confidence
    stats = {s.key: s for s in checked.statistics}

    def half(key: str) -> float:
        s = stats[key]
        return halfwidth(checked.measure, s.sensitivity, s.epsilon, level)

    widths = []
    if accuracy.rel is not None and any(o.fn != "count" for o in checked.outputs):
        raise InvalidRequest(
            "accuracy.rel: a relative target applies to counts only; give abs for other outputs"
        )
    for out in checked.outputs:
        if out.fn == "count":
            widths.append(half("count"))
        elif out.fn == "histogram":
            assert out.sum is not None
            widths.append(half(out.sum))
        elif out.fn == "sum":
            assert out.sum is not None
            widths.append(half(out.sum) / out.scale)
        elif out.fn == "mean":
            assert out.sum is not None and out.count is not None
            if accuracy.at_count is None:
                raise InvalidRequest(
                    "accuracy.at_count: a mean's error depends on its group's size; give it"
                )
            s = stats[out.sum]
            worst = max(s.hi - s.mid, s.mid - s.lo) / out.scale
            widths.append((half(out.sum) / out.scale + worst * half("count")) / accuracy.at_count)
    if not widths:
        raise InvalidRequest("accuracy: a target applies to counts, sums, means and histograms")
    return max(widths)


def _round_up(value: float) -> float:
    digits = 3 - math.floor(math.log10(value))
    factor = 10.0**digits
    return math.ceil(value * factor - 1e-9) / factor


def epsilon_for_accuracy(
    check: Callable[[float], CheckedQuery],
    accuracy: Accuracy,
    cap: float,
    cap_path: str = "privacy.max_epsilon_per_query",
) -> float:
    """The smallest ε (≤ ``cap``) whose half-widths meet ``accuracy``.

    Raises:
        PolicyViolation: even the per-query cap cannot meet the target.
    """
    target = accuracy.halfwidth
    if worst_halfwidth(check(cap), accuracy) > target:
        raise PolicyViolation(
            cap_path,
            f"the accuracy target needs more than the per-query cap of epsilon {cap:g}",
        )
    lo, hi = MIN_EPSILON, cap
    if worst_halfwidth(check(lo), accuracy) <= target:
        return lo
    for _ in range(60):
        if hi - lo <= hi * 1e-5:
            break
        mid = math.sqrt(lo * hi)
        if worst_halfwidth(check(mid), accuracy) <= target:
            hi = mid
        else:
            lo = mid
    return min(_round_up(hi), cap)
