"""Typed views of what a query answers: a :class:`Release` and an :class:`Explanation`.

A release holds only noisy values and their 95% intervals; nothing in it is row-level. Rows of
public-key groups whose noisy count fell under the policy's minimum group size stay in the
release with ``"suppressed": true`` and null values, so the table views keep them as rows with
nulls and ``suppressed = True`` rather than dropping them. A network benchmark's release also
carries a :class:`~clients.comparison.Comparison` (member minus rest of network, per mean).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clients.comparison import Comparison

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from matplotlib.axes import Axes

__all__ = ["Comparison", "Explanation", "Release"]

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
        comparison: For a network benchmark split (one member against the rest of the
            network), the difference of every mean with its 95% interval; None otherwise.
    """

    query_id: str
    replay: bool
    epsilon_spent: float
    policy_version: int
    budget: dict[str, Any]
    group_by: list[str]
    rows: list[dict[str, Any]]
    raw: dict[str, Any]
    comparison: Comparison | None = None

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
        comparison = raw.get("comparison")
        return cls(
            query_id=str(_require(raw, "query_id")),
            replay=bool(raw.get("replay", False)),
            epsilon_spent=float(_require(raw, "epsilon_spent")),
            policy_version=int(_require(raw, "policy_version")),
            budget=dict(budget),
            group_by=list(group_by),
            rows=[dict(r) for r in rows],
            raw=dict(raw),
            comparison=None if comparison is None else Comparison.from_json(comparison, group_by),
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

    def kind(self, alias: str) -> str:
        """How aggregate ``alias`` is shaped: ``"histogram"``, ``"quantile"`` or ``"scalar"``.

        A histogram cell holds one noisy count per bin; a quantile cell a value chosen by the
        exponential mechanism, with ``rank_error95`` instead of an interval; every other
        aggregate (count, sum, mean) is a value with its 95% interval.

        Raises:
            KeyError: ``alias`` is not an aggregate of this release.

        Example:
            >>> release.kind("avg_spend")  # doctest: +SKIP
            'scalar'
        """
        if alias not in self.aliases:
            raise KeyError(f"{alias!r} is not an aggregate of this release ({self.aliases})")
        for row in self.rows:
            cell = row.get(alias)
            if isinstance(cell, Mapping):
                if "values" in cell or "bins" in cell:
                    return "histogram"
                if "rank_error95" in cell:
                    return "quantile"
        return "scalar"

    def to_arrow(self) -> pa.Table:
        """The release as an Arrow table, one row per group.

        Columns, in order: each group-by column; then for each aggregate ``a``:

        - ``a``: the noisy value (int64 for counts, float64 otherwise);
        - ``a_ci95_low`` and ``a_ci95_high``: the bounds of its 95% interval (float64);
        - for a quantile, also ``a_rank_error95``: its interval is null, and this bounds,
          with 95% probability, how many rows its rank is from the requested one;
        - for a histogram, ``a``, ``a_ci95_low`` and ``a_ci95_high`` are lists with one
          entry per bin, and ``a_bins`` lists the bins as ``[low, high]`` pairs;

        then a boolean ``suppressed``, true for a public group whose noisy count fell under
        the policy's minimum group size: its aggregate columns are all null. An empty
        release yields a table with no aggregate columns.

        Example:
            >>> release.to_arrow().column_names  # doctest: +SKIP
            ['region', 'customers', 'customers_ci95_low', 'customers_ci95_high', 'suppressed']
        """
        import pyarrow as pa

        names: list[str] = []
        arrays: list[pa.Array] = []
        for column in self.group_by:
            names.append(column)
            arrays.append(pa.array([row.get(column) for row in self.rows]))
        for alias in self.aliases:
            kind = self.kind(alias)
            cells = [row.get(alias) for row in self.rows]
            columns = _histogram_columns(cells) if kind == "histogram" else _scalar_columns(cells)
            if kind == "quantile":
                columns.append(("rank_error95", _rank_errors(cells)))
            for suffix, array in columns:
                names.append(f"{alias}_{suffix}" if suffix else alias)
                arrays.append(array)
        names.append(_SUPPRESSED)
        arrays.append(pa.array([bool(row.get(_SUPPRESSED)) for row in self.rows], pa.bool_()))
        return pa.Table.from_arrays(arrays, names=names)

    def to_pandas(self) -> pd.DataFrame:
        """The release as a pandas DataFrame with the columns of :meth:`to_arrow`.

        Each aggregate ``a`` gives ``a`` (the value), ``a_ci95_low`` and ``a_ci95_high``;
        suppressed groups are rows with ``suppressed = True`` and NaN values. A benchmark's
        :attr:`comparison` has rows of its own (one per combination of the other keys, not
        per group), so it is a table of its own: ``release.comparison.to_pandas()``.

        Raises:
            ImportError: pandas is not installed (``pip install 'insight-gateway[pandas]'``).

        Example:
            >>> release.to_pandas()[["region", "customers", "customers_ci95_low"]]  # doctest: +SKIP
        """
        try:
            import pandas  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "Release.to_pandas() needs pandas; install it with "
                "`pip install 'insight-gateway[pandas]'` or use Release.to_arrow()"
            ) from exc
        return self.to_arrow().to_pandas()

    def plot(self, measure: str, ax: Axes | None = None) -> Axes:
        """Draw ``measure`` as a bar chart with its 95% intervals as error bars.

        One bar per group, labelled by the group-by values: with two or more group-by
        columns the bars are grouped by the first one and coloured by the others. A
        histogram is drawn bin by bin, one colour per group. A suppressed group has no bar,
        only the word "suppressed" at the baseline; a quantile has no interval, so no error
        bar. Works headless (any matplotlib backend, e.g. Agg).

        Args:
            measure: The aggregate's name (its ``as``), e.g. ``"avg_spend"``.
            ax: The matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes drawn on.

        Raises:
            KeyError: ``measure`` is not an aggregate of this release.
            ImportError: matplotlib is not installed (``pip install 'insight-gateway[plot]'``).

        Example:
            >>> ax = release.plot("avg_spend")  # doctest: +SKIP
            >>> ax.figure.savefig("avg_spend.png")  # doctest: +SKIP
        """
        from clients._plot import plot_release

        return plot_release(self, measure, ax)


def _scalar_columns(cells: list[Any]) -> list[tuple[str, pa.Array]]:
    import pyarrow as pa

    values, lows, highs = [], [], []
    for cell in cells:
        value, low, high = _cell(cell)
        values.append(value)
        lows.append(low)
        highs.append(high)
    value_array = pa.array(values)
    if pa.types.is_null(value_array.type):
        value_array = value_array.cast(pa.float64())
    return [
        ("", value_array),
        ("ci95_low", pa.array(lows, pa.float64())),
        ("ci95_high", pa.array(highs, pa.float64())),
    ]


def _histogram_columns(cells: list[Any]) -> list[tuple[str, pa.Array]]:
    import pyarrow as pa

    values: list[list[float] | None] = []
    lows: list[list[float | None] | None] = []
    highs: list[list[float | None] | None] = []
    bins: list[list[list[float]] | None] = []
    for cell in cells:
        if not isinstance(cell, Mapping) or not isinstance(cell.get("values"), list):
            values.append(None)
            lows.append(None)
            highs.append(None)
            bins.append(None)
            continue
        counts = [float(v) for v in cell["values"]]
        intervals = [_pair(i) for i in cell.get("ci95") or []]
        if len(intervals) != len(counts):
            intervals = [(None, None)] * len(counts)
        values.append(counts)
        lows.append([low for low, _ in intervals])
        highs.append([high for _, high in intervals])
        bins.append([[float(b) for b in pair] for pair in cell.get("bins") or []])
    floats = pa.list_(pa.float64())
    return [
        ("", pa.array(values, floats)),
        ("ci95_low", pa.array(lows, floats)),
        ("ci95_high", pa.array(highs, floats)),
        ("bins", pa.array(bins, pa.list_(floats))),
    ]


def _rank_errors(cells: list[Any]) -> pa.Array:
    import pyarrow as pa

    errors = [
        _float_or_none(cell.get("rank_error95")) if isinstance(cell, Mapping) else None
        for cell in cells
    ]
    return pa.array(errors, pa.float64())


def _cell(cell: Any) -> tuple[Any, float | None, float | None]:
    """Split one aggregate cell into ``(value, ci_low, ci_high)``; nulls stay nulls."""
    if isinstance(cell, Mapping):
        return (cell.get("value"), *_pair(cell.get("ci95")))
    return cell, None, None


def _pair(interval: Any) -> tuple[float | None, float | None]:
    """``(low, high)`` of a ``[low, high]`` interval; anything else is ``(None, None)``."""
    if isinstance(interval, list | tuple) and len(interval) == 2:
        low, high = interval
        if not isinstance(low, list | tuple) and not isinstance(high, list | tuple):
            return _float_or_none(low), _float_or_none(high)
    return None, None


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
