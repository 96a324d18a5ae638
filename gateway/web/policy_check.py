"""Check a policy draft the way a proposal would be checked, without proposing it.

The console's editor shows the server's verdict next to the line it concerns, so the browser
never decides on its own whether a policy is valid. A check reads the active policy and stores
nothing: no version, no approval, no audit event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.domain.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    InvalidPolicy,
    InvalidRequest,
)
from gateway.domain.model import Principal
from gateway.domain.policy import Policy
from gateway.domain.policy_change import affected_owners
from gateway.domain.policy_document import load_policy_document
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services
from gateway.service.policies import MAX_POLICY_BYTES

POLICY_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "application/json")
_WHERE = re.compile(r"\(line (\d+), column (\d+)\)\s*$")


@dataclass(frozen=True)
class DraftVerdict:
    """What a proposal of the draft would meet: a refusal, or who must approve it."""

    error: GatewayError | None
    required: tuple[str, ...] = ()
    active_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is None:
            return {
                "valid": True,
                "active_version": self.active_version,
                "required": list(self.required),
            }
        found = _WHERE.search(self.error.message)
        return {
            "valid": False,
            "error": {
                "code": self.error.code,
                "message": self.error.message,
                "path": getattr(self.error, "path", None),
                "line": int(found.group(1)) if found else None,
                "column": int(found.group(2)) if found else None,
            },
        }


def _members_refusal(
    policy: Policy, collab_id: str, members: tuple[str, ...]
) -> InvalidPolicy | None:
    """The first rule tying the draft to the collaboration that it breaks (None if none)."""
    if policy.collaboration != collab_id:
        return InvalidPolicy("collaboration", f"must be {collab_id!r}, the collaboration's id")
    for ds_id, ds in policy.datasets.items():
        if ds.owner not in members:
            return InvalidPolicy(f"datasets.{ds_id}.owner", f"{ds.owner!r} is not a member")
    for org in policy.budgets:
        if org not in members:
            return InvalidPolicy(f"budgets.{org}", f"{org!r} is not a member")
    return None


def check_draft(
    services: Services, principal: Principal, collab_id: str, body: bytes, media_type: str
) -> DraftVerdict:
    """Validate ``body`` as ``PUT …/policy`` would, and say whose approval it would need.

    Only a compliance officer of a member organisation may check (the same access rules as
    proposing). Validation refusals are returned, not raised: the check itself succeeded.

    Example:
        >>> check_draft(services, officer, "acme-bigmart-cx", b"collaboration: x", "text/yaml")
        DraftVerdict(error=InvalidPolicy(...), required=(), active_version=None)
    """
    require_role(principal, "compliance")
    collab = member_collaboration(services, principal, collab_id)
    if media_type not in POLICY_MEDIA_TYPES:
        return DraftVerdict(InvalidRequest("Content-Type must be application/yaml or JSON"))
    if len(body) > MAX_POLICY_BYTES:
        return DraftVerdict(InvalidRequest(f"policy: at most {MAX_POLICY_BYTES} bytes"))
    try:
        text = body.decode("utf-8")
        _, policy = load_policy_document(text, media_type)
    except UnicodeDecodeError:
        return DraftVerdict(InvalidRequest("policy: the body must be UTF-8 text"))
    except (InvalidPolicy, InvalidRequest) as exc:
        return DraftVerdict(exc)
    refusal = _members_refusal(policy, collab_id, collab.members)
    if refusal is not None:
        return DraftVerdict(refusal)
    try:
        version, active = active_policy(services, collab_id)
        active_number: int | None = version.version
    except Conflict:
        active, active_number = None, None
    owners = policy.owners | (active.owners if active else frozenset())
    if principal.org not in owners:
        return DraftVerdict(
            Forbidden(
                "only a compliance officer of an organisation that owns a dataset in the "
                f"policy may propose it; {principal.org!r} owns none"
            )
        )
    required = tuple(sorted(affected_owners(active, policy) | {principal.org}))
    return DraftVerdict(None, required, active_number)
