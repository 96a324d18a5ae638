"""Release and Explanation read the gateway's JSON and keep suppressed groups as null rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from clients import Release
from clients.release import Explanation


def test_fields_come_from_the_json(release_json: dict[str, Any]) -> None:
    release = Release.from_json(release_json)
    assert release.query_id == "q-123"
    assert release.replay is False
    assert release.epsilon_spent == 0.5
    assert release.policy_version == 3
    assert release.budget["epsilon_left"] == 5.5
    assert release.group_by == ["region"]
    assert len(release.rows) == 2
    assert release.raw == release_json
    assert release.aliases == ["customers", "avg_spend"]


def test_release_is_frozen(release_json: dict[str, Any]) -> None:
    release = Release.from_json(release_json)
    with pytest.raises(AttributeError):
        release.epsilon_spent = 0.0  # type: ignore[misc]


def test_replay(release_json: dict[str, Any]) -> None:
    release = Release.from_json({**release_json, "replay": True, "epsilon_spent": 0})
    assert release.replay is True
    assert release.epsilon_spent == 0.0


@pytest.mark.parametrize("missing", ["query_id", "epsilon_spent", "policy_version", "rows"])
def test_missing_field_is_refused(release_json: dict[str, Any], missing: str) -> None:
    del release_json[missing]
    with pytest.raises(ValueError, match=missing):
        Release.from_json(release_json)


def test_to_arrow_columns_and_suppressed_row(release_json: dict[str, Any]) -> None:
    table = Release.from_json(release_json).to_arrow()
    assert table.column_names == [
        "region",
        "customers",
        "customers_ci95_low",
        "customers_ci95_high",
        "avg_spend",
        "avg_spend_ci95_low",
        "avg_spend_ci95_high",
        "suppressed",
    ]
    assert table.to_pydict() == {
        "region": ["north", "south"],
        "customers": [1234, None],
        "customers_ci95_low": [1222.0, None],
        "customers_ci95_high": [1246.0, None],
        "avg_spend": [81.4, None],
        "avg_spend_ci95_low": [79.9, None],
        "avg_spend_ci95_high": [82.9, None],
        "suppressed": [False, True],
    }
    assert table.schema.field("customers").type == pa.int64()
    assert table.schema.field("avg_spend").type == pa.float64()
    assert table.schema.field("customers_ci95_low").type == pa.float64()
    assert table.schema.field("suppressed").type == pa.bool_()


def test_suppressed_cells_as_objects_with_null_values(release_json: dict[str, Any]) -> None:
    release_json["rows"][1] = {
        "region": "south",
        "customers": {"value": None, "ci95": None},
        "avg_spend": {"value": None, "ci95": [None, None]},
        "suppressed": True,
    }
    table = Release.from_json(release_json).to_arrow()
    assert table.column("customers").to_pylist() == [1234, None]
    assert table.column("avg_spend_ci95_high").to_pylist() == [82.9, None]


def test_all_suppressed_values_are_float_columns(release_json: dict[str, Any]) -> None:
    release_json["rows"] = [release_json["rows"][1]]
    table = Release.from_json(release_json).to_arrow()
    assert table.schema.field("customers").type == pa.float64()
    assert table.column("suppressed").to_pylist() == [True]


def test_release_without_group_by_or_rows(release_json: dict[str, Any]) -> None:
    release_json["group_by"] = []
    release_json["rows"] = [{"customers": {"value": 10, "ci95": [5, 15]}}]
    assert Release.from_json(release_json).to_arrow().column_names == [
        "customers",
        "customers_ci95_low",
        "customers_ci95_high",
        "suppressed",
    ]
    release_json["rows"] = []
    empty = Release.from_json(release_json).to_arrow()
    assert empty.num_rows == 0
    assert empty.column_names == ["suppressed"]


def test_to_pandas(release_json: dict[str, Any]) -> None:
    frame = Release.from_json(release_json).to_pandas()
    assert list(frame.columns) == Release.from_json(release_json).to_arrow().column_names
    assert frame["region"].tolist() == ["north", "south"]
    assert frame["suppressed"].tolist() == [False, True]
    assert frame["customers"].isna().tolist() == [False, True]
    assert frame.loc[0, "avg_spend_ci95_low"] == pytest.approx(79.9)


def test_to_pandas_without_pandas_says_what_to_install(
    release_json: dict[str, Any], uninstall: Callable[[str], None]
) -> None:
    uninstall("pandas")
    with pytest.raises(ImportError, match=r"insight-gateway\[pandas\]"):
        Release.from_json(release_json).to_pandas()


def test_explanation_reads_epsilon() -> None:
    raw = {"epsilon": 0.25, "expected_error": {"customers": 12.0}}
    explanation = Explanation.from_json(raw)
    assert explanation.epsilon == 0.25
    assert explanation.raw == raw
    assert Explanation.from_json({"cost": 1}).epsilon is None


def test_quantile_has_null_interval_and_its_rank_error(release_json: dict[str, Any]) -> None:
    release_json["rows"][0]["median_spend"] = {"value": 75.5, "ci95": None, "rank_error95": 12.0}
    release_json["rows"][1]["median_spend"] = None
    release = Release.from_json(release_json)
    assert release.kind("median_spend") == "quantile"
    assert release.kind("avg_spend") == "scalar"
    table = release.to_arrow()
    assert table.column_names[-5:] == [
        "median_spend",
        "median_spend_ci95_low",
        "median_spend_ci95_high",
        "median_spend_rank_error95",
        "suppressed",
    ]
    assert table.column("median_spend").to_pylist() == [75.5, None]
    assert table.column("median_spend_ci95_low").to_pylist() == [None, None]
    assert table.column("median_spend_rank_error95").to_pylist() == [12.0, None]


@pytest.mark.parametrize("bins", [2, 3])
def test_histogram_gives_list_columns_per_bin(release_json: dict[str, Any], bins: int) -> None:
    edges = [0, 50, 100, 250][: bins + 1]
    cell = {
        "bins": [[edges[i], edges[i + 1]] for i in range(bins)],
        "values": list(range(10, 10 + bins)),
        "ci95": [[v - 4, v + 4] for v in range(10, 10 + bins)],
    }
    release_json["rows"][0]["spend_hist"] = cell
    release_json["rows"][1]["spend_hist"] = None
    release = Release.from_json(release_json)
    assert release.kind("spend_hist") == "histogram"
    table = release.to_arrow()
    assert table.column("spend_hist").to_pylist() == [[float(v) for v in cell["values"]], None]
    assert table.column("spend_hist_ci95_low").to_pylist()[0] == [v - 4.0 for v in cell["values"]]
    assert table.column("spend_hist_ci95_high").to_pylist()[0] == [v + 4.0 for v in cell["values"]]
    assert table.column("spend_hist_bins").to_pylist()[0] == [
        [float(lo), float(hi)] for lo, hi in cell["bins"]
    ]
    assert table.column("spend_hist_bins").to_pylist()[1] is None


def test_kind_of_an_unknown_alias(release_json: dict[str, Any]) -> None:
    with pytest.raises(KeyError, match="nps"):
        Release.from_json(release_json).kind("nps")


def test_malformed_intervals_become_nulls(release_json: dict[str, Any]) -> None:
    release_json["rows"][0]["customers"]["ci95"] = [[1, 2], [3, 4]]
    release_json["rows"][0]["avg_spend"]["ci95"] = [1.0]
    table = Release.from_json(release_json).to_arrow()
    assert table.column("customers_ci95_low").to_pylist() == [None, None]
    assert table.column("avg_spend_ci95_high").to_pylist() == [None, None]
