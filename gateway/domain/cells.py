"""Exact per-group results, handed from the engine to the DP layer and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field

GroupKey = tuple[str | int, ...]


@dataclass
class ExactCells:
    """Exact per-group results. They go to the DP layer only, never to a caller.

    ``scalars[group][statistic]`` holds counts and sums; ``bins[statistic][group][bin]`` holds
    histogram and quantile-grid counts.
    """

    scalars: dict[GroupKey, dict[str, int]] = field(default_factory=dict)
    bins: dict[str, dict[GroupKey, dict[int, int]]] = field(default_factory=dict)
