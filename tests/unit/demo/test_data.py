"""The demo tables fit the demo policy, overlap as asked, and are deterministic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from gateway.demo.data import (
    STORE_REGIONS,
    DemoTables,
    generate_demo_tables,
    write_demo_files,
)

POLICY_PATH = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"
SMALL = 5_000
MEASURE_TYPES = {"int": pa.int64(), "float": pa.float64()}


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    with POLICY_PATH.open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


@pytest.fixture(scope="module")
def tables() -> DemoTables:
    return generate_demo_tables(customers=SMALL, seed=11)


def _by_dataset(tables: DemoTables) -> dict[str, pa.Table]:
    return {"bigmart.loyalty": tables.loyalty, "acme.survey": tables.survey}


def _keys(tables: DemoTables) -> tuple[set[str], set[str]]:
    return (
        set(tables.loyalty["customer_key"].to_pylist()),
        set(tables.survey["customer_id"].to_pylist()),
    )


def test_each_table_has_one_row_per_customer(tables: DemoTables) -> None:
    loyalty_keys, survey_keys = _keys(tables)
    assert tables.loyalty.num_rows == SMALL
    assert tables.survey.num_rows == SMALL
    assert len(loyalty_keys) == SMALL
    assert len(survey_keys) == SMALL


@pytest.mark.parametrize("dataset", ["bigmart.loyalty", "acme.survey"])
def test_columns_and_types_match_the_policy(
    tables: DemoTables, policy: dict[str, Any], dataset: str
) -> None:
    spec = policy["datasets"][dataset]
    table = _by_dataset(tables)[dataset]
    assert set(table.column_names) == {spec["customer_key"], *spec["columns"]}
    assert table.schema.field(spec["customer_key"]).type == pa.string()
    for name, rule in spec["columns"].items():
        field_type = table.schema.field(name).type
        if rule["use"] == "measure":
            assert field_type == MEASURE_TYPES[rule["type"]], name
        elif rule["use"] == "dimension":
            assert field_type == pa.string(), name


@pytest.mark.parametrize("dataset", ["bigmart.loyalty", "acme.survey"])
def test_public_key_dimensions_stay_within_their_keys(
    tables: DemoTables, policy: dict[str, Any], dataset: str
) -> None:
    table = _by_dataset(tables)[dataset]
    public = {
        name: rule["keys"]
        for name, rule in policy["datasets"][dataset]["columns"].items()
        if rule["use"] == "dimension" and "keys" in rule
    }
    assert public
    for name, keys in public.items():
        seen = set(table[name].to_pylist())
        assert seen <= set(keys), name
        assert len(seen) == len(keys), name  # every public key has customers at this size


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_shared_fraction_is_as_requested(fraction: float) -> None:
    loyalty_keys, survey_keys = _keys(
        generate_demo_tables(customers=SMALL, shared_fraction=fraction, seed=3)
    )
    assert abs(len(loyalty_keys & survey_keys) / SMALL - fraction) <= 0.01


def test_same_seed_gives_same_tables_and_other_seeds_differ() -> None:
    first = generate_demo_tables(customers=2_000, seed=42)
    again = generate_demo_tables(customers=2_000, seed=42)
    other = generate_demo_tables(customers=2_000, seed=43)
    assert first.loyalty.equals(again.loyalty)
    assert first.survey.equals(again.survey)
    assert not first.loyalty.equals(other.loyalty)
    assert not first.survey.equals(other.survey)


def test_no_column_has_nulls(tables: DemoTables) -> None:
    for table in (tables.loyalty, tables.survey):
        for name in table.column_names:
            assert table[name].null_count == 0, name


def test_measures_are_mostly_within_bounds_but_some_need_clamping(
    tables: DemoTables, policy: dict[str, Any]
) -> None:
    outside: dict[str, int] = {}
    for dataset, table in _by_dataset(tables).items():
        for name, rule in policy["datasets"][dataset]["columns"].items():
            if rule["use"] != "measure":
                continue
            lo, hi = rule["bounds"]
            column = table[name]
            assert pc.min(column).as_py() >= lo, name
            outside[name] = pc.sum(pc.greater(column, hi)).as_py()
            assert outside[name] <= 0.02 * table.num_rows, name
    assert outside["spend_90d"] >= 1
    assert outside["visits_90d"] >= 1
    assert outside["nps_score"] == outside["satisfaction"] == outside["tenure_months"] == 0


def test_keys_and_hidden_columns_have_the_fake_formats(tables: DemoTables) -> None:
    key = re.compile(r"C\d{8}")
    for value in tables.loyalty["customer_key"].to_pylist()[:200]:
        assert key.fullmatch(value)
    for value in tables.survey["customer_id"].to_pylist()[:200]:
        assert key.fullmatch(value)
    for value in tables.loyalty["email"].to_pylist()[:200]:
        assert re.fullmatch(r"c\d{8}@example\.invalid", value)
    for value in tables.survey["phone"].to_pylist()[:200]:
        assert re.fullmatch(r"\+00-000-\d{8}", value)


def test_every_store_lies_in_one_region(tables: DemoTables) -> None:
    store_region = dict(STORE_REGIONS)
    assert len(store_region) == 40
    stores = tables.loyalty["store_id"].to_pylist()
    regions = tables.loyalty["region"].to_pylist()
    assert all(store_region[store] == region for store, region in zip(stores, regions, strict=True))


def test_the_story_is_in_the_data(tables: DemoTables) -> None:
    loyalty = tables.loyalty.to_pandas()
    joined = loyalty.merge(
        tables.survey.to_pandas(), left_on="customer_key", right_on="customer_id"
    )
    spend_by_segment = joined.groupby("segment")["spend_90d"].mean()
    assert spend_by_segment["luxury"] > spend_by_segment["premium"] > spend_by_segment["value"]
    nps_by_channel = loyalty.groupby("channel")["nps_score"].mean()
    assert nps_by_channel["app"] > max(nps_by_channel["store"], nps_by_channel["online"]) + 0.5
    spend_by_region = loyalty.groupby("region")["spend_90d"].mean()
    assert spend_by_region.idxmax() == "north"
    assert joined["nps_score"].corr(joined["satisfaction"]) > 0.2


@pytest.mark.parametrize(
    ("customers", "fraction"), [(-1, 0.5), (10, -0.1), (10, 1.5), (10, float("nan"))]
)
def test_nonsense_arguments_are_refused(customers: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        generate_demo_tables(customers=customers, shared_fraction=fraction)


def test_write_demo_files_round_trips(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    paths = write_demo_files(directory, customers=1_000, seed=5)
    expected = generate_demo_tables(customers=1_000, seed=5)
    assert paths == {
        "loyalty": directory / "bigmart_loyalty.parquet",
        "survey": directory / "acme_survey.parquet",
        "loyalty_csv": directory / "bigmart_loyalty.csv",
    }
    assert pq.read_table(paths["loyalty"]).equals(expected.loyalty)
    assert pq.read_table(paths["survey"]).equals(expected.survey)
    from_csv = pa_csv.read_csv(paths["loyalty_csv"])
    assert from_csv.schema == expected.loyalty.schema
    assert from_csv.equals(expected.loyalty)


def test_default_size_has_the_full_shapes() -> None:
    full = generate_demo_tables()
    loyalty_keys, survey_keys = _keys(full)
    assert full.loyalty.num_rows == full.survey.num_rows == 200_000
    assert len(loyalty_keys) == len(survey_keys) == 200_000
    assert len(loyalty_keys & survey_keys) == 100_000
