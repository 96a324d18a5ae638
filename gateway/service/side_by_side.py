"""Release a side-by-side query: each part noised on its own, rows merged by group after.

:func:`gateway.service.queries.run_query` reserves the composite's cost (the sum of its parts')
before calling :func:`release_side_by_side`; every mechanism used here is the one the
composite's :class:`~gateway.dp.release.NoisePlan` certified, taken back under the part's own
statistic names. Merging released rows is post-processing: it costs nothing more.

A merged row holds the ``on`` keys and every part's outputs; a part without that group (its
keys differ) leaves its outputs null, and a row any part withheld (noisy count under its
``min_group_size``) is flagged ``"suppressed": true`` with that part's outputs null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from gateway.domain.checker import CheckedQuery
from gateway.domain.side_by_side import part_key
from gateway.dp.release import NoisePlan, expected_halfwidths, release_rows
from gateway.engine.compiler import compile_query
from gateway.engine.runner import run_exact

__all__ = ["release_side_by_side", "side_by_side_halfwidths"]


def _part_noise(checked: CheckedQuery, noise: NoisePlan, index: int) -> NoisePlan:
    part = checked.parts[index]
    mechanisms = {s.key: noise.mechanisms[part_key(index, s.key)] for s in part.statistics}
    return NoisePlan(mechanisms, part.l0, noise.measure, noise.policy_delta)


def release_side_by_side(
    checked: CheckedQuery,
    noise: NoisePlan,
    tables: Mapping[str, pa.Table],
    max_rows: Mapping[str, int],
    memory_limit: str,
) -> list[dict[str, Any]]:
    """Draw every part's noise and merge the parts' rows by the ``on`` group keys.

    Exact cells stay inside this function, as in ``run_query``: only noisy rows leave it.
    """
    on = [g.name for g in checked.group_by]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    aliases: list[str] = []
    for index, part in enumerate(checked.parts):
        exact = run_exact(compile_query(part, max_rows), tables, memory_limit)
        rows = release_rows(part, _part_noise(checked, noise, index), exact)
        del exact
        outputs = [out.alias for out in part.outputs]
        aliases += outputs
        for row in rows:
            key = tuple(row[name] for name in on)
            target = merged.setdefault(key, {name: row[name] for name in on})
            if row.get("suppressed"):
                target["suppressed"] = True
            target.update((alias, row[alias]) for alias in outputs)
    ordered = [merged[k] for k in sorted(merged, key=lambda k: [str(v) for v in k])]
    keys = [tuple(g) for g in checked.group_keys]
    if set(keys) == set(merged):  # public keys: keep the policy's order, as every release does
        ordered = [merged[k] for k in keys]
    for row in ordered:
        for alias in aliases:
            row.setdefault(alias, None)
    return ordered


def side_by_side_halfwidths(checked: CheckedQuery, noise: NoisePlan) -> list[dict[str, Any]]:
    """Expected 95% half-widths of every part's outputs (``explain``; spends nothing)."""
    return [
        {**entry, "part": index}
        for index, part in enumerate(checked.parts)
        for entry in expected_halfwidths(part, _part_noise(checked, noise, index))
    ]
