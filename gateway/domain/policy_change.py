"""Who must approve a policy change: every data owner whose datasets it affects.

A change to a dataset's rules affects that dataset's owner; a change to a join affects the owners
of both datasets; a change to a benchmark network affects the owners of its member datasets,
before and after the change; a change to the collaboration-wide sections (privacy, budgets,
rules) governs every dataset, so it affects every owner. Comments and formatting affect nobody.

Example:
    >>> sorted(affected_owners(active, proposed))
    ['bigmart']
"""

from __future__ import annotations

from gateway.domain.policy import Policy


def affected_owners(active: Policy | None, proposed: Policy) -> frozenset[str]:
    """Owners whose approval ``proposed`` needs to replace ``active`` (all owners if none)."""
    if active is None:
        return proposed.owners
    everyone = active.owners | proposed.owners
    if (
        active.privacy != proposed.privacy
        or active.budgets != proposed.budgets
        or active.rules != proposed.rules
    ):
        return everyone

    def owner_of(dataset_id: str) -> str:
        found = proposed.dataset(dataset_id) or active.dataset(dataset_id)
        return found.owner if found is not None else dataset_id.split(".", 1)[0]

    owners: set[str] = set()
    for dataset_id in set(active.datasets) | set(proposed.datasets):
        if active.dataset(dataset_id) != proposed.dataset(dataset_id):
            owners.add(owner_of(dataset_id))
    for pair in active.joins ^ proposed.joins:
        owners.update(owner_of(d) for d in pair)
    for network_id in set(active.networks) | set(proposed.networks):
        before, after = active.network(network_id), proposed.network(network_id)
        if before != after:
            for network in (before, after):
                owners.update(owner_of(d) for d in (network.datasets if network else ()))
    return frozenset(owners)
