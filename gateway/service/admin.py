"""Operator use cases: organisations, API keys, collaborations."""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

from gateway.domain.errors import Conflict, InvalidRequest, NotFound
from gateway.domain.model import ORG_KINDS, ROLES, Organisation, Principal, Role
from gateway.service.access import KEY_PREFIX, member_collaboration, require_role
from gateway.service.context import Services, record
from gateway.service.tokens import NEW_COLLABORATIONS
from gateway.store.crypto import token_secret_aad

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidRequest(
            f"{field}: must be 1-63 lower-case letters, digits, '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def create_org(
    services: Services, principal: Principal | None, org_id: str, name: str, kind: str
) -> Organisation:
    """Create an organisation (``principal`` None only for the offline bootstrap)."""
    if principal is not None:
        require_role(principal, "admin")
    _check_id(org_id, "id")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidRequest("name: must be a non-empty string of at most 200 characters")
    if kind not in ORG_KINDS:
        raise InvalidRequest(f"kind: must be one of {', '.join(ORG_KINDS)}")
    with services.lock:
        if services.catalog.org(org_id) is not None:
            raise Conflict(f"organisation {org_id!r} already exists")
        org = Organisation(org_id, name.strip(), kind)
        services.catalog.add_org(org, services.clock())
    record(
        services,
        principal,
        None,
        "org.created",
        visible_to=(org_id,),
        details={"org": org_id, "kind": kind},
    )
    return org


def issue_key(
    services: Services, principal: Principal | None, org_id: str, role: str
) -> dict[str, Any]:
    """Issue an API key. The secret is returned here once and stored only as a hash."""
    if principal is not None:
        require_role(principal, "admin")
    if role not in ROLES:
        raise InvalidRequest(f"role: must be one of {', '.join(ROLES)}")
    org = services.catalog.org(org_id)
    if org is None:
        raise NotFound("organisation not found")
    if role == "admin" and org.kind != "operator":
        raise InvalidRequest("role: admin keys belong to the operator organisation only")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    typed_role: Role = role
    services.catalog.add_key(key_id, org_id, typed_role, secret, services.clock())
    record(
        services,
        principal,
        None,
        "key.issued",
        visible_to=(org_id,),
        details={"key_id": key_id, "org": org_id, "role": role},
    )
    return {
        "key_id": key_id,
        "org": org_id,
        "role": role,
        "secret": f"{KEY_PREFIX}{key_id}.{secret}",
    }


def create_collaboration(
    services: Services, principal: Principal, collab_id: str, name: str, members: list[str]
) -> dict[str, Any]:
    require_role(principal, "admin")
    _check_id(collab_id, "id")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("name: must be a non-empty string")
    if not isinstance(members, list) or len(members) < 2:
        raise InvalidRequest("members: a collaboration needs at least two organisations")
    if len(set(members)) != len(members):
        raise InvalidRequest("members: an organisation may appear only once")
    for i, org in enumerate(members):
        _check_id(org, f"members[{i}]")
        if services.catalog.org(org) is None:
            raise NotFound(f"members[{i}]: organisation not found")
    with services.lock:
        if services.catalog.collaboration(collab_id) is not None:
            raise Conflict(f"collaboration {collab_id!r} already exists")
        wrapped = services.keyring.wrap(os.urandom(32), token_secret_aad(collab_id))
        services.catalog.add_collaboration(
            collab_id,
            name.strip(),
            tuple(sorted(members)),
            wrapped,
            services.clock(),
            token_scheme=NEW_COLLABORATIONS,
        )
    record(
        services,
        principal,
        collab_id,
        "collaboration.created",
        visible_to=tuple(members),
        details={"members": sorted(members), "name": name.strip()},
    )
    return describe_collaboration(services, principal, collab_id)


def describe_collaboration(
    services: Services, principal: Principal, collab_id: str
) -> dict[str, Any]:
    collab = member_collaboration(services, principal, collab_id, admin_ok=True)
    policy = services.catalog.active_policy(collab_id)
    return {
        "id": collab.id,
        "name": collab.name,
        "members": list(collab.members),
        "policy_version": policy.version if policy else None,
        "created_at": collab.created_at.isoformat(),
    }
