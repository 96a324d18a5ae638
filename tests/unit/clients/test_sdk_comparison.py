"""Release.comparison: a network benchmark's member-minus-rest differences, typed and tabled.

The JSON below has the shape gateway/domain/comparison.py gives (checked against a real
gateway in tests/integration/test_int_sdk_comparison.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clients import GatewayClient, Release
from clients.release import Comparison

BENCHMARK: dict[str, Any] = {
    "query_id": "q-net",
    "replay": False,
    "epsilon_spent": 0.9,
    "policy_version": 1,
    "budget": {"epsilon_total": 4.0, "epsilon_spent": 0.9, "epsilon_left": 3.1},
    "group_by": ["standing", "service_type"],
    "rows": [
        {
            "standing": "me",
            "service_type": "repair",
            "owners": {"value": 3570, "ci95": [3530.1, 3609.9]},
            "spend_per_owner": {"value": 431.2, "ci95": [420.0, 442.4]},
        },
        {
            "standing": "rest of network",
            "service_type": "repair",
            "owners": {"value": 5530, "ci95": [5490.1, 5569.9]},
            "spend_per_owner": {"value": 365.0, "ci95": [358.0, 372.0]},
        },
        {"standing": "me", "service_type": "tyres", "suppressed": True},
        {
            "standing": "rest of network",
            "service_type": "tyres",
            "owners": {"value": 40, "ci95": [0.1, 79.9]},
            "spend_per_owner": {"value": 90.0, "ci95": [0.0, 400.0]},
        },
    ],
    "comparison": {
        "by": "standing",
        "of": "me",
        "against": "rest of network",
        "rows": [
            {
                "service_type": "repair",
                "spend_per_owner": {"value": 66.2, "ci95": [53.1, 79.3]},
            },
            {"service_type": "tyres", "spend_per_owner": None},
        ],
    },
}


@pytest.fixture
def benchmark() -> dict[str, Any]:
    return copy.deepcopy(BENCHMARK)


def test_a_benchmark_release_carries_its_comparison(benchmark: dict[str, Any]) -> None:
    comparison = Release.from_json(benchmark).comparison
    assert comparison == Comparison(
        by="standing",
        of="me",
        against="rest of network",
        keys=["service_type"],
        rows=benchmark["comparison"]["rows"],
    )
    assert comparison.aliases == ["spend_per_owner"]


def test_an_ordinary_release_has_none(release_json: dict[str, Any]) -> None:
    release = Release.from_json(release_json)
    assert release.comparison is None
    assert Release.from_json({**release_json, "comparison": None}).comparison is None


def test_the_comparison_is_frozen_with_the_release(benchmark: dict[str, Any]) -> None:
    release = Release.from_json(benchmark)
    with pytest.raises(AttributeError):
        release.comparison = None  # type: ignore[misc]
    assert release.comparison is not None
    with pytest.raises(AttributeError):
        release.comparison.of = "someone else"  # type: ignore[misc]


def test_to_arrow_has_the_keys_then_each_difference_and_its_interval(
    benchmark: dict[str, Any],
) -> None:
    comparison = Release.from_json(benchmark).comparison
    assert comparison is not None
    table = comparison.to_arrow()
    assert table.column_names == [
        "service_type",
        "spend_per_owner",
        "spend_per_owner_ci95_low",
        "spend_per_owner_ci95_high",
    ]
    assert [str(t) for t in table.schema.types] == ["string", "double", "double", "double"]
    assert table.to_pydict() == {
        "service_type": ["repair", "tyres"],
        "spend_per_owner": [66.2, None],  # the member's tyres group was suppressed
        "spend_per_owner_ci95_low": [53.1, None],
        "spend_per_owner_ci95_high": [79.3, None],
    }


def test_integer_differences_are_floats(benchmark: dict[str, Any]) -> None:
    benchmark["comparison"]["rows"] = [
        {"service_type": "repair", "spend_per_owner": {"value": 0, "ci95": [-3, 3]}}
    ]
    comparison = Release.from_json(benchmark).comparison
    assert comparison is not None
    assert comparison.to_arrow().schema.field("spend_per_owner").type == "double"


def test_to_pandas(benchmark: dict[str, Any]) -> None:
    comparison = Release.from_json(benchmark).comparison
    assert comparison is not None
    frame = comparison.to_pandas()
    assert list(frame.columns) == comparison.to_arrow().column_names
    assert frame.loc[0, "spend_per_owner"] == pytest.approx(66.2)
    assert math.isnan(frame.loc[1, "spend_per_owner_ci95_high"])
    # The release's own table is unchanged: one row per group, no comparison columns.
    assert len(Release.from_json(benchmark).to_pandas()) == 4


def test_to_pandas_without_pandas_says_what_to_install(
    benchmark: dict[str, Any], uninstall: Callable[[str], None]
) -> None:
    comparison = Release.from_json(benchmark).comparison
    assert comparison is not None
    uninstall("pandas")
    with pytest.raises(ImportError, match=r"insight-gateway\[pandas\]"):
        comparison.to_pandas()


def test_several_other_keys_and_means(benchmark: dict[str, Any]) -> None:
    benchmark["group_by"] = ["region", "standing", "week"]
    benchmark["comparison"]["rows"] = [
        {"region": "north", "week": 1, "a": {"value": 1.5, "ci95": [0.5, 2.5]}, "b": None},
        {"region": "north", "week": 2, "a": None, "b": {"value": -1.0, "ci95": [-2.0, 0.0]}},
    ]
    comparison = Release.from_json(benchmark).comparison
    assert comparison is not None
    assert comparison.keys == ["region", "week"] and comparison.aliases == ["a", "b"]
    table = comparison.to_arrow()
    assert table.column_names[:2] == ["region", "week"]
    assert table.column("b").to_pylist() == [None, -1.0]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c.update(by=None), "comparison.by"),
        (lambda c: c.pop("of"), "comparison.of"),
        (lambda c: c.update(against=3), "comparison.against"),
        (lambda c: c.update(rows={"service_type": "repair"}), "comparison.rows"),
        (lambda c: c.update(rows=["repair"]), "comparison.rows"),
        (lambda c: c.update(by="region"), "comparison.by"),  # not a group-by column
    ],
)
def test_a_malformed_comparison_is_refused(
    benchmark: dict[str, Any], edit: Any, field: str
) -> None:
    edit(benchmark["comparison"])
    with pytest.raises(ValueError, match=field):
        Release.from_json(benchmark)


def test_a_comparison_that_is_not_an_object_is_refused(benchmark: dict[str, Any]) -> None:
    benchmark["comparison"] = ["me", "rest of network"]
    with pytest.raises(ValueError, match="'comparison' must be an object"):
        Release.from_json(benchmark)


def test_the_client_returns_it(fake: Any, client: GatewayClient, benchmark: dict[str, Any]) -> None:
    fake.reply = lambda request: httpx.Response(200, json=benchmark)
    release = client.query("acme-dealers-network", sql="SELECT 1", epsilon=0.9)
    assert release.comparison is not None
    assert release.comparison.rows[0]["spend_per_owner"]["value"] == 66.2
