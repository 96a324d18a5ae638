"""A collaboration's policy: proposals, approvals, activation, and reading any version.

A compliance officer of a data owner proposes a version (``PUT …/policy``). Every owner whose
datasets the change affects must approve it (the proposer's own organisation counts as having
approved) before it becomes active; until then the active version keeps governing queries.
A proposal can be rejected by an owner whose approval it needs, or withdrawn by its proposer.
One proposal may be pending at a time. Budget already spent is never reset: the ledger is
independent of policy versions, and a lowered budget leaves an analyst at zero, not negative.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.domain.errors import Conflict, Forbidden, InvalidPolicy, InvalidRequest, NotFound
from gateway.domain.model import Collaboration, PolicyVersion, Principal
from gateway.domain.policy import Policy
from gateway.domain.policy_change import affected_owners
from gateway.domain.policy_document import load_policy_document
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services, record

MAX_POLICY_BYTES = 256 * 1024
POLICY_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "application/json")


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
    if media_type not in POLICY_MEDIA_TYPES:
        raise InvalidRequest("Content-Type must be application/yaml or JSON")
    if len(body) > MAX_POLICY_BYTES:
        raise InvalidRequest(f"policy: at most {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("policy: the body must be UTF-8 text") from None
    raw, policy = load_policy_document(text, media_type)
    if media_type == "application/json":
        text = yaml.safe_dump(raw, sort_keys=False)
    return text, policy


def _check_members(policy: Policy, collab_id: str, members: tuple[str, ...]) -> None:
    if policy.collaboration != collab_id:
        raise InvalidPolicy("collaboration", f"must be {collab_id!r}, the collaboration's id")
    for ds_id, ds in policy.datasets.items():
        if ds.owner not in members:
            raise InvalidPolicy(f"datasets.{ds_id}.owner", "the owner is not a member")
    for org in policy.budgets:
        if org not in members:
            raise InvalidPolicy(f"budgets.{org}", "the organisation is not a member")


@dataclass(frozen=True)
class PolicyCheck:
    """A draft that a proposal would accept, as it would be stored, and who must approve it.

    Attributes:
        collaboration: The collaboration it was checked for (the caller's organisation is a
            member).
        text: The document as a version would store it (a JSON body becomes YAML).
        policy: The parsed draft.
        active: The active version it was checked against (None before the first policy).
        required: The organisations whose approval it needs, the proposer's included.
    """

    collaboration: Collaboration
    text: str
    policy: Policy
    active: PolicyVersion | None
    required: tuple[str, ...]

    @property
    def active_version(self) -> int | None:
        return self.active.version if self.active else None


def check_policy(
    services: Services,
    principal: Principal,
    collab_id: str,
    text: bytes | str,
    media_type: str,
) -> PolicyCheck:
    """Check a draft exactly as a proposal is checked, and say whose approval it would need.

    The one implementation of "may this caller propose this document": :func:`put_policy`
    runs it, and so does the console's draft check. It reads the active policy and stores
    nothing (no version, no approval, no audit event). Whether another proposal is pending
    is not part of it: that is a question of when, not of what.

    Raises:
        Forbidden: the caller is not a compliance officer, or its organisation owns no
            dataset in the active or proposed policy.
        NotFound: the caller's organisation is not a member (or no such collaboration).
        InvalidRequest: not a policy media type, too large, or not UTF-8.
        InvalidPolicy: the document does not validate, or names another collaboration or
            a non-member (path and rule named, never the non-member's id).

    Example:
        >>> check_policy(services, officer, "acme-bigmart-cx", document, "application/yaml")
        PolicyCheck(collaboration=..., text=..., policy=..., active=..., required=('acme',))
    """
    require_role(principal, "compliance")
    collab = member_collaboration(services, principal, collab_id)
    body = text.encode("utf-8") if isinstance(text, str) else text
    stored, policy = _load(body, media_type)
    _check_members(policy, collab_id, collab.members)
    active = services.catalog.active_policy(collab_id)
    active_parsed = active_policy(services, collab_id)[1] if active else None
    owners = policy.owners | (active_parsed.owners if active_parsed else frozenset())
    if principal.org not in owners:
        raise Forbidden(
            "only a compliance officer of an organisation that owns a dataset in the "
            f"policy may propose it; {principal.org!r} owns none"
        )
    required = tuple(sorted(affected_owners(active_parsed, policy) | {principal.org}))
    return PolicyCheck(collab, stored, policy, active, required)


def _diff(previous: PolicyVersion | None, text: str, label: str) -> str:
    return "".join(
        difflib.unified_diff(
            (previous.document if previous else "").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"v{previous.version} (active)" if previous else "(no policy)",
            tofile=label,
        )
    )


def _answer(version: PolicyVersion, diff: str) -> dict[str, Any]:
    return {
        "status": "active" if version.status == "active" else version.status,
        "version": version.version,
        "approvals": version.approvals,
        "diff": diff,
    }


def put_policy(
    services: Services, principal: Principal, collab_id: str, body: bytes, media_type: str
) -> dict[str, Any]:
    """Propose a new version; it is active at once when no other owner's approval is needed.

    Answers ``{"status": "active" | "pending", "version", "approvals", "diff"}``.

    The draft is checked by :func:`check_policy` (outside the lock: parsing a large document
    takes a while); under the lock, the active version must still be the one it was checked
    against, so the approvals it needs are never computed against a superseded version.

    Raises:
        Forbidden: the caller's organisation owns no dataset in the active or proposed policy.
        Conflict: another proposal is pending, or the active version changed meanwhile.
        InvalidPolicy: the document does not validate (path and rule named).
    """
    checked = check_policy(services, principal, collab_id, body, media_type)
    collab, active, required = checked.collaboration, checked.active, checked.required
    with services.lock:
        now_active = services.catalog.active_policy(collab_id)
        if (now_active.version if now_active else None) != checked.active_version:
            raise Conflict(
                "the active policy changed while this proposal was checked; propose it again"
            )
        pending = services.catalog.policy_versions(collab_id, "pending")
        if pending:
            raise Conflict(
                f"version {pending[0].version} is pending; approve, reject or withdraw it first"
            )
        status = "active" if required == (principal.org,) else "pending"
        now = services.clock()
        number = services.catalog.add_policy_version(
            collab_id, checked.text, status, principal.org, now, required
        )
        services.catalog.decide_policy(
            collab_id, number, principal.org, "approved", principal.key_id, now, None
        )
        version = services.catalog.policy_version(collab_id, number)
    assert version is not None
    record(
        services,
        principal,
        collab_id,
        "policy.proposed",
        visible_to=collab.members,
        details={
            "version": number,
            "required": list(required),
            "previous": active.version if active else None,
        },
    )
    if status == "active":
        _record_activation(services, principal, collab, number, active)
    return _answer(version, _diff(active, checked.text, f"v{number} (proposed)"))


def _record_activation(
    services: Services,
    principal: Principal,
    collab: Collaboration,
    number: int,
    previous: PolicyVersion | None,
) -> None:
    record(
        services,
        principal,
        collab.id,
        "policy.activated",
        visible_to=collab.members,
        details={"version": number, "previous": previous.version if previous else None},
    )


def _pending(services: Services, collab_id: str, number: int) -> PolicyVersion:
    version = services.catalog.policy_version(collab_id, number)
    if version is None:
        raise NotFound(f"policy version {number} not found")
    if version.status != "pending":
        raise Conflict(f"policy version {number} is {version.status}, not pending")
    return version


def decide(
    services: Services, principal: Principal, collab_id: str, number: int, decision: str
) -> dict[str, Any]:
    """Approve or reject a pending version on behalf of the caller's organisation.

    The last approval needed activates the version; one rejection rejects it.

    Raises:
        Forbidden: the caller's organisation is not among those whose approval it needs.
        Conflict: the version is not pending, or the organisation has decided already.
    """
    require_role(principal, "compliance")
    collab = member_collaboration(services, principal, collab_id)
    with services.lock:
        version = _pending(services, collab_id, number)
        if principal.org not in version.required:
            raise Forbidden(
                f"version {number} does not need {principal.org!r}'s approval "
                f"(it needs: {', '.join(version.required)})"
            )
        if principal.org in version.decisions:
            raise Conflict(f"{principal.org!r} has already decided on version {number}")
        approvals = {**version.approvals, principal.org: decision == "approved"}
        new_status = None
        if decision == "rejected":
            new_status = "rejected"
        elif all(approvals.values()):
            new_status = "active"
        previous = services.catalog.active_policy(collab_id)
        services.catalog.decide_policy(
            collab_id,
            number,
            principal.org,
            decision,
            principal.key_id,
            services.clock(),
            new_status,
        )
        updated = services.catalog.policy_version(collab_id, number)
    assert updated is not None
    action = "policy.approved" if decision == "approved" else "policy.rejected"
    record(
        services,
        principal,
        collab_id,
        action,
        visible_to=collab.members,
        details={"version": number},
    )
    if new_status == "active":
        _record_activation(services, principal, collab, number, previous)
    return _answer(updated, _diff(previous, updated.document, f"v{number}"))


def withdraw(
    services: Services, principal: Principal, collab_id: str, number: int
) -> dict[str, Any]:
    """The proposer's organisation withdraws its pending proposal."""
    require_role(principal, "compliance")
    collab = member_collaboration(services, principal, collab_id)
    with services.lock:
        version = _pending(services, collab_id, number)
        if version.proposed_by != principal.org:
            raise Forbidden(f"only {version.proposed_by!r}, who proposed it, may withdraw it")
        services.catalog.set_policy_status(collab_id, number, "withdrawn")
        updated = services.catalog.policy_version(collab_id, number)
    assert updated is not None
    record(
        services,
        principal,
        collab_id,
        "policy.withdrawn",
        visible_to=collab.members,
        details={"version": number},
    )
    return _answer(updated, "")


def list_versions(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    member_collaboration(services, principal, collab_id)
    return {
        "versions": [
            {
                "version": v.version,
                "status": v.status,
                "proposed_by": v.proposed_by,
                "created_at": v.created_at.isoformat(),
                "approvals": v.approvals,
            }
            for v in services.catalog.policy_versions(collab_id)
        ]
    }


def read_version(
    services: Services, principal: Principal, collab_id: str, number: int
) -> dict[str, Any]:
    """Any version, with its diff against the version active now; older ones stay readable."""
    member_collaboration(services, principal, collab_id)
    version = services.catalog.policy_version(collab_id, number)
    if version is None:
        raise NotFound(f"policy version {number} not found")
    active = services.catalog.active_policy(collab_id)
    return {
        "collaboration": collab_id,
        "version": version.version,
        "status": version.status,
        "proposed_by": version.proposed_by,
        "created_at": version.created_at.isoformat(),
        "approvals": version.approvals,
        "document": version.document,
        "policy": yaml.safe_load(version.document),
        "diff": ""
        if active and active.version == number
        else _diff(active, version.document, f"v{number}"),
    }
