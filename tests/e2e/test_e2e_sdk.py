"""The sync SDK against a real gateway: the analyst's, compliance officer's and errors' paths."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from clients import (
    AuthenticationError,
    BudgetExceeded,
    GatewayClient,
    InvalidUpload,
    PolicyViolation,
    Release,
)
from gateway.demo.data import REGIONS, SEGMENTS, generate_demo_tables
from gateway.demo.seed import COLLABORATION, FIRST_PLAN

pytestmark = pytest.mark.e2e

C = COLLABORATION
AGGREGATES = ("customers", "avg_spend", "avg_nps")
COUNT_BY_CHANNEL = {
    "from": "bigmart.loyalty",
    "group_by": ["channel"],
    "aggregates": [{"fn": "count", "as": "customers"}],
}


@dataclass(frozen=True)
class FirstQuery:
    """The banner's first query, run once, with the analyst's budget entry around it."""

    release: Release
    before: dict[str, Any]
    after: dict[str, Any]


@pytest.fixture(scope="module")
def analyst(gateway: Any, keys: dict[str, Any]) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.url, keys["acme"]["analyst"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def compliance(gateway: Any, keys: dict[str, Any]) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.url, keys["acme"]["compliance"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def contributor(gateway: Any, keys: dict[str, Any]) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.url, keys["bigmart"]["contributor"]) as gw:
        yield gw


@pytest.fixture(scope="module")
def first_query(analyst: GatewayClient) -> FirstQuery:
    [before] = analyst.budget(C)
    release = analyst.query(C, plan=FIRST_PLAN["plan"], epsilon=FIRST_PLAN["epsilon"])
    [after] = analyst.budget(C)
    return FirstQuery(release, before, after)


def _loyalty_version(client: GatewayClient) -> int:
    listing = client.datasets(C)
    [loyalty] = [d for d in listing["datasets"] if d["id"] == "bigmart.loyalty"]
    version: int = loyalty["version"]
    return version


def test_me_names_the_organisation_and_role(analyst: GatewayClient) -> None:
    me = analyst.me()
    assert me["org"] == "acme"
    assert me["role"] == "analyst"


def test_datasets_lists_both_tables_without_hidden_columns(analyst: GatewayClient) -> None:
    listing = analyst.datasets(C)
    by_id = {d["id"]: d for d in listing["datasets"]}
    assert set(by_id) == {"bigmart.loyalty", "acme.survey"}
    assert by_id["bigmart.loyalty"]["owner"] == "bigmart"
    assert "email" not in by_id["bigmart.loyalty"]["columns"]
    assert "phone" not in by_id["acme.survey"]["columns"]
    assert by_id["bigmart.loyalty"]["columns"]["region"]["keys"] == list(REGIONS)


def test_first_query_releases_every_public_group(first_query: FirstQuery) -> None:
    release = first_query.release
    assert release.replay is False
    assert release.group_by == ["region", "segment"]
    table = release.to_arrow()
    assert table.num_rows == len(REGIONS) * len(SEGMENTS) == 16
    groups = set(zip(table["region"].to_pylist(), table["segment"].to_pylist(), strict=True))
    assert groups == set(itertools.product(REGIONS, SEGMENTS))
    for alias in AGGREGATES:
        assert {alias, f"{alias}_ci95_low", f"{alias}_ci95_high"} <= set(table.column_names)

    frame = release.to_pandas()
    assert len(frame) == 16
    released = frame[~frame["suppressed"]]
    # The largest joined groups hold well over 100 customers: one stays unsuppressed with
    # overwhelming probability (noise scale 6 on a count, threshold 25).
    assert len(released) >= 1
    for alias in AGGREGATES:
        low, value, high = (released[f"{alias}{s}"] for s in ("_ci95_low", "", "_ci95_high"))
        assert (low <= value).all() and (value <= high).all(), alias
    suppressed = frame[frame["suppressed"]]
    assert suppressed[list(AGGREGATES)].isna().all().all()


def test_first_query_charges_exactly_its_epsilon(first_query: FirstQuery) -> None:
    release = first_query.release
    assert release.epsilon_spent == FIRST_PLAN["epsilon"]
    spent = first_query.after["epsilon_spent"] - first_query.before["epsilon_spent"]
    assert spent == pytest.approx(release.epsilon_spent, abs=1e-12)
    left = first_query.before["epsilon_left"] - first_query.after["epsilon_left"]
    assert left == pytest.approx(release.epsilon_spent, abs=1e-12)
    assert release.budget["epsilon_left"] == pytest.approx(
        first_query.after["epsilon_left"], abs=1e-12
    )


def test_explain_states_the_cost_and_spends_nothing(analyst: GatewayClient) -> None:
    [before] = analyst.budget(C)
    explanation = analyst.explain(C, plan=COUNT_BY_CHANNEL, epsilon=0.3)
    [after] = analyst.budget(C)
    assert explanation.epsilon == pytest.approx(0.3)
    assert explanation.raw["within_budget"] is True
    assert after == before


def test_same_query_replays_at_no_cost(analyst: GatewayClient, first_query: FirstQuery) -> None:
    [before] = analyst.budget(C)
    again = analyst.query(C, plan=FIRST_PLAN["plan"], epsilon=FIRST_PLAN["epsilon"])
    [after] = analyst.budget(C)
    assert again.replay is True
    assert again.epsilon_spent == 0
    assert again.query_id == first_query.release.query_id
    assert again.rows == first_query.release.rows
    assert after["epsilon_spent"] == before["epsilon_spent"]


def test_policy_returns_the_active_yaml(analyst: GatewayClient) -> None:
    text = analyst.policy(C)
    document = yaml.safe_load(text)
    assert document["collaboration"] == C
    assert document["datasets"]["bigmart.loyalty"]["columns"]["region"]["keys"] == list(REGIONS)
    assert "budgets:" in text


def test_audit_records_the_query_and_the_chain_verifies(
    compliance: GatewayClient, first_query: FirstQuery
) -> None:
    events = compliance.audit(C)
    query_ids = {e["details"].get("query_id") for e in events if "details" in e}
    assert first_query.release.query_id in query_ids
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    verdict = compliance.verify_audit(C)
    assert verdict["ok"] is True
    assert verdict["first_bad"] is None
    assert verdict["events"] >= len(events)


def test_unknown_key_raises_authentication_error(gateway: Any) -> None:
    with (
        GatewayClient(gateway.url, "igw_0000000000000000.not-a-real-secret") as gw,
        pytest.raises(AuthenticationError) as caught,
    ):
        gw.me()
    assert caught.value.status == 401
    assert caught.value.code == "unauthenticated"


def test_hidden_column_raises_policy_violation(analyst: GatewayClient) -> None:
    plan = {
        "from": "bigmart.loyalty",
        "group_by": ["email"],
        "aggregates": [{"fn": "count", "as": "n"}],
    }
    [before] = analyst.budget(C)
    with pytest.raises(PolicyViolation) as caught:
        analyst.query(C, plan=plan, epsilon=0.1)
    assert caught.value.status == 403
    assert caught.value.code == "policy_violation"
    assert "datasets.bigmart.loyalty.columns.email.use" in caught.value.message
    assert analyst.budget(C) == [before]


def test_upload_missing_a_column_raises_invalid_upload(
    contributor: GatewayClient, analyst: GatewayClient
) -> None:
    loyalty = generate_demo_tables(customers=500).loyalty
    version = _loyalty_version(analyst)
    with pytest.raises(InvalidUpload) as caught:
        contributor.upload(C, "loyalty", loyalty.drop_columns(["region"]))
    assert caught.value.status == 422
    assert caught.value.code == "invalid_dataset"
    assert "region" in caught.value.message
    for value in loyalty["customer_key"].to_pylist()[:50]:
        assert value not in caught.value.message
    assert _loyalty_version(analyst) == version


def test_overspending_raises_budget_exceeded(
    analyst: GatewayClient,
    compliance: GatewayClient,
    first_query: FirstQuery,
    gateway: Any,
    keys: dict[str, Any],
) -> None:
    """Lower ACME's budget to 0.25 above what it spent, then ask for 0.5; restore after.

    Budgets govern every dataset, so BigMart's compliance officer approves each change.
    """
    original = compliance.policy(C)
    [before] = analyst.budget(C)
    lowered, n = re.subn(
        r"(\n  acme: \{epsilon: )[0-9.]+",
        rf"\g<1>{before['epsilon_spent'] + 0.25}",
        original,
    )
    assert n == 1
    with GatewayClient(gateway.url, keys["bigmart"]["compliance"]) as other_owner:

        def activate(document: str) -> dict[str, Any]:
            proposal = compliance.put_policy(C, document)
            assert proposal["status"] == "pending"
            assert proposal["approvals"] == {"acme": True, "bigmart": False}
            return other_owner.approve_policy(C, proposal["version"])

        answer = activate(lowered)
        try:
            assert answer["status"] == "active"
            [lowered_budget] = analyst.budget(C)
            assert lowered_budget["epsilon_left"] == pytest.approx(0.25)
            with pytest.raises(BudgetExceeded) as caught:
                analyst.query(C, plan=COUNT_BY_CHANNEL, epsilon=0.5)
            assert caught.value.status == 429
            assert caught.value.code == "budget_exceeded"
            assert analyst.budget(C) == [lowered_budget]
        finally:
            restored = activate(original)
    assert restored["status"] == "active"
    assert restored["version"] > answer["version"]
