"""Turn exact per-group cells into a noisy release with 95% intervals.

:func:`plan_noise` builds one OpenDP mechanism per statistic of a checked query and reports the
certified cost *without touching data*; :func:`release_rows` draws the noise. The service layer
reserves the cost between the two calls.

Groups: the public key domain (empty groups included), or, for private keys, the groups that
pass DP partition selection on their noisy count. Intervals: counts, sums and histogram bins
get the exact discrete-Laplace interval (coverage ≥ 95%). A mean is ``centre + noisy centred
sum / noisy count`` (the centred sum has half the sensitivity of a plain sum when the bounds
are ``[0, hi]``), clamped to the bounds; its interval linearises the ratio and adds the two
exact half-widths, ``(h_sum / scale + |mean - centre| · h_count) / noisy count`` (a normal
interval would under-cover: the sum's Laplace noise usually dominates). A quantile is a grid
point chosen by the exponential mechanism; its interval is not derived (``ci95`` is null) but
``rank_error95`` bounds, with 95% probability, how many rows its rank is from the best grid
point's (which is ``q · n`` up to ties in the data).

Speed: each statistic's noise is drawn for the whole vector of groups in one OpenDP call;
quantile selections (one OpenDP call per group, about a microsecond per grid point) run on a
small thread pool, since OpenDP's library calls release the interpreter lock, and so do the
vectors of statistics with many cells (a thousand groups, say). Each call is the same
mechanism on the same cells, whichever thread makes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.domain.budget import QueryCost
from gateway.domain.cells import ExactCells
from gateway.domain.checker import CheckedQuery, OutputColumn, Statistic
from gateway.dp.noise import VectorMechanism, vector_mechanism
from gateway.dp.selection import PartitionSelection, QuantileSelector, group_label

GroupKey = tuple[str | int, ...]


Mechanism = VectorMechanism | PartitionSelection | QuantileSelector


@dataclass(frozen=True)
class NoisePlan:
    """The mechanisms of one query, keyed by statistic; :attr:`cost` is what to reserve."""

    mechanisms: Mapping[str, Mechanism]
    l0: int
    measure: str = "epsilon"
    policy_delta: float = 0.0

    @property
    def loss(self) -> float:
        """Certified privacy loss in the policy's measure (ε, or ρ under zCDP)."""
        total = 0.0
        for m in self.mechanisms.values():
            if isinstance(m, PartitionSelection):
                total += m.cost[0]
            elif isinstance(m, QuantileSelector):
                total += m.cost * self.l0  # one selection per group; a customer touches ≤ l0
            else:
                total += m.cost
        return total

    @property
    def delta(self) -> float:
        return sum(m.cost[1] for m in self.mechanisms.values() if isinstance(m, PartitionSelection))

    @property
    def epsilon(self) -> float:
        """The loss as ε (the (ε, δ) equivalent at the policy's δ under zCDP)."""
        return self.cost.epsilon

    @property
    def cost(self) -> QueryCost:
        if self.measure == "rho":
            return QueryCost.zcdp(self.loss, self.policy_delta, self.delta)
        return QueryCost.pure(self.loss, self.delta)

    def laplace(self, key: str) -> VectorMechanism | PartitionSelection:
        """A count, sum or histogram mechanism (Laplace or Gaussian, or partition selection)."""
        mech = self.mechanisms[key]
        assert not isinstance(mech, QuantileSelector)
        return mech


def plan_noise(checked: CheckedQuery) -> NoisePlan:
    """Build the mechanisms for ``checked``; reads no data and draws no noise."""
    mechanisms: dict[str, Mechanism] = {}
    measure = checked.measure
    for s in checked.statistics:
        if s.kind == "count" and checked.private_groups:
            mechanisms[s.key] = PartitionSelection(
                checked.l0,
                checked.rows_per_customer,
                s.epsilon,
                checked.delta,
                checked.min_group_size,
                measure,
            )
        elif s.kind == "quantile":
            assert s.q is not None
            mechanisms[s.key] = QuantileSelector(
                s.q, s.sensitivity, s.epsilon, s.candidates, measure
            )
        else:
            mechanisms[s.key] = vector_mechanism(measure, s.sensitivity, s.epsilon)
    return NoisePlan(mechanisms, checked.l0, measure, checked.delta)


def _number(value: float, scale: int) -> float | int:
    return int(value) if scale == 1 and float(value).is_integer() else round(value, 6)


def _cell(value: float, half: float, scale: int) -> dict[str, Any]:
    return {
        "value": _number(value, scale),
        "ci95": [_number(value - half, scale), _number(value + half, scale)],
    }


def _statistic(checked: CheckedQuery, key: str) -> Statistic:
    return next(s for s in checked.statistics if s.key == key)


def expected_halfwidths(checked: CheckedQuery, noise: NoisePlan) -> list[dict[str, Any]]:
    """Expected 95% half-widths per output, from the mechanisms alone (spends nothing).

    A mean's width depends on its group's size, so it is given for several sizes, assuming the
    worst case for the mean's value; a quantile's accuracy is given as a rank error in rows.
    """
    result = []
    for out in checked.outputs:
        entry: dict[str, Any] = {"as": out.alias, "fn": out.fn}
        if out.fn == "count":
            entry["ci95_halfwidth"] = noise.laplace("count").halfwidth95
        elif out.fn in ("sum", "histogram"):
            assert out.sum is not None
            entry["ci95_halfwidth"] = noise.laplace(out.sum).halfwidth95 / (
                out.scale if out.fn == "sum" else 1
            )
        elif out.fn == "quantile":
            assert out.sum is not None
            mech = noise.mechanisms[out.sum]
            assert isinstance(mech, QuantileSelector)
            entry["rank_error95"] = round(mech.rank_error95, 3)
            entry["grid_step"] = _statistic(checked, out.sum).grid_width
        else:
            assert out.sum is not None and out.count is not None and out.bounds is not None
            s, c = noise.laplace(out.sum), noise.laplace(out.count)
            stat = _statistic(checked, out.sum)
            worst = max(stat.hi - stat.mid, stat.mid - stat.lo) / out.scale
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
    if checked.private_groups:
        count = noise.mechanisms["count"]
        assert isinstance(count, PartitionSelection)
        result.append(
            {"partition_selection": {"threshold": count.threshold, "delta": count.cost[1]}}
        )
    return result


def _groups(
    checked: CheckedQuery, noise: NoisePlan, exact: ExactCells
) -> tuple[list[GroupKey], dict[str, list[int]]]:
    """The released groups and, for private keys, their noisy counts (already drawn)."""
    if not checked.private_groups:
        return list(checked.group_keys), {}
    selection = noise.mechanisms["count"]
    assert isinstance(selection, PartitionSelection)
    labelled = {group_label(k): k for k in exact.scalars}
    kept = selection.release({label: exact.scalars[k]["count"] for label, k in labelled.items()})
    keys = sorted((labelled[label] for label in kept), key=lambda k: [str(v) for v in k])
    return keys, {"count": [kept[group_label(k)] for k in keys]}


# As many workers as cores: more measured slower (three groups of 28,572 candidates, 2 cores:
# 221 ms with 2 workers, 244 ms with 1, 308 ms with 3, 354 ms with 4).
_SELECTION_THREADS = max(1, min(4, os.cpu_count() or 1))
_PARALLEL_CELLS = 512  # below this, handing work to threads costs more than it saves
_selection_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _selection_pool
    if _selection_pool is None:
        _selection_pool = ThreadPoolExecutor(_SELECTION_THREADS, thread_name_prefix="quantile")
    return _selection_pool


def _quantile_choices(
    checked: CheckedQuery,
    noise: NoisePlan,
    exact: ExactCells,
    keys: list[GroupKey],
    vectors: Mapping[str, Mapping[GroupKey, NDArray[np.int64]]],
) -> dict[str, list[int]]:
    """The chosen grid index of every quantile statistic for every released group."""
    jobs = []
    for stat in checked.statistics:
        if stat.kind != "quantile":
            continue
        selector = noise.mechanisms[stat.key]
        assert isinstance(selector, QuantileSelector)
        dense = vectors.get(stat.key)
        empty = np.zeros(stat.candidates, dtype=np.int64)
        for key in keys:
            counts: Mapping[int, int] | NDArray[np.int64]
            if dense is not None:
                counts = dense.get(key, empty)
            else:
                counts = exact.bins.get(stat.key, {}).get(key, {})
            jobs.append((stat.key, selector, counts))
    if not jobs:
        return {}
    if len(jobs) == 1:
        picks = [jobs[0][1].select(jobs[0][2])]
    else:
        picks = list(_pool().map(lambda job: job[1].select(job[2]), jobs))
    choices: dict[str, list[int]] = {}
    for (stat_key, _, _), index in zip(jobs, picks, strict=True):
        choices.setdefault(stat_key, []).append(index)
    return choices


def release_rows(
    checked: CheckedQuery,
    noise: NoisePlan,
    exact: ExactCells,
    vectors: Mapping[str, Mapping[GroupKey, NDArray[np.int64]]] | None = None,
) -> list[dict[str, Any]]:
    """Draw noise for every released group and format the release rows.

    Groups absent from ``exact`` are empty (zeros). ``vectors`` holds quantile bins as dense
    vectors (the engine's fast path); otherwise they are read from ``exact.bins``. Exact values
    never leave this function: only noisy values and intervals do. A public group whose
    *noisy* count is below ``min_group_size`` is kept, flagged ``suppressed``, with null
    values; a private group under the threshold is not released at all (and not counted).
    """
    keys, noisy = _groups(checked, noise, exact)
    histograms: dict[str, list[list[int]]] = {}
    vector_jobs: list[tuple[Statistic, VectorMechanism, list[int]]] = []
    for stat in checked.statistics:
        if stat.key in noisy or stat.kind == "quantile":
            continue
        mech = noise.mechanisms[stat.key]
        assert not isinstance(mech, PartitionSelection | QuantileSelector)
        if stat.kind == "histogram":
            width = len(stat.edges) - 1
            per_group = exact.bins.get(stat.key, {})
            cells = [per_group.get(k, {}).get(b, 0) for k in keys for b in range(width)]
        else:
            cells = [exact.scalars.get(k, {}).get(stat.key, 0) for k in keys]
        vector_jobs.append((stat, mech, cells))
    # One OpenDP call per statistic; statistics with many cells are drawn side by side.
    if sum(len(cells) for _, _, cells in vector_jobs) >= _PARALLEL_CELLS:
        released = list(_pool().map(lambda job: job[1].release(job[2]), vector_jobs))
    else:
        released = [mech.release(cells) for _, mech, cells in vector_jobs]
    for (stat, _, _), flat in zip(vector_jobs, released, strict=True):
        if stat.kind == "histogram":
            width = len(stat.edges) - 1
            histograms[stat.key] = [flat[i * width : (i + 1) * width] for i in range(len(keys))]
        else:
            noisy[stat.key] = flat
    chosen = _quantile_choices(checked, noise, exact, keys, vectors or {})

    names = [g.name for g in checked.group_by]
    columns = [
        (out.alias, _formatter(checked, noise, out, noisy, histograms, chosen))
        for out in checked.outputs
    ]
    counts = noisy.get("count")
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        row: dict[str, Any] = dict(zip(names, key, strict=True))
        if counts is not None and checked.min_group_size and counts[i] < checked.min_group_size:
            row["suppressed"] = True
            for alias, _ in columns:
                row[alias] = None
            rows.append(row)
            continue
        for alias, cell in columns:
            row[alias] = cell(i)
        rows.append(row)
    return rows


def _formatter(
    checked: CheckedQuery,
    noise: NoisePlan,
    out: OutputColumn,
    noisy: dict[str, list[int]],
    histograms: dict[str, list[list[int]]],
    chosen: dict[str, list[int]],
) -> Callable[[int], Any]:
    """The cell of output ``out`` for the ``i``-th released group (what is fixed, looked up
    once per output rather than once per group)."""
    if out.fn == "count":
        counts, count_half = noisy["count"], noise.laplace("count").halfwidth95
        return lambda i: _cell(counts[i], count_half, 1)
    assert out.sum is not None
    stat = _statistic(checked, out.sum)
    if out.fn == "sum":
        sums, half, scale = (
            noisy[out.sum],
            noise.laplace(out.sum).halfwidth95 / out.scale,
            out.scale,
        )
        return lambda i: _cell(sums[i] / scale, half, scale)
    if out.fn == "mean":
        csums, counts = noisy[out.sum], noisy["count"]
        assert out.bounds is not None and out.count is not None
        lo, hi = out.bounds
        scale, centre = out.scale, stat.mid / out.scale
        sum_half = noise.laplace(out.sum).halfwidth95 / scale
        count_half = noise.laplace(out.count).halfwidth95

        def mean(i: int) -> dict[str, Any]:
            noisy_count = counts[i]
            if noisy_count < 1:
                return {"value": round(centre, 6), "ci95": [lo, hi]}
            value = min(max(centre + csums[i] / scale / noisy_count, lo), hi)
            half = (sum_half + abs(value - centre) * count_half) / noisy_count
            return {
                "value": round(value, 6),
                "ci95": [round(max(lo, value - half), 6), round(min(hi, value + half), 6)],
            }

        return mean
    if out.fn == "histogram":
        half = noise.laplace(out.sum).halfwidth95
        edges = stat.edges
        bins = histograms[out.sum]
        return lambda i: {
            "bins": [[edges[b], edges[b + 1]] for b in range(len(edges) - 1)],
            "values": bins[i],
            "ci95": [[v - half, v + half] for v in bins[i]],
        }
    selector = noise.mechanisms[out.sum]
    assert isinstance(selector, QuantileSelector)
    picks, rank_error = chosen[out.sum], round(selector.rank_error95, 3)

    def quantile(i: int) -> dict[str, Any]:
        value = (stat.lo + picks[i] * stat.step) / stat.scale
        return {"value": round(value, 6), "ci95": None, "rank_error95": rank_error}

    return quantile
