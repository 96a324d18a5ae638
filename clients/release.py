"""Typed views of what a query answers: a :class:`Release` and an :class:`Explanation`.

A release holds only noisy values and their 95% intervals; nothing in it is row-level. Rows of
public-key groups whose noisy count fell under the policy's minimum group size stay in the
release with ``"suppressed": true`` and null values, so the table views keep them as rows with
nulls and ``suppressed = True`` rather than dropping them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Explanation", "Release"]

_SUPPRESSED = "suppressed"


def _require(raw: Mapping[str, Any], key: str) -> Any:
    if key not in raw:
        raise ValueError(f"release JSON lacks the field {key!r}")
    return raw[key]


@dataclass(frozen=True)
class Release:
    """The noisy answer to one query, as the gateway released it.

    Attributes:
        query_id: The gateway's id of the query; a replay carries the original id.
        replay: True when the gateway returned a stored release at no cost.
        epsilon_spent: ε charged for this answer (0 for a replay).
        policy_version: The policy version the query ran under.
        budget: The analyst organisation's budget after the query
            (``epsilon_total``, ``epsilon_spent``, ``epsilon_left``).
        group_by: The group-by columns, in order.
        rows: One dict per group: group-key values, then ``{"value", "ci95"}`` per aggregate.
        raw: The full JSON object the gateway answered.
    """

    query_id: str
    replay: bool
    epsilon_spent: float
    policy_version: int
    budget: dict[str, Any]
    group_by: list[str]
    rows: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Release:
        """Build a release from the gateway's JSON, keeping the whole object in ``raw``.

        Raises:
            ValueError: A required field is missing or has the wrong shape.

        Example:
            >>> r = Release.from_json({"query_id": "q1", "replay": False, "epsilon_spent": 0.5,
            ...     "policy_version": 3, "budget": {}, "group_by": [], "rows": []})
            >>> r.epsilon_spent
            0.5
        """
        group_by = _require(raw, "group_by")
        rows = _require(raw, "rows")
        budget = raw.get("budget") or {}
        if not isinstance(group_by, list) or not all(isinstance(c, str) for c in group_by):
            raise ValueError("release field 'group_by' must be a list of column names")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("release field 'rows' must be a list of objects")
        if not isinstance(budget, dict):
            raise ValueError("release field 'budget' must be an object")
        return cls(
            query_id=str(_require(raw, "query_id")),
            replay=bool(raw.get("replay", False)),
            epsilon_spent=float(_require(raw, "epsilon_spent")),
            policy_version=int(_require(raw, "policy_version")),
            budget=dict(budget),
            group_by=list(group_by),
            rows=[dict(r) for r in rows],
            raw=dict(raw),
        )

    @property
    def aliases(self) -> list[str]:
        """The aggregate names in the order they first appear in the rows."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in self.group_by and key != _SUPPRESSED:
                    seen.setdefault(key, None)
        return list(seen)

    def to_arrow(self) -> pa.Table:
        """The release as an Arrow table, one row per group.

        Columns, in order: each group-by column; for each aggregate ``a``: ``a``,
        ``a_ci_low``, ``a_ci_high``; then a boolean ``suppressed``. Interval columns are
        float64; a suppressed row has nulls in every aggregate column. An empty release
        yields a table with no aggregate columns.

        Example:
            >>> release.to_arrow().column_names  # doctest: +SKIP
            ['region', 'customers', 'customers_ci_low', 'customers_ci_high', 'suppressed']
        """
        names: list[str] = []
        arrays: list[pa.Array] = []
        for column in self.group_by:
            names.append(column)
            arrays.append(pa.array([row.get(column) for row in self.rows]))
        for alias in self.aliases:
            values, lows, highs = [], [], []
            for row in self.rows:
                value, low, high = _cell(row.get(alias))
                values.append(value)
                lows.append(low)
                highs.append(high)
            value_array = pa.array(values)
            if pa.types.is_null(value_array.type):
                value_array = value_array.cast(pa.float64())
            names += [alias, f"{alias}_ci_low", f"{alias}_ci_high"]
            arrays += [value_array, pa.array(lows, pa.float64()), pa.array(highs, pa.float64())]
        names.append(_SUPPRESSED)
        arrays.append(pa.array([bool(row.get(_SUPPRESSED)) for row in self.rows], pa.bool_()))
        return pa.Table.from_arrays(arrays, names=names)

    def to_pandas(self) -> pd.DataFrame:
        """The release as a pandas DataFrame with the columns of :meth:`to_arrow`.

        Raises:
            ImportError: pandas is not installed (``pip install 'insight-gateway[pandas]'``).

        Example:
            >>> release.to_pandas()[["region", "customers"]]  # doctest: +SKIP
        """
        try:
            import pandas  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "Release.to_pandas() needs pandas; install it with "
                "`pip install 'insight-gateway[pandas]'` or use Release.to_arrow()"
            ) from exc
        return self.to_arrow().to_pandas()


def _cell(cell: Any) -> tuple[Any, float | None, float | None]:
    """Split one aggregate cell into ``(value, ci_low, ci_high)``; nulls stay nulls."""
    if isinstance(cell, Mapping):
        value = cell.get("value")
        interval = cell.get("ci95")
        if isinstance(interval, list | tuple) and len(interval) == 2:
            low, high = interval
            return value, _float_or_none(low), _float_or_none(high)
        return value, None, None
    return cell, None, None


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class Explanation:
    """What a query would cost and how accurate it would be; nothing was spent.

    Attributes:
        epsilon: The ε the query would be charged, when the gateway states it.
        raw: The full JSON object the gateway answered (cost, expected error, plan details).
    """

    epsilon: float | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Explanation:
        """Build an explanation from the gateway's JSON, reading ``epsilon`` when present.

        Example:
            >>> Explanation.from_json({"epsilon": 0.5, "expected_error": {}}).epsilon
            0.5
        """
        epsilon = raw.get("epsilon")
        return cls(epsilon=None if epsilon is None else float(epsilon), raw=dict(raw))
