"""Check a policy draft the way a proposal would be checked, without proposing it.

The console's editor shows the server's verdict next to the line it concerns, so the browser
never decides on its own whether a policy is valid. The check itself is the service's
:func:`~gateway.service.policies.check_policy`, the one a proposal runs; this module only turns
its refusals into a verdict. A check reads the active policy and stores nothing: no version, no
approval, no audit event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.domain.errors import Forbidden, GatewayError, InvalidPolicy, InvalidRequest
from gateway.domain.model import Principal
from gateway.service.access import authorise
from gateway.service.context import Services
from gateway.service.policies import check_policy

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


def check_draft(
    services: Services, principal: Principal, collab_id: str, body: bytes, media_type: str
) -> DraftVerdict:
    """Validate ``body`` as ``PUT …/policy`` would, and say whose approval it would need.

    Only a compliance officer of a member organisation may check (the same access rules as
    proposing): those refusals are raised, as a proposal's would be. What the proposal would
    refuse about the draft itself is returned, not raised: the check itself succeeded.

    Example:
        >>> check_draft(services, officer, "acme-bigmart-cx", b"collaboration: x", "text/yaml")
        DraftVerdict(error=InvalidPolicy(...), required=(), active_version=None)
    """
    authorise(services, principal, collab_id, "compliance")
    try:
        checked = check_policy(services, principal, collab_id, body, media_type)
    except (InvalidPolicy, InvalidRequest, Forbidden) as refusal:
        return DraftVerdict(refusal)
    return DraftVerdict(None, checked.required, checked.active_version)
