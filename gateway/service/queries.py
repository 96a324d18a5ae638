"""Running and explaining joint DP queries.

:func:`run_query` is the only function in the gateway that spends privacy budget. Its order is
the privacy argument: parse → check against the active policy → certify the cost → reserve it in
the ledger (one transaction that refuses to overspend) → compute exact cells in DuckDB → draw
OpenDP noise → store the release for replays → audit. Exact cells never leave this function.

Exact cells come from the hot database (:mod:`gateway.engine.hot`): from its second query on,
a dataset version is kept in memory as DuckDB tables, keyed by its version and by the layout
the active policy gives it (bounded measures in fixed point), so neither a new upload nor a
policy change that moves a bound can let a query read a stale table. A first query, and what
does not fit under ``hot_cache_bytes``, runs on a per-query connection over the decrypted
Arrow tables.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from gateway.domain.budget import Period, QueryCost, fits
from gateway.domain.checker import CheckedQuery, check_query, effective_rules
from gateway.domain.comparison import benchmark_comparison
from gateway.domain.errors import Conflict, GatewayError, InternalError
from gateway.domain.model import DatasetVersion, PolicyVersion, Principal
from gateway.domain.plan import QueryRequest, parse_query_request
from gateway.domain.policy import Policy
from gateway.dp.accuracy import epsilon_for_accuracy
from gateway.dp.release import NoisePlan, expected_halfwidths, plan_noise, release_rows
from gateway.engine.compiler import compile_query
from gateway.engine.hot import HotKey, layout_of
from gateway.engine.runner import run_arrow, run_hot
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.budget import budget_entry
from gateway.service.context import Services, record
from gateway.service.side_by_side import release_side_by_side, side_by_side_halfwidths


def _check(request: QueryRequest, policy: Policy, org: str) -> CheckedQuery:
    """Check the request; an accuracy target first picks the smallest sufficient ε."""
    if request.accuracy is None:
        return check_query(request, policy, org)
    used = tuple(d for d in map(policy.dataset, request.plan.datasets) if d is not None)
    cap = effective_rules(policy, used)["max_epsilon_per_query"]
    epsilon = epsilon_for_accuracy(
        lambda e: check_query(request, policy, org, epsilon=e),
        request.accuracy,
        cap.value,
        cap.path,
    )
    return check_query(request, policy, org, epsilon=epsilon)


def _prepare(
    services: Services,
    principal: Principal,
    collab_id: str,
    body: object,
    *,
    admitted: bool = False,
) -> tuple[QueryRequest, PolicyVersion, Policy, list[str]]:
    if not admitted:  # run_query admits the caller first (outsiders leave no audit entries)
        require_role(principal, "analyst")
        member_collaboration(services, principal, collab_id)
    request = parse_query_request(body)
    version, policy = active_policy(services, collab_id)
    return request, version, policy, policy.datasets_behind(request.plan.datasets)


def _visible_to(principal: Principal, policy: Policy, datasets: list[str]) -> tuple[str, ...]:
    owners = {policy.datasets[d].owner for d in datasets if d in policy.datasets}
    return tuple(sorted(owners | {principal.org}))


def _audit(
    services: Services,
    principal: Principal,
    collab_id: str,
    action: str,
    request: QueryRequest | None,
    policy: Policy | None,
    version: int | None,
    datasets: list[str],
    **details: Any,
) -> None:
    record(
        services,
        principal,
        collab_id,
        action,
        visible_to=_visible_to(principal, policy, datasets) if policy else (principal.org,),
        details={
            "plan": request.plan.canonical() if request else None,
            "sql": request.sql if request else None,
            "epsilon": request.epsilon if request else None,
            "datasets": datasets,
            "policy_version": version,
            **details,
        },
    )


# How ingest stores a column of each (use, type) of the policy (``gateway/service/ingest.py``).
_STORED_TYPES = {
    ("dimension", "string"): "string",
    ("dimension", "int"): "int64",
    ("measure", "float"): "double",
    ("measure", "int"): "int64",
}


def _dataset_versions(
    services: Services, collab_id: str, checked: CheckedQuery
) -> dict[str, DatasetVersion]:
    """The newest version of each dataset, checked to hold every column the query reads.

    A policy may change after an upload (a new column, a type change, a hidden column made
    usable); a stored version that does not fit is refused here, before any ε is reserved.
    """
    latest = services.catalog.latest_datasets(collab_id)
    versions = {}
    for ds in checked.datasets:
        if ds.id not in latest:
            raise Conflict(f"dataset {ds.id!r} has no uploaded version yet")
        versions[ds.id] = latest[ds.id]
    for col in checked.columns_read():
        dv = versions[col.dataset]
        if dv.schema.get(col.name) != _STORED_TYPES.get((col.rule.use, col.rule.type)):
            raise Conflict(
                f"dataset {col.dataset!r} version {dv.version} does not hold column "
                f"{col.name!r} as the active policy describes it; its owner must upload a new "
                "version"
            )
    return versions


def _fingerprint(
    request: QueryRequest,
    epsilon: float,
    policy_version: int,
    versions: dict[str, DatasetVersion],
) -> str:
    body = json.dumps(
        [
            request.fingerprint(epsilon),
            policy_version,
            sorted((k, v.version) for k, v in versions.items()),
        ]
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _hot_key(dv: DatasetVersion, layout: object) -> HotKey:
    digest = hashlib.sha256(repr(layout).encode()).hexdigest()[:16]
    return (dv.collaboration, dv.dataset, str(dv.version), digest)


def _noisy_rows(
    services: Services,
    collab_id: str,
    checked: CheckedQuery,
    noise: NoisePlan,
    policy: Policy,
    versions: dict[str, DatasetVersion],
) -> list[dict[str, Any]]:
    """Exact cells in DuckDB, then OpenDP noise: the released rows. Call after reserving."""
    max_rows = {ds: dv.max_rows_per_customer for ds, dv in versions.items()}
    if checked.parts:  # side by side: each part released on its own, rows merged
        tables = {ds: services.files.read(dv) for ds, dv in versions.items()}
        limit = services.settings.query_memory_limit
        return release_side_by_side(checked, noise, tables, max_rows, limit)
    services.hot.retain(collab_id, {ds: dv.version for ds, dv in versions.items()})
    wanted = {}
    for ds, dv in versions.items():
        dataset_policy = policy.dataset(ds)
        layout = layout_of(dataset_policy) if dataset_policy is not None else frozenset()
        wanted[ds] = (_hot_key(dv, sorted(layout)), lambda dv=dv: services.files.read(dv), layout)
    with services.hot.pin(wanted) as hot_tables:
        if hot_tables is not None:
            compiled = compile_query(checked, max_rows, hot_tables)
            exact, vectors = run_hot(compiled, services.hot, hot_tables)
        else:
            tables = {ds: services.files.read(dv) for ds, dv in versions.items()}
            limit = services.settings.query_memory_limit
            exact, vectors = run_arrow(compile_query(checked, max_rows), tables, limit)
    rows = release_rows(checked, noise, exact, vectors)
    del exact, vectors
    return rows


def run_query(
    services: Services, principal: Principal, collab_id: str, body: object
) -> dict[str, Any]:
    """Answer a joint query with a DP release, spending its ε.

    Guarantees: ε is reserved before any noise is drawn and stays spent whatever happens after
    the reservation; the same question (same plan, ε, policy and dataset versions) asked again
    returns the stored release at no cost; every outcome, refusals included, is audited.
    """
    require_role(principal, "analyst")
    member_collaboration(services, principal, collab_id)  # outsiders leave no audit entries
    request = version = policy = None
    datasets: list[str] = []
    try:
        request, version, policy, datasets = _prepare(
            services, principal, collab_id, body, admitted=True
        )
        checked = _check(request, policy, principal.org)
        versions = _dataset_versions(services, collab_id, checked)
        fingerprint = _fingerprint(request, checked.epsilon, version.version, versions)
        budget = policy.budgets[principal.org]
        period = Period.current(budget.period, services.clock())

        stored = services.catalog.stored_release(collab_id, principal.org, fingerprint)
        if stored is not None:
            release: dict[str, Any] = json.loads(stored)
            release.update(
                replay=True,
                epsilon_spent=0,
                budget=budget_entry(services, collab_id, principal.org, policy, short=True),
            )
            _audit(
                services,
                principal,
                collab_id,
                "query.replayed",
                request,
                policy,
                version.version,
                datasets,
                query_id=release["query_id"],
                outcome="replay",
            )
            return release

        noise = plan_noise(checked)
        if not fits(0.0, noise.loss, checked.loss):
            raise InternalError("certified cost exceeds the requested privacy loss")
        # Charge what was asked (≥ what OpenDP certified), in both measures the ledger keeps.
        cost = (
            QueryCost.pure(checked.loss, noise.delta)
            if checked.measure == "epsilon"
            else QueryCost.zcdp(checked.loss, checked.delta, noise.delta)
        )
        query_id = uuid.uuid4().hex
        services.ledger.reserve(
            collab_id,
            principal.org,
            period.key,
            cost,
            policy.measure,
            policy.budget_total(principal.org),
            query_id,
            services.clock(),
        )
    except GatewayError as exc:
        _audit(
            services,
            principal,
            collab_id,
            "query.refused",
            request,
            policy,
            version.version if version else None,
            datasets,
            outcome=exc.code,
            message=exc.message,
        )
        raise

    # ε is spent from here on: failures below never refund it.
    try:
        rows = _noisy_rows(services, collab_id, checked, noise, policy, versions)
    except Exception as exc:
        _audit(
            services,
            principal,
            collab_id,
            "query.failed",
            request,
            policy,
            version.version,
            datasets,
            query_id=query_id,
            outcome="internal_error",
            epsilon_spent=cost.epsilon,
            error=type(exc).__name__,
        )
        raise
    release = {
        "query_id": query_id,
        "replay": False,
        "epsilon_spent": round(cost.epsilon, 12),
        "delta_spent": cost.delta,
        **({"rho_spent": round(cost.rho, 12)} if checked.measure == "rho" else {}),
        "policy_version": version.version,
        "budget": budget_entry(services, collab_id, principal.org, policy, short=True),
        "group_by": [g.name for g in checked.group_by],
        "rows": rows,
        **benchmark_comparison(checked, rows),
        "datasets": {ds: dv.version for ds, dv in versions.items()},
    }
    services.catalog.store_release(
        collab_id, principal.org, fingerprint, query_id, json.dumps(release), services.clock()
    )
    services.ledger.mark_released(query_id)
    _audit(
        services,
        principal,
        collab_id,
        "query.released",
        request,
        policy,
        version.version,
        datasets,
        query_id=query_id,
        outcome="released",
        epsilon_spent=cost.epsilon,
    )
    return release


def explain_query(
    services: Services, principal: Principal, collab_id: str, body: object
) -> dict[str, Any]:
    """The cost and expected 95% interval widths of a query; reads no data, spends nothing."""
    request, version, policy, _ = _prepare(services, principal, collab_id, body)
    checked = _check(request, policy, principal.org)
    noise = plan_noise(checked)
    budget = budget_entry(services, collab_id, principal.org, policy, short=True)
    return {
        "epsilon": checked.epsilon,
        "delta": noise.delta,
        **({"rho": checked.loss} if checked.measure == "rho" else {}),
        "accuracy_target": None if request.accuracy is None else request.accuracy.__dict__,
        "policy_version": version.version,
        "groups": None if checked.private_groups else len(checked.group_keys),
        "private_groups": checked.private_groups,
        "rows_per_customer": checked.rows_per_customer,
        "groups_per_customer": checked.l0,
        "statistics": [
            {
                "statistic": s.key,
                "kind": s.kind,
                "sensitivity": s.sensitivity,
                "epsilon": s.epsilon,
                "noise_scale": noise.mechanisms[s.key].scale,
            }
            for s in checked.statistics
        ],
        "aggregates": (
            side_by_side_halfwidths(checked, noise)
            if checked.parts
            else expected_halfwidths(checked, noise)
        ),
        "min_group_size": checked.min_group_size,
        "binding_rules": {
            name: {"value": rule.value, "path": rule.path} for name, rule in checked.binding.items()
        },
        "budget": budget,
        "within_budget": fits(0.0, checked.loss, budget[f"{checked.measure}_left"]),
    }
