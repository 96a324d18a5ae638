"""How ``insightgw query`` and ``explain`` print a release and an explanation for people.

A release table has one row per group: the group keys, then one column per aggregate whose cells
read ``value [low, high]`` (the noisy value and its 95% interval). A quantile cell reads
``value (rank ±r)``; a histogram gets one column per bin; a suppressed group (noisy count under
the policy's minimum group size) keeps its row with ``suppressed`` in every aggregate cell.
Everything printed here is already in the gateway's answer: nothing is computed from data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

SUPPRESSED = "suppressed"


def number(x: Any) -> str:
    """A value as people read it: integers as they are, floats with 2 decimals or 3 digits.

    Example:
        >>> number(231.345283), number(10239), number(0.000123), number(None)
        ('231.35', '10239', '0.000123', '-')
    """
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return str(x)
    size = abs(x)
    if size >= 1e6 or (0 < size < 0.01):
        return f"{x:.3g}"
    if size >= 1000:
        return f"{x:.1f}"
    return f"{x:.2f}"


def amount(x: Any) -> str:
    """A privacy quantity or a rule's value, exact to 6 digits and short: ``0.5``, ``8``.

    Example:
        >>> amount(0.8988), amount(8.0), amount(9.740418616122071e-08)
        ('0.8988', '8', '9.74042e-08')
    """
    if isinstance(x, int | float) and not isinstance(x, bool):
        return f"{x:g}"
    return "-" if x is None else str(x)


def interval(ci: Any) -> str:
    """``[low, high]``, or empty when the cell has no interval."""
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return f"[{number(ci[0])}, {number(ci[1])}]"
    return ""


def cell(value: Any) -> str:
    """One aggregate cell: ``value [low, high]``, ``value (rank ±r)``, or the value alone."""
    if not isinstance(value, Mapping):
        return number(value)
    text = number(value.get("value"))
    if value.get("ci95") is not None:
        return f"{text} {interval(value['ci95'])}".strip()
    if value.get("rank_error95") is not None:
        return f"{text} (rank ±{number(value['rank_error95'])})"
    return text


def _bin_name(alias: str, edges: Any) -> str:
    if isinstance(edges, Sequence) and len(edges) == 2:
        return f"{alias} [{amount(edges[0])}, {amount(edges[1])})"
    return f"{alias} {edges}"


def _layout(
    rows: Sequence[Mapping[str, Any]], group_by: Sequence[str]
) -> list[tuple[str, tuple[str, int | None]]]:
    """Columns after the group keys: ``(header, (alias, bin index or None))``, in order."""
    bins_of: dict[str, list[Any] | None] = {}
    for row in rows:
        for alias, value in row.items():
            if alias in group_by or alias == SUPPRESSED:
                continue
            bins = value.get("bins") if isinstance(value, Mapping) else None
            if bins_of.get(alias) is None:
                bins_of[alias] = bins if isinstance(bins, list) else None
    columns: list[tuple[str, tuple[str, int | None]]] = []
    for alias, bins in bins_of.items():
        if bins is None:
            columns.append((alias, (alias, None)))
        else:
            columns += [(_bin_name(alias, edges), (alias, i)) for i, edges in enumerate(bins)]
    return columns


def _histogram_cell(value: Any, i: int) -> str:
    if not isinstance(value, Mapping):
        return number(value)
    values, cis = value.get("values") or [], value.get("ci95") or []
    v = values[i] if i < len(values) else None
    ci = cis[i] if i < len(cis) else None
    return f"{number(v)} {interval(ci)}".strip()


def release_table(release: Mapping[str, Any], title: str | None = None) -> Table:
    """The release as a table: group keys, then ``value [95% interval]`` per aggregate."""
    group_by = [str(g) for g in release.get("group_by") or []]
    rows: list[Mapping[str, Any]] = [r for r in release.get("rows") or [] if isinstance(r, Mapping)]
    layout = _layout(rows, group_by)
    grid = Table(title=title, title_justify="left", header_style="bold")
    for name in group_by:
        grid.add_column(name, overflow="fold")
    for header, _ in layout:
        grid.add_column(header, justify="right", overflow="fold")
    for row in rows:
        suppressed = bool(row.get(SUPPRESSED))
        cells = [Text(number(row.get(g)) if row.get(g) is not None else "-") for g in group_by]
        for _, (alias, index) in layout:
            if suppressed:
                cells.append(Text(SUPPRESSED, style="dim"))
            elif index is None:
                cells.append(Text(cell(row.get(alias))))
            else:
                cells.append(Text(_histogram_cell(row.get(alias), index)))
        grid.add_row(*cells)
    return grid


def budget_text(budget: Mapping[str, Any]) -> str:
    """``ε 0.5 of 8 spent, 7.5 left`` (and ρ when the policy counts in zCDP)."""
    text = (
        f"ε {amount(budget.get('epsilon_spent'))} of {amount(budget.get('epsilon_total'))} "
        f"spent, {amount(budget.get('epsilon_left'))} left"
    )
    if budget.get("rho_total") is not None:
        text += (
            f" (ρ {amount(budget.get('rho_spent'))} of {amount(budget.get('rho_total'))} spent, "
            f"{amount(budget.get('rho_left'))} left)"
        )
    return text


def cost_line(release: Mapping[str, Any]) -> str:
    """What the release cost and what is left; a replay says that nothing was spent."""
    budget = release.get("budget") or {}
    policy = f"policy v{release.get('policy_version')}"
    if release.get("replay"):
        spent = f"replay of query {release.get('query_id')}: nothing spent ({policy})"
    else:
        spent = f"spent ε {amount(release.get('epsilon_spent'))}"
        if release.get("delta_spent"):
            spent += f", δ {amount(release.get('delta_spent'))}"
        if release.get("rho_spent") is not None:
            spent += f" (ρ {amount(release.get('rho_spent'))})"
        spent += f" under {policy}; query {release.get('query_id')}"
    return f"{spent}\nbudget: {budget_text(budget)}" if budget else spent


def print_release(out: Console, release: Mapping[str, Any]) -> None:
    """The table, what is suppressed, how to read it, and the cost and budget lines."""
    rows = [r for r in release.get("rows") or [] if isinstance(r, Mapping)]
    out.print(release_table(release))
    hidden = sum(1 for r in rows if r.get(SUPPRESSED))
    if hidden:
        out.print(
            f"{hidden} of {len(rows)} groups suppressed: their noisy count is under the "
            "policy's minimum group size, so their values are withheld"
        )
    if not rows:
        out.print("no groups released (private-key groups appear only above a noisy threshold)")
    out.print("values are noisy (differential privacy); [low, high] is the 95% interval")
    out.print(cost_line(release), soft_wrap=True)


def _expected_error(aggregate: Mapping[str, Any]) -> str:
    parts = []
    for key, value in aggregate.items():
        if key in ("as", "fn"):
            continue
        if key == "ci95_halfwidth":
            parts.append(f"±{number(value)}")
        elif key == "ci95_halfwidth_at_group_size" and isinstance(value, Mapping):
            parts.append(" · ".join(f"±{number(v)} at n={n}" for n, v in value.items()))
        elif key == "rank_error95":
            parts.append(f"rank ±{number(value)}")
        elif key == "grid_step":
            parts.append(f"(grid step {number(value)})")
        else:
            parts.append(f"{key} {number(value)}")
    return " ".join(parts) or "-"


def print_explanation(out: Console, explanation: Mapping[str, Any]) -> None:
    """Cost, whether it fits the budget, expected 95% error per aggregate, and binding rules."""
    budget = explanation.get("budget") or {}
    fits = "within budget" if explanation.get("within_budget") else "OVER BUDGET"
    cost = f"cost: ε {amount(explanation.get('epsilon'))}"
    if explanation.get("delta"):
        cost += f", δ {amount(explanation.get('delta'))}"
    if explanation.get("rho") is not None:
        cost += f" (ρ {amount(explanation.get('rho'))})"
    out.print(f"{cost} under policy v{explanation.get('policy_version')}; {fits}", soft_wrap=True)
    if budget:
        out.print(f"budget now: {budget_text(budget)}; explaining spends nothing")
    target = explanation.get("accuracy_target")
    if isinstance(target, Mapping):
        want = (
            f"±{amount(target.get('abs'))}"
            if target.get("abs") is not None
            else f"±{amount(100 * float(target.get('rel') or 0))}%"
        )
        size = f" for groups of {target['at_count']}" if target.get("at_count") else ""
        out.print(
            f"accuracy target: {want}{size} at {amount(target.get('confidence'))} confidence: "
            f"the smallest ε that meets it is {amount(explanation.get('epsilon'))}"
        )
    aggregates = [a for a in explanation.get("aggregates") or [] if isinstance(a, Mapping)]
    if explanation.get("private_groups"):
        selection = next(
            (a["partition_selection"] for a in aggregates if "partition_selection" in a), None
        )
        rule = ""
        if isinstance(selection, Mapping):
            rule = f" (noisy count ≥ {amount(selection.get('threshold'))})"
        out.print(f"groups: private keys, released only above a noisy threshold{rule}")
    elif explanation.get("groups") is not None:
        out.print(
            f"groups: {explanation.get('groups')} (public keys; a group whose noisy count is "
            f"under {explanation.get('min_group_size')} is suppressed)"
        )
    rows = [(a.get("as"), a.get("fn"), _expected_error(a)) for a in aggregates if "as" in a]
    grid = Table(title="expected error (95%)", title_justify="left", header_style="bold")
    for name in ("aggregate", "fn", "expected error"):
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(str(v)) for v in row))
    out.print(grid)
    rules = explanation.get("binding_rules")
    if isinstance(rules, Mapping) and rules:
        bound = ", ".join(
            f"{name} {amount(r.get('value'))} ({r.get('path')})"
            for name, r in rules.items()
            if isinstance(r, Mapping)
        )
        out.print(f"binding rules: {bound}", soft_wrap=True)
