"""Reading and verifying the audit trail, in the caller's terms.

The chain is one for the whole gateway. A compliance officer reads only the events of the
collaboration that touch its organisation's data, numbered 1, 2, 3 … among those (``seq``), and
a verdict on the chain counts and positions in the same numbering: neither the global sequence
number nor the chain's hashes are shown, since gaps and links would count what other
organisations do (:class:`gateway.store.audit.VisibleEvent`).
"""

from __future__ import annotations

from typing import Any

from gateway.domain.errors import InvalidRequest
from gateway.domain.model import Principal
from gateway.service.access import member_collaboration, require_role
from gateway.service.context import Services


def read_audit(
    services: Services, principal: Principal, collab_id: str, limit: int = 1000, after: int = 0
) -> dict[str, Any]:
    """Events of the collaboration that touch the caller's organisation's data, oldest first.

    Each event's ``seq`` is its position among the events the caller may read (1, 2, 3 …, no
    gaps, whatever other organisations do); ``after`` pages in the same numbering.

    Example:
        >>> read_audit(services, officer, "acme-bigmart-cx", limit=2, after=4)  # doctest: +SKIP
        {'events': [{'seq': 5, ...}, {'seq': 6, ...}]}
    """
    require_role(principal, "compliance")
    member_collaboration(services, principal, collab_id)
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("limit: must be between 1 and 10000")
    if after < 0:
        raise InvalidRequest("after: must be >= 0")
    events = services.audit.visible_events(collab_id, principal.org, limit=limit, after=after)
    return {"events": [e.to_json() for e in events]}


def verify_audit(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Check the whole hash chain and the signed head, and answer in the caller's terms.

    The chain is one for the whole gateway, so its length and the position of a break would tell
    a compliance officer how busy other organisations are. The answer therefore counts only the
    events the caller may read, and ``first_bad`` is the ``seq`` (as :func:`read_audit` numbers
    them) of the first of those that the chain can no longer vouch for (``null`` with
    ``ok: false`` when the break lies after all of them).
    """
    require_role(principal, "compliance")
    member_collaboration(services, principal, collab_id)
    ok, _, first_bad = services.audit.verify()
    visible, first_visible_bad = services.audit.visible_extent(
        collab_id, principal.org, None if ok else first_bad
    )
    return {"ok": ok, "events": visible, "first_bad": first_visible_bad}
