"""Turn exact per-group cells into a noisy release with 95% intervals.

:func:`plan_noise` builds one OpenDP mechanism per statistic of a checked query and reports the
certified cost *without touching data*; :func:`release_rows` draws the noise. The service layer
reserves the cost between the two calls.

Intervals: counts and sums get the exact discrete-Laplace interval (coverage ≥ 95%). A mean is
``noisy sum / noisy count``, clamped to the measure's bounds. Its interval linearises the ratio
and adds the two exact half-widths, ``(h_sum / scale + |mean| · h_count) / noisy count``, and is
clamped to the bounds as well. A normal (delta-method) interval would under-cover: the sum's
noise usually dominates and is Laplace, whose ``±1.96σ`` covers only about 93.7%.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.checker import CheckedQuery, OutputColumn
from gateway.dp.noise import LaplaceVector

GroupKey = tuple[str | int, ...]


@dataclass(frozen=True)
class NoisePlan:
    """The mechanisms of one query, keyed by statistic; ``cost`` is the ε to reserve."""

    mechanisms: Mapping[str, LaplaceVector]

    @property
    def cost(self) -> float:
        return sum(m.cost for m in self.mechanisms.values())


def plan_noise(checked: CheckedQuery) -> NoisePlan:
    """Build the mechanisms for ``checked``; reads no data and draws no noise."""
    return NoisePlan({s.key: LaplaceVector(s.sensitivity, s.epsilon) for s in checked.statistics})


def _number(value: float, scale: int) -> float | int:
    return int(value) if scale == 1 and float(value).is_integer() else round(value, 6)


def _cell(value: float, lo: float, hi: float, scale: int) -> dict[str, Any]:
    return {"value": _number(value, scale), "ci95": [_number(lo, scale), _number(hi, scale)]}


def _mean_cell(
    out: OutputColumn,
    noisy_sum: int,
    noisy_count: int,
    sum_mech: LaplaceVector,
    count_mech: LaplaceVector,
) -> dict[str, Any]:
    assert out.bounds is not None
    lo, hi = out.bounds
    if noisy_count < 1:
        return {"value": round((lo + hi) / 2, 6), "ci95": [lo, hi]}
    mean = min(max(noisy_sum / out.scale / noisy_count, lo), hi)
    half = (sum_mech.halfwidth95 / out.scale + abs(mean) * count_mech.halfwidth95) / noisy_count
    return {
        "value": round(mean, 6),
        "ci95": [round(max(lo, mean - half), 6), round(min(hi, mean + half), 6)],
    }


def expected_halfwidths(checked: CheckedQuery, noise: NoisePlan) -> list[dict[str, Any]]:
    """Expected 95% half-widths per output, from the mechanisms alone (spends nothing).

    A mean's width depends on its group's size, so it is given for several sizes, assuming the
    worst case for the mean's value.
    """
    result = []
    for out in checked.outputs:
        entry: dict[str, Any] = {"as": out.alias, "fn": out.fn}
        if out.fn == "count":
            entry["ci95_halfwidth"] = noise.mechanisms["count"].halfwidth95
        elif out.fn == "sum":
            assert out.sum is not None
            entry["ci95_halfwidth"] = noise.mechanisms[out.sum].halfwidth95 / out.scale
        else:
            assert out.sum is not None and out.count is not None and out.bounds is not None
            s, c = noise.mechanisms[out.sum], noise.mechanisms[out.count]
            worst = max(abs(out.bounds[0]), abs(out.bounds[1]))
            entry["ci95_halfwidth_at_group_size"] = {
                str(n): round(
                    min(
                        (s.halfwidth95 / out.scale + worst * c.halfwidth95) / n,
                        out.bounds[1] - out.bounds[0],
                    ),
                    6,
                )
                for n in (100, 1_000, 10_000, 100_000)
            }
        result.append(entry)
    return result


def release_rows(
    checked: CheckedQuery,
    noise: NoisePlan,
    exact: Mapping[GroupKey, Mapping[str, int]],
) -> list[dict[str, Any]]:
    """Draw noise for every group of the public key domain and format the release rows.

    ``exact`` maps a group key to its exact statistic cells; groups absent from it are empty
    (zeros). Exact values never leave this function: only noisy values and intervals do. A group
    whose *noisy* count is below ``min_group_size`` is kept, flagged ``suppressed``, with null
    values.
    """
    keys: Sequence[GroupKey] = checked.group_keys
    noisy: dict[str, list[int]] = {}
    for stat in checked.statistics:
        cells = [int(exact.get(k, {}).get(stat.key, 0)) for k in keys]
        noisy[stat.key] = noise.mechanisms[stat.key].release(cells)

    names = [c.name for c in checked.group_by]
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        row: dict[str, Any] = dict(zip(names, key, strict=True))
        count = noisy["count"][i] if "count" in noisy else None
        if count is not None and checked.min_group_size and count < checked.min_group_size:
            row["suppressed"] = True
            for out in checked.outputs:
                row[out.alias] = None
            rows.append(row)
            continue
        for out in checked.outputs:
            if out.fn == "count":
                half = noise.mechanisms["count"].halfwidth95
                assert count is not None
                row[out.alias] = _cell(count, count - half, count + half, 1)
            elif out.fn == "sum":
                assert out.sum is not None
                mech = noise.mechanisms[out.sum]
                total = noisy[out.sum][i] / out.scale
                spread = mech.halfwidth95 / out.scale
                row[out.alias] = _cell(total, total - spread, total + spread, out.scale)
            else:
                assert out.sum is not None and out.count is not None and count is not None
                row[out.alias] = _mean_cell(
                    out,
                    noisy[out.sum][i],
                    count,
                    noise.mechanisms[out.sum],
                    noise.mechanisms[out.count],
                )
        rows.append(row)
    return rows
