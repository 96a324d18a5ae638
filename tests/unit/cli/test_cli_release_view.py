"""What ``insightgw query`` and ``explain`` print, and the request body they send."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gateway.cli import build_parser
from gateway.cli_exit import CommandError, ExitCode
from gateway.cli_release import cost_line, print_explanation, print_release
from gateway.cli_user import query_body, send_query

RELEASE: dict[str, Any] = {
    "query_id": "q-123",
    "replay": False,
    "epsilon_spent": 0.5,
    "delta_spent": 0,
    "policy_version": 3,
    "budget": {"epsilon_total": 8.0, "epsilon_spent": 2.5, "epsilon_left": 5.5},
    "group_by": ["region"],
    "rows": [
        {
            "region": "north",
            "customers": {"value": 1234, "ci95": [1222, 1246]},
            "avg_spend": {"value": 81.4321, "ci95": [79.9, 82.9]},
            "median_nps": {"value": 8.0, "ci95": None, "rank_error95": 40.45},
            "spend": {
                "bins": [[0.0, 50.0], [50.0, 100.0]],
                "values": [610, -3],
                "ci95": [[550, 670], [-63, 57]],
            },
        },
        {
            "region": "south",
            "suppressed": True,
            "customers": None,
            "avg_spend": None,
            "median_nps": None,
            "spend": None,
        },
    ],
}


def _printed(render: Any, answer: dict[str, Any]) -> str:
    buffer = io.StringIO()
    render(Console(file=buffer, width=200, markup=False, highlight=False), answer)
    return buffer.getvalue()


def test_a_release_reads_value_and_interval_per_cell() -> None:
    text = _printed(print_release, RELEASE)
    header = next(line for line in text.splitlines() if "region" in line)
    for column in ("customers", "avg_spend", "median_nps", "spend [0, 50)", "spend [50, 100)"):
        assert column in header
    north = next(line for line in text.splitlines() if "north" in line)
    for cell in ("1234 [1222, 1246]", "81.43 [79.90, 82.90]", "8.00 (rank ±40.45)"):
        assert cell in north
    assert "610 [550, 670]" in north and "-3 [-63, 57]" in north
    south = next(line for line in text.splitlines() if "south" in line)
    assert south.count("suppressed") == 5  # every aggregate cell, histogram bins included
    assert "1 of 2 groups suppressed" in text
    assert "95% interval" in text
    assert "spent ε 0.5 under policy v3; query q-123" in text
    assert "budget: ε 2.5 of 8 spent, 5.5 left" in text


def test_a_replay_says_nothing_was_spent() -> None:
    replay = {**RELEASE, "replay": True, "epsilon_spent": 0}
    assert cost_line(replay).startswith("replay of query q-123: nothing spent (policy v3)")
    zcdp = {**RELEASE, "delta_spent": 1e-7, "rho_spent": 0.01}
    assert "spent ε 0.5, δ 1e-07 (ρ 0.01)" in cost_line(zcdp)


EXPLANATION: dict[str, Any] = {
    "epsilon": 0.8988,
    "delta": 8.5e-08,
    "accuracy_target": {"abs": 20.0, "rel": None, "at_count": 1000, "confidence": 0.95},
    "policy_version": 1,
    "groups": None,
    "private_groups": True,
    "aggregates": [
        {"as": "n", "fn": "count", "ci95_halfwidth": 10},
        {"as": "avg", "fn": "mean", "ci95_halfwidth_at_group_size": {"100": 199.99, "1000": 20.0}},
        {"as": "med", "fn": "quantile", "rank_error95": 50.74, "grid_step": 0.01},
        {"partition_selection": {"threshold": 95, "delta": 8.5e-08}},
    ],
    "min_group_size": 25,
    "binding_rules": {"max_epsilon_per_query": {"value": 1.0, "path": "privacy.max_epsilon"}},
    "budget": {"epsilon_total": 8.0, "epsilon_spent": 0.3, "epsilon_left": 7.7},
    "within_budget": True,
}


def test_an_explanation_shows_cost_error_and_rules() -> None:
    text = _printed(print_explanation, EXPLANATION)
    assert "cost: ε 0.8988, δ 8.5e-08 under policy v1; within budget" in text
    assert "budget now: ε 0.3 of 8 spent, 7.7 left; explaining spends nothing" in text
    assert "accuracy target: ±20 for groups of 1000 at 0.95 confidence" in text
    assert "the smallest ε that meets it is 0.8988" in text
    assert "private keys, released only above a noisy threshold (noisy count ≥ 95)" in text
    assert "±10" in text and "±199.99 at n=100 · ±20.00 at n=1000" in text
    assert "rank ±50.74 (grid step 0.01)" in text
    assert "binding rules: max_epsilon_per_query 1 (privacy.max_epsilon)" in text
    over = _printed(print_explanation, {**EXPLANATION, "within_budget": False})
    assert "OVER BUDGET" in over


def _body(*argv: str) -> dict[str, Any]:
    return query_body(build_parser().parse_args(["query", *argv]))


def test_the_query_comes_from_text_a_file_or_a_plan(tmp_path: Path) -> None:
    sql = "SELECT COUNT(*) AS n FROM bigmart.loyalty"
    assert _body(sql, "-e", "0.5") == {"sql": sql, "epsilon": 0.5}
    (tmp_path / "q.sql").write_text(sql + "\n")
    assert _body("--file", str(tmp_path / "q.sql"), "-e", "1") == {"sql": sql + "\n", "epsilon": 1}

    plan = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "n"}]}
    (tmp_path / "bare.json").write_text(json.dumps(plan))
    assert _body(
        "--plan", str(tmp_path / "bare.json"), "--accuracy", "5%", "--at-count", "100"
    ) == {
        "plan": plan,
        "accuracy": {"rel": 0.05, "at_count": 100},
    }
    (tmp_path / "whole.json").write_text(json.dumps({"plan": plan, "epsilon": 0.2}))
    assert _body("--plan", str(tmp_path / "whole.json")) == {"plan": plan, "epsilon": 0.2}
    assert _body("--plan", str(tmp_path / "whole.json"), "--accuracy", "20") == {
        "plan": plan,
        "accuracy": {"abs": 20.0},
    }


def test_query_input_mistakes_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    def refused(*argv: str) -> CommandError:
        with pytest.raises(CommandError) as error:
            _body(*argv)
        return error.value

    assert refused("-e", "0.5").code == ExitCode.USAGE  # no query
    assert refused("SELECT 1", "--plan", "p.json", "-e", "0.5").code == ExitCode.USAGE  # two
    assert "--epsilon" in str(refused("SELECT 1"))  # nothing to spend
    assert refused("--file", str(tmp_path / "missing.sql"), "-e", "1").code == ExitCode.USAGE
    (tmp_path / "bad.json").write_text("{not json")
    assert refused("--plan", str(tmp_path / "bad.json"), "-e", "1").code == ExitCode.INVALID_INPUT
    (tmp_path / "list.json").write_text("[1, 2]")
    assert refused("--plan", str(tmp_path / "list.json"), "-e", "1").code == ExitCode.INVALID_INPUT


def test_a_field_the_api_does_not_define_is_refused_before_sending() -> None:
    with pytest.raises(CommandError) as refused:
        send_query(None, "c", {"plan": {}, "epsilon": 1.0, "explain": True}, explain=False)
    assert refused.value.code == ExitCode.INVALID_INPUT
    assert "explain: unknown field" in str(refused.value)
