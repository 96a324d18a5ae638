"""Rules added after review: a floor on ε, reserved column names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.domain.errors import InvalidPolicy, InvalidRequest
from gateway.domain.plan import MIN_EPSILON, parse_epsilon
from gateway.domain.policy import parse_policy

POLICY = Path(__file__).resolve().parents[3] / "policies" / "acme-bigmart-cx.yaml"


@pytest.mark.parametrize("epsilon", [1e-300, 5e-324, MIN_EPSILON / 2])
def test_epsilon_below_the_floor_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidRequest, match="epsilon: must be at least"):
        parse_epsilon(epsilon)


def test_epsilon_at_the_floor_is_accepted() -> None:
    assert parse_epsilon(MIN_EPSILON) == MIN_EPSILON


@pytest.mark.parametrize("name", ["_token", "_gateway_pick", "_x"])
def test_column_names_starting_with_underscore_are_reserved(name: str) -> None:
    doc = yaml.safe_load(POLICY.read_text())
    doc["datasets"]["bigmart.loyalty"]["columns"][name] = {"use": "dimension"}
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(doc)
    assert info.value.path == f"datasets.bigmart.loyalty.columns.{name}"
