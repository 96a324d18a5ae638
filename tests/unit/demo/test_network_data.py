"""The demo network's tables satisfy the declarations of acme-retail-network.yaml."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from gateway.demo.network_data import RETAILERS, WEEKS, generate_network_tables
from gateway.domain.policy_document import load_policy_document

POLICY = load_policy_document(
    (Path(__file__).resolve().parents[3] / "policies" / "acme-retail-network.yaml").read_text()
)[1]


def test_tables_are_deterministic_and_sized() -> None:
    first, second = generate_network_tables(500), generate_network_tables(500)
    assert first.nps_survey.equals(second.nps_survey)
    assert first.nps_survey.num_rows == 500
    assert len(first.nps_survey.column("customer_id").unique()) == 500
    for org in RETAILERS:
        assert first.store_weeks[org].equals(second.store_weeks[org])


@pytest.mark.parametrize("org", RETAILERS)
def test_every_row_satisfies_the_owners_declarations(org: str) -> None:
    table = generate_network_tables(0).store_weeks[org]
    ds = POLICY.datasets[f"{org}.store_weeks"]
    assert set(table.column_names) == set(ds.columns)
    counts = table.column("customers")
    assert pc.min(counts).as_py() >= ds.min_row_count
    for name in ("spend", "promoters"):
        lo, hi = ds.columns[name].per_unit_bounds or (0, 0)
        values = table.column(name)
        assert pc.all(pc.greater_equal(values, pc.multiply(counts, lo))).as_py()
        assert pc.all(pc.less_equal(values, pc.multiply(counts, hi))).as_py()
    # A customer counted once a week at one store: at most WEEKS rows per store.
    per_store = table.group_by("store_id").aggregate([("week", "count")])
    assert pc.max(per_store.column("week_count")).as_py() <= WEEKS == ds.max_rows_per_unit
    keys = ds.columns["region"].keys or ()
    assert set(table.column("region").to_pylist()) == set(keys)


def test_the_story_shopco_spends_less_but_promotes_more() -> None:
    tables = generate_network_tables(0).store_weeks

    def per_customer(org: str, column: str) -> float:
        table = tables[org]
        return float(
            pc.sum(table.column(column)).as_py() / pc.sum(table.column("customers")).as_py()
        )

    assert per_customer("shopco", "spend") < per_customer("bigmart", "spend") - 8
    assert per_customer("shopco", "promoters") > per_customer("bigmart", "promoters") + 0.05
