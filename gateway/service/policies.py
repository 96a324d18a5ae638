"""Reading and replacing a collaboration's policy.

Until the approval workflow lands, a PUT by a compliance officer of an organisation that owns a
dataset in the new policy activates it at once. Budget already spent is kept: the ledger is
independent of policy versions.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml

from gateway.domain.errors import Forbidden, InvalidPolicy, InvalidRequest
from gateway.domain.model import Principal
from gateway.domain.policy import Policy, parse_policy
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services, record

MAX_POLICY_BYTES = 256 * 1024


def read_policy(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    member_collaboration(services, principal, collab_id)
    version, _ = active_policy(services, collab_id)
    return {
        "collaboration": collab_id,
        "version": version.version,
        "status": version.status,
        "proposed_by": version.proposed_by,
        "created_at": version.created_at.isoformat(),
        "document": version.document,
        "policy": yaml.safe_load(version.document),
    }


def _load(body: bytes, media_type: str) -> tuple[str, Policy]:
    if len(body) > MAX_POLICY_BYTES:
        raise InvalidRequest(f"policy: at most {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("policy: the body must be UTF-8 text") from None
    try:
        raw = json.loads(text) if media_type == "application/json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidPolicy("", f"the document is not valid YAML/JSON{where}") from None
    policy = parse_policy(raw)
    if media_type == "application/json":
        text = yaml.safe_dump(raw, sort_keys=False)
    return text, policy


def put_policy(
    services: Services, principal: Principal, collab_id: str, body: bytes, media_type: str
) -> dict[str, Any]:
    """Validate and activate a new policy version; answers the contract's PUT shape."""
    require_role(principal, "compliance")
    collab = member_collaboration(services, principal, collab_id)
    text, policy = _load(body, media_type)
    if policy.collaboration != collab_id:
        raise InvalidPolicy("collaboration", f"must be {collab_id!r}, the collaboration's id")
    for ds_id, ds in policy.datasets.items():
        if ds.owner not in collab.members:
            raise InvalidPolicy(f"datasets.{ds_id}.owner", f"{ds.owner!r} is not a member")
    for org in policy.budgets:
        if org not in collab.members:
            raise InvalidPolicy(f"budgets.{org}", f"{org!r} is not a member")
    if principal.org not in policy.owners:
        raise Forbidden(
            f"only a compliance officer of an organisation that owns a dataset in the policy "
            f"may set it; {principal.org!r} owns none"
        )
    previous = services.catalog.active_policy(collab_id)
    diff = "".join(
        difflib.unified_diff(
            (previous.document if previous else "").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"v{previous.version}" if previous else "(none)",
            tofile="proposed",
        )
    )
    version = services.catalog.add_policy_version(
        collab_id, text, "active", principal.org, services.clock()
    )
    record(
        services,
        principal,
        collab_id,
        "policy.activated",
        visible_to=tuple(collab.members),
        details={"version": version, "previous": previous.version if previous else None},
    )
    return {
        "status": "active",
        "version": version,
        "approvals": {principal.org: True},
        "diff": diff,
    }
