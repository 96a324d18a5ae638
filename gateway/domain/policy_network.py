"""Benchmark networks: aggregate datasets of several owners, stacked and queried as one.

A brand with several dealers (or retailers) lets each upload its own aggregate dataset; the
policy's ``networks`` section stacks them under one name, queried like a dataset::

    networks:
      acme.dealer_network:          # <convening org>.<name>; not also a dataset's name
        datasets: [dealer-north.service_weeks, dealer-south.service_weeks,
                   dealer-east.service_weeks]
        member_column: dealer       # a dimension whose public keys are the members' owners
        named: [acme]               # analyst orgs that may see members' figures by name
        compare_by: [service_type, month]   # what any other org may group and filter by
        min_peers: 2                # other members behind any figure a non-named org sees

Every member is an aggregate dataset with the same count column and the same column rules.
Stacking them, one customer may appear in every member's rows: the network's
``max_rows_per_unit`` is the sum of the members'.

Who sees what (the policy decides): an analyst organisation listed in ``named`` may group and
filter by ``member_column`` like any dimension and may query a member's dataset directly. Any
other organisation may use ``member_column`` only to split its own rows from the rest of the
network (``CASE WHEN dealer = '<own org>' THEN … ELSE … END``), may group and filter by the
``compare_by`` dimensions only (dimensions the members share, like a region or a month, never
one that singles a member out, like a store), and only when at least ``min_peers`` other
members stand behind "the rest"; it may query no other member's dataset directly. A member's
own analysts always see their own dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.domain.errors import InvalidPolicy

if TYPE_CHECKING:
    from gateway.domain.policy import DatasetPolicy

__all__ = ["NetworkPolicy", "parse_networks"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
_FIELDS = {"datasets", "member_column", "named", "compare_by", "min_peers"}


@dataclass(frozen=True)
class NetworkPolicy:
    """Aggregate datasets of several owners, stacked; ``member_column`` names each row's owner."""

    id: str
    datasets: tuple[str, ...]
    member_column: str
    members: tuple[str, ...]  # the owners, in the order of ``datasets``
    named: tuple[str, ...] = ()
    min_peers: int = 2
    compare_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.datasets) < 2:
            raise InvalidPolicy("datasets", "a network stacks at least two datasets")
        if len(set(self.members)) != len(self.members):
            raise InvalidPolicy("datasets", "a network holds one dataset per organisation")
        if self.min_peers < 1:
            raise InvalidPolicy("min_peers", "must be an integer >= 1")

    def sees_names(self, org: str) -> bool:
        """May ``org`` see members' figures by name (group or filter by ``member_column``)?"""
        return org in self.named

    def peers_of(self, org: str) -> int:
        """How many members' datasets stand behind a network figure, not counting ``org``'s."""
        return len([m for m in self.members if m != org])


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _NAME_CHARS:
        raise InvalidPolicy(path, "must be a lower-case name of letters, digits, '_' or '-'")
    return value


def parse_networks(
    raw: Mapping[str, Any], datasets: Mapping[str, DatasetPolicy]
) -> dict[str, NetworkPolicy]:
    """Validate the ``networks`` section against the datasets the policy describes.

    Raises:
        InvalidPolicy: naming the path of the first offending entry.
    """
    networks: dict[str, NetworkPolicy] = {}
    seen: dict[str, str] = {}
    for network_id, entry in raw.items():
        path = f"networks.{network_id}"
        if not isinstance(network_id, str) or network_id.count(".") != 1:
            raise InvalidPolicy(path, "a network is named <convening org>.<name>")
        for part in network_id.split("."):
            _name(part, path)
        if network_id in datasets:
            raise InvalidPolicy(path, "a network may not have the name of a dataset")
        if not isinstance(entry, Mapping):
            raise InvalidPolicy(path, "must be a mapping")
        if set(entry) - _FIELDS:  # named by its mapping: an unknown key is not repeated
            raise InvalidPolicy(path, f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
        members = entry.get("datasets")
        if not isinstance(members, list) or len(members) < 2:
            raise InvalidPolicy(f"{path}.datasets", "must list at least two datasets")
        rules: list[DatasetPolicy] = []
        for i, dataset_id in enumerate(members):
            where = f"{path}.datasets[{i}]"
            ds = datasets.get(dataset_id) if isinstance(dataset_id, str) else None
            if ds is None:
                raise InvalidPolicy(where, "names a dataset the policy does not describe")
            if not ds.is_aggregate:
                raise InvalidPolicy(where, "a network stacks aggregate datasets only")
            if dataset_id in seen:
                raise InvalidPolicy(where, f"the dataset is already in network {seen[dataset_id]}")
            seen[dataset_id] = network_id
            rules.append(ds)
        first = rules[0]
        for i, ds in enumerate(rules[1:], start=1):
            if ds.count_column != first.count_column or dict(ds.columns) != dict(first.columns):
                raise InvalidPolicy(
                    f"{path}.datasets[{i}]",
                    f"must have the count column and column rules of {first.id} to be stacked",
                )
        member_column = _name(entry.get("member_column"), f"{path}.member_column")
        if member_column in first.columns:
            raise InvalidPolicy(f"{path}.member_column", "must not be a column of the datasets")
        named = entry.get("named", [])
        if not isinstance(named, list):
            raise InvalidPolicy(f"{path}.named", "must be a list of organisations")
        compare_by = entry.get("compare_by", [])
        if not isinstance(compare_by, list):
            raise InvalidPolicy(f"{path}.compare_by", "must be a list of dimensions")
        for i, name in enumerate(compare_by):
            rule = first.columns.get(name) if isinstance(name, str) else None
            if rule is None or rule.use != "dimension":
                raise InvalidPolicy(
                    f"{path}.compare_by[{i}]", "must name a dimension of the member datasets"
                )
        min_peers = entry.get("min_peers", 2)
        if isinstance(min_peers, bool) or not isinstance(min_peers, int) or min_peers < 1:
            raise InvalidPolicy(f"{path}.min_peers", "must be an integer >= 1")
        try:
            networks[network_id] = NetworkPolicy(
                id=network_id,
                datasets=tuple(members),
                member_column=member_column,
                members=tuple(ds.owner for ds in rules),
                named=tuple(_name(org, f"{path}.named") for org in named),
                min_peers=min_peers,
                compare_by=tuple(compare_by),
            )
        except InvalidPolicy as exc:
            raise InvalidPolicy(f"{path}.{exc.path}", exc.message.split(": ", 1)[-1]) from None
    return networks
