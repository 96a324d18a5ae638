"""Who may do what: API-key authentication, roles, membership, the active policy."""

from __future__ import annotations

import yaml

from gateway.domain.errors import AuthenticationFailed, Conflict, Forbidden, NotFound
from gateway.domain.model import Collaboration, PolicyVersion, Principal, Role
from gateway.domain.policy import Policy, parse_policy
from gateway.service.context import Services

KEY_PREFIX = "igw_"


def authenticate(services: Services, authorization: str | None) -> Principal:
    """Resolve ``Authorization: Bearer igw_<key id>.<secret>`` to a principal.

    Raises:
        AuthenticationFailed: missing, malformed, unknown, revoked or wrong secret (one message
        for all, so the answer does not tell which).
    """
    refusal = AuthenticationFailed("a valid API key is required (Authorization: Bearer <key>)")
    if not authorization or not authorization.startswith("Bearer "):
        raise refusal
    token = authorization[len("Bearer ") :].strip()
    if not token.startswith(KEY_PREFIX) or "." not in token:
        raise refusal
    key_id, secret = token[len(KEY_PREFIX) :].split(".", 1)
    principal = services.catalog.principal(key_id, secret)
    if principal is None:
        raise refusal
    return principal


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Forbidden(
            f"this needs a key with role {' or '.join(roles)}; yours is {principal.role}"
        )


def member_collaboration(
    services: Services, principal: Principal, collab_id: str, *, admin_ok: bool = False
) -> Collaboration:
    """The collaboration if the caller's organisation is a member.

    A non-member gets the same 404 as for a collaboration that does not exist: existence of
    another organisation's collaboration is private.
    """
    collab = services.catalog.collaboration(collab_id)
    allowed = collab is not None and (
        principal.org in collab.members or (admin_ok and principal.role == "admin")
    )
    if not allowed or collab is None:
        raise NotFound("collaboration not found")  # nor is the id echoed: it may be data
    return collab


def authorise(
    services: Services, principal: Principal, collab_id: str, *roles: Role
) -> Collaboration:
    """The collaboration, if the caller holds one of ``roles`` and its organisation is a member.

    The role is checked first: a caller without it gets the same 403 whether or not the
    collaboration exists, and a caller with it the same 404 for another organisation's
    collaboration as for none at all.
    """
    require_role(principal, *roles)
    return member_collaboration(services, principal, collab_id)


def parse_document(document: str) -> Policy:
    return parse_policy(yaml.safe_load(document))


def active_policy(services: Services, collab_id: str) -> tuple[PolicyVersion, Policy]:
    """The active policy version and its parsed form (parsed once per version).

    Raises:
        Conflict: the collaboration has no active policy yet.
    """
    version = services.catalog.active_policy(collab_id)
    if version is None:
        raise Conflict(f"collaboration {collab_id!r} has no active policy yet")
    key = (collab_id, version.version)
    policy = services.policy_cache.get(key)
    if policy is None:
        policy = parse_document(version.document)
        services.policy_cache[key] = policy
    return version, policy
