"""Upload checks for aggregate datasets: each row must be what its owner declared.

An aggregate dataset's privacy rests on declarations (``count_column``, ``min_row_count``,
``per_unit_bounds``); the gateway checks every uploaded row against them before anything is
stored, so a row that could not come from its customers never reaches a query:

* the count is a non-negative integer (the column's integer type is enforced by ingest);
* a row aggregating fewer than ``min_row_count`` customers is refused;
* a measure's value lies within ``count x per_unit_bounds``: a row claiming more than its
  customers could contribute is refused (an empty value of a nullable measure passes).

:func:`check_aggregate_rows` is a :data:`gateway.service.ingest.BatchCheck`: ingest runs it on
every batch, after the batch's columns are cast to their policy types. A refusal says how many
rows of the batch (up to 65,536 rows) broke which rule, and the rule's policy path; it never
shows a value from the file.

Example:
    >>> check_aggregate_rows(batch, policy.dataset("shopco.store_weeks"))
    Traceback (most recent call last):
    InvalidDataset: the upload has 3 rows aggregating fewer than 10 customers (policy rule:
    datasets.shopco.store_weeks.min_row_count)
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from gateway.domain.errors import InvalidDataset
from gateway.domain.policy import DatasetPolicy

__all__ = ["check_aggregate_rows"]

_SLACK = 1e-9  # relative: a float row value may round a hair beyond count x bound


def _rows(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask.fill_null(False), pa.int64())).as_py() or 0)


def _plural(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def check_aggregate_rows(batch: pa.RecordBatch, policy: DatasetPolicy) -> None:
    """Refuse a batch of an aggregate dataset with a row its declarations do not allow.

    Does nothing for a customer dataset.

    Raises:
        InvalidDataset: naming how many rows broke the rule and the rule's policy path.
    """
    if not policy.is_aggregate or policy.count_column is None:
        return
    path = f"datasets.{policy.id}"
    counts = batch.column(policy.count_column)
    negative = _rows(pc.less(counts, 0))
    if negative:
        raise InvalidDataset(
            f"column {policy.count_column!r} holds a negative count in {_plural(negative)}; "
            f"counts are non-negative integers (policy rule: {path}.count_column)"
        )
    small = _rows(pc.less(counts, policy.min_row_count))
    if small:
        raise InvalidDataset(
            f"the upload has {_plural(small)} aggregating fewer than {policy.min_row_count} "
            f"customers (policy rule: {path}.min_row_count)"
        )
    customers = pc.cast(counts, pa.float64())
    for name, rule in policy.columns.items():
        if name == policy.count_column or rule.per_unit_bounds is None:
            continue
        lo, hi = rule.per_unit_bounds
        values = pc.cast(batch.column(name), pa.float64())
        floor = pc.multiply(customers, lo)
        ceiling = pc.multiply(customers, hi)
        below = pc.less(values, pc.subtract(floor, pc.multiply(pc.abs(floor), _SLACK)))
        above = pc.greater(values, pc.add(ceiling, pc.multiply(pc.abs(ceiling), _SLACK)))
        outside = _rows(pc.or_(below, above))
        if outside:
            raise InvalidDataset(
                f"the upload has {_plural(outside)} where column {name!r} lies outside count x "
                f"per_unit_bounds [{lo:g}, {hi:g}], more than the row's customers could "
                f"contribute (policy rule: {path}.columns.{name}.per_unit_bounds)"
            )
