"""The hot database behind the real app: a new upload or a moved bound is never read stale.

A dataset version is loaded into the hot database on its second use (the first query runs on
a per-query connection), so each check below queries twice.

The seeded demo has 2,000 customers per partner. Noise bounds: a count's discrete Laplace
noise (scale ≤ 2 here) exceeds 100 with probability below e^-50, a sum of spend clamped to
[0, 10] (noise scale ≤ 20) exceeds 400 with probability below e^-20: the checks below cannot
fail by chance (< 1e-9).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.service.context import Services

DEMO = "acme-bigmart-cx"
LOYALTY = "bigmart.loyalty"
COUNT_BY_REGION = {
    "plan": {"from": LOYALTY, "group_by": ["region"], "aggregates": [{"fn": "count", "as": "n"}]}
}
SPEND_BY_REGION = {
    "plan": {
        "from": LOYALTY,
        "group_by": ["region"],
        "aggregates": [{"fn": "sum", "column": "spend_90d", "as": "spend"}],
    }
}
JOINT = {
    "plan": {
        "from": LOYALTY,
        "join": ["acme.survey"],
        "group_by": ["segment"],
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "mean", "column": "spend_90d"}],
    }
}


def _query(api: Any, key: str, body: dict[str, Any], epsilon: float) -> dict[str, Any]:
    response = api.post(
        f"/v1/collaborations/{DEMO}/queries", key=key, json={**body, "epsilon": epsilon}
    )
    assert response.status_code == 200, response.text
    release: dict[str, Any] = response.json()
    assert release["replay"] is False
    return release


def _total(release: dict[str, Any], alias: str) -> float:
    return sum(row[alias]["value"] for row in release["rows"] if not row.get("suppressed"))


def _hot(services: Services, dataset: str) -> list[tuple[str, ...]]:
    return [k for k in services.hot.loaded_keys() if k[1] == dataset]


def test_a_new_upload_is_read_by_the_next_query(
    api: Any, services: Services, demo_keys: dict[str, Any], demo_tables: Any, upload: Any,
    encode: Any,
) -> None:  # fmt: skip
    analyst = demo_keys["acme"]["analyst"]
    first = _query(api, analyst, COUNT_BY_REGION, 1.0)
    assert _hot(services, LOYALTY) == []  # one use: not kept yet
    before = _query(api, analyst, COUNT_BY_REGION, 0.999)
    for release in (first, before):
        assert abs(_total(release, "n") - 2000) <= 400
    [(_, _, version, _)] = _hot(services, LOYALTY)
    response = upload("bigmart", "loyalty", encode.parquet(demo_tables.loyalty.slice(0, 500)))
    assert response.status_code == 201, response.text
    for epsilon in (0.998, 0.997):
        after = _query(api, analyst, COUNT_BY_REGION, epsilon)
        assert abs(_total(after, "n") - 500) <= 400
    assert [k[2] for k in _hot(services, LOYALTY)] == [str(response.json()["version"])]
    assert response.json()["version"] == int(version) + 1


def test_a_moved_bound_is_read_by_the_next_query(
    api: Any, services: Services, demo_keys: dict[str, Any], put_policy: Any
) -> None:
    analyst = demo_keys["acme"]["analyst"]
    for epsilon in (1.0, 0.999):
        wide = _query(api, analyst, SPEND_BY_REGION, epsilon)
        assert _total(wide, "spend") > 100_000  # about 2,000 customers spending ~200 each
    [old_key] = _hot(services, LOYALTY)

    def narrow(document: dict[str, Any]) -> None:
        spend = document["datasets"][LOYALTY]["columns"]["spend_90d"]
        spend["bounds"], spend["bins"] = [0, 10], [0, 5, 10]

    put_policy(narrow)
    for epsilon in (1.0, 0.999):
        clamped = _query(api, analyst, SPEND_BY_REGION, epsilon)
        assert _total(clamped, "spend") <= 10 * 2000 + 4 * 400
    [new_key] = _hot(services, LOYALTY)
    assert new_key[:3] == old_key[:3] and new_key != old_key  # same version, new layout


@pytest.mark.parametrize("settings", [{"hot_cache_bytes": 0}], indirect=True)
def test_without_a_hot_cache_queries_run_on_a_new_connection(
    api: Any, services: Services, demo_keys: dict[str, Any]
) -> None:
    for epsilon in (1.0, 0.999):
        release = _query(api, demo_keys["acme"]["analyst"], JOINT, epsilon)
        assert len(release["rows"]) == 4 and services.hot.loaded_keys() == []


@pytest.mark.parametrize("settings", [{"hot_cache_bytes": 60_000}], indirect=True)
def test_datasets_over_the_cap_are_queried_without_being_kept(
    api: Any, services: Services, demo_keys: dict[str, Any]
) -> None:
    for epsilon in (1.0, 0.999):
        release = _query(api, demo_keys["acme"]["analyst"], JOINT, epsilon)
        assert abs(_total(release, "n") - 1000) <= 400  # half of the customers are shared
    assert services.hot.loaded_keys() == [] and services.hot.used_bytes == 0
