"""A network benchmark's comparison: one member's means minus the rest of the network's.

When a query splits a benchmark network's rows into the analyst's own organisation and the
rest of the network (``CASE WHEN`` on the network's member column), the gateway adds to the
release a top-level ``"comparison"``: for every mean and every combination of the other group
keys, the difference ``member - rest`` with a 95% interval. The gateway computes it from the
two released (noisy) means alone: it is post-processing, cost nothing, and holds nothing the
release's rows do not already imply. A side that was suppressed gives a null difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["Comparison"]


@dataclass(frozen=True)
class Comparison:
    """``of - against`` for every mean of a benchmark release, per combination of other keys.

    Attributes:
        by: The group-by column that splits member from network (e.g. ``"standing"``).
        of: The member's side of the split (e.g. ``"me"``).
        against: The rest of the network's side (e.g. ``"rest of network"``).
        keys: The release's other group-by columns, in order: each row's key.
        rows: One dict per combination of ``keys``: the key values, then per mean
            ``{"value", "ci95"}`` (the difference and its 95% interval) or None.
    """

    by: str
    of: str
    against: str
    keys: list[str]
    rows: list[dict[str, Any]]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], group_by: Sequence[str]) -> Comparison:
        """Read the release's ``"comparison"`` object; ``group_by`` is the release's.

        Raises:
            ValueError: a field is missing or has the wrong shape.

        Example:
            >>> c = Comparison.from_json({"by": "standing", "of": "me",
            ...     "against": "rest of network", "rows": [{"service": "repair",
            ...     "avg_spend": {"value": -2.5, "ci95": [-4.0, -1.0]}}]},
            ...     ["standing", "service"])
            >>> c.keys, c.aliases
            (['service'], ['avg_spend'])
        """
        if not isinstance(raw, Mapping):
            raise ValueError("release field 'comparison' must be an object")
        names = {}
        for field in ("by", "of", "against"):
            value = raw.get(field)
            if not isinstance(value, str):
                raise ValueError(f"release field 'comparison.{field}' must be a string")
            names[field] = value
        rows = raw.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("release field 'comparison.rows' must be a list of objects")
        if names["by"] not in group_by:
            raise ValueError("release field 'comparison.by' must be one of the group-by columns")
        keys = [column for column in group_by if column != names["by"]]
        return cls(**names, keys=keys, rows=[dict(r) for r in rows])

    @property
    def aliases(self) -> list[str]:
        """The means compared, in the order they first appear in the rows."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in self.keys:
                    seen.setdefault(key, None)
        return list(seen)

    def to_arrow(self) -> pa.Table:
        """The comparison as an Arrow table, one row per combination of the other keys.

        Columns, in order: each of :attr:`keys`; then for each mean ``a``: ``a`` (the
        difference ``of - against``), ``a_ci95_low`` and ``a_ci95_high`` (float64; all null
        where either side was suppressed).

        Example:
            >>> release.comparison.to_arrow().column_names  # doctest: +SKIP
            ['service_type', 'avg_spend', 'avg_spend_ci95_low', 'avg_spend_ci95_high']
        """
        import pyarrow as pa

        from clients.release import _scalar_columns  # release imports this module

        names: list[str] = []
        arrays: list[pa.Array] = []
        for column in self.keys:
            names.append(column)
            arrays.append(pa.array([row.get(column) for row in self.rows]))
        for alias in self.aliases:
            for suffix, array in _scalar_columns([row.get(alias) for row in self.rows]):
                names.append(f"{alias}_{suffix}" if suffix else alias)
                arrays.append(array.cast(pa.float64()) if not suffix else array)
        return pa.Table.from_arrays(arrays, names=names)

    def to_pandas(self) -> pd.DataFrame:
        """The comparison as a pandas DataFrame with the columns of :meth:`to_arrow`.

        Raises:
            ImportError: pandas is not installed (``pip install 'insight-gateway[pandas]'``).

        Example:
            >>> release.comparison.to_pandas()  # doctest: +SKIP
        """
        try:
            import pandas  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "Comparison.to_pandas() needs pandas; install it with "
                "`pip install 'insight-gateway[pandas]'` or use Comparison.to_arrow()"
            ) from exc
        return self.to_arrow().to_pandas()
