"""Reading and verifying the audit trail."""

from __future__ import annotations

from typing import Any

from gateway.domain.errors import InvalidRequest
from gateway.domain.model import Principal
from gateway.service.access import member_collaboration, require_role
from gateway.service.context import Services


def read_audit(
    services: Services, principal: Principal, collab_id: str, limit: int = 1000, after: int = 0
) -> dict[str, Any]:
    """Events of the collaboration that touch the caller's organisation's data, oldest first."""
    require_role(principal, "compliance")
    member_collaboration(services, principal, collab_id)
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("limit: must be between 1 and 10000")
    if after < 0:
        raise InvalidRequest("after: must be >= 0")
    events = services.audit.events(collab_id, principal.org, limit=limit, after_seq=after)
    return {"events": [e.to_json() for e in events]}


def verify_audit(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Check the whole hash chain and the signed head."""
    require_role(principal, "compliance")
    member_collaboration(services, principal, collab_id)
    ok, events, first_bad = services.audit.verify()
    return {"ok": ok, "events": events, "first_bad": first_bad}
