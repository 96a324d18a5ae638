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
    """Check the whole hash chain and the signed head, and answer in the caller's terms.

    The chain is one for the whole gateway, so its length and the position of a break would tell
    a compliance officer how busy other organisations are. The answer therefore counts only the
    events the caller may read, and ``first_bad`` is the first of those that the chain can no
    longer vouch for (``null`` with ``ok: false`` when the break lies after all of them).
    """
    require_role(principal, "compliance")
    member_collaboration(services, principal, collab_id)
    ok, _, first_bad = services.audit.verify()
    visible, first_visible_bad = services.audit.visible_extent(
        collab_id, principal.org, None if ok else first_bad
    )
    return {"ok": ok, "events": visible, "first_bad": first_visible_bad}
