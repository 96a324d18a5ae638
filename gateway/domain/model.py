"""Organisations, principals, collaborations and the records the store keeps about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Role = Literal["admin", "contributor", "analyst", "compliance"]
ROLES: tuple[Role, ...] = ("admin", "contributor", "analyst", "compliance")
ORG_KINDS = ("brand", "retailer", "partner", "operator")


def dataset_key_aad(collab_id: str, dataset: str, version: int) -> bytes:
    """Associated data binding a dataset version's file and wrapped data key to its identity."""
    return f"{collab_id}/{dataset}/v{version}".encode()


@dataclass(frozen=True)
class Organisation:
    id: str
    name: str
    kind: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: one API key, bound to one organisation and one role."""

    key_id: str
    org: str
    role: Role


@dataclass(frozen=True)
class Collaboration:
    id: str
    name: str
    members: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class PolicyVersion:
    """One version of a collaboration's policy.

    ``status``: ``pending`` (a proposal awaiting approvals), ``active`` (at most one),
    ``superseded``, ``rejected`` or ``withdrawn``. ``required`` lists the organisations whose
    approval the version needs; ``decisions`` maps an organisation to ``approved``/``rejected``.
    """

    collaboration: str
    version: int
    document: str
    status: str
    proposed_by: str
    created_at: datetime
    required: tuple[str, ...] = ()
    decisions: dict[str, str] = field(default_factory=dict)

    @property
    def approvals(self) -> dict[str, bool]:
        return {org: self.decisions.get(org) == "approved" for org in self.required}


@dataclass(frozen=True)
class DatasetVersion:
    """One stored version of a dataset; ``rows`` is exact and shown only to its owner."""

    collaboration: str
    dataset: str
    version: int
    file: str
    wrapped_key: bytes
    rows: int
    max_rows_per_customer: int
    schema: dict[str, str]
    uploaded_by: str
    created_at: datetime

    @property
    def owner(self) -> str:
        return self.dataset.split(".", 1)[0]

    @property
    def aad(self) -> bytes:
        """Associated data binding the file to this dataset version."""
        return dataset_key_aad(self.collaboration, self.dataset, self.version)
