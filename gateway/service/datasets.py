"""Uploading datasets and listing what the policy lets a caller see."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.domain.errors import GatewayError, InvalidRequest, PolicyViolation
from gateway.domain.model import DatasetVersion, Principal
from gateway.engine.runner import max_rows_per_customer
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services, record
from gateway.service.ingest import ingest


def _describe_columns(policy_ds: Any) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name, rule in policy_ds.columns.items():
        if rule.use == "hidden":
            continue
        entry: dict[str, Any] = {"use": rule.use, "type": rule.type}
        if rule.keys is not None:
            entry["keys"] = list(rule.keys)
        if rule.bounds is not None:
            entry["bounds"] = list(rule.bounds)
            entry["aggregates"] = ["count", *rule.aggregates]
        columns[name] = entry
    return columns


def authorise_upload(services: Services, principal: Principal, collab_id: str) -> None:
    """Refuse a caller who may not upload to ``collab_id``: called before the body is read.

    Raises:
        Forbidden: the key is not a contributor's.
        NotFound: the caller's organisation is not a member (or no such collaboration).
    """
    require_role(principal, "contributor")
    member_collaboration(services, principal, collab_id)


def upload_dataset(
    services: Services, principal: Principal, collab_id: str, name: str, spooled: Path, fmt: str
) -> dict[str, Any]:
    """Validate, tokenise, encrypt and store a new version of ``<caller org>.<name>``.

    Nothing is stored unless every check passes; the encrypted file is written before the
    catalog row, so a crash in between leaves an orphan file but never a dangling version.
    """
    authorise_upload(services, principal, collab_id)
    dataset_id = f"{principal.org}.{name}"
    policy_number: int | None = None
    try:
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise InvalidRequest("name: a dataset name holds only letters, digits, '_' and '-'")
        policy_version, policy = active_policy(services, collab_id)
        policy_number = policy_version.version
        ds_policy = policy.dataset(dataset_id)
        if ds_policy is None:
            raise PolicyViolation(  # an unknown name is not echoed: it may be data
                "datasets", "name: the dataset is not described by the active policy"
            )
        if ds_policy.kind != "customer":
            raise InvalidRequest(f"dataset {dataset_id!r}: aggregate uploads are not supported yet")
        table, dropped = ingest(
            spooled,
            fmt,
            ds_policy,
            services.token_secret(collab_id),
            max_decoded_bytes=services.settings.max_decoded_bytes,
        )
        max_rows = max_rows_per_customer(table)
        with services.lock:
            version = services.catalog.next_dataset_version(collab_id, dataset_id)
            dv = DatasetVersion(
                collaboration=collab_id,
                dataset=dataset_id,
                version=version,
                file=f"{collab_id}/{dataset_id}/v{version}.parquet.enc",
                wrapped_key=b"",
                rows=table.num_rows,
                max_rows_per_customer=max_rows,
                schema={f.name: str(f.type) for f in table.schema if f.name != "_token"},
                uploaded_by=principal.key_id,
                created_at=services.clock(),
            )
            wrapped = services.files.write(dv.file, table, dv.aad)
            dv = replace(dv, wrapped_key=wrapped)
            services.catalog.add_dataset_version(dv)
    except GatewayError as exc:
        record(
            services,
            principal,
            collab_id,
            "dataset.rejected",
            visible_to=(principal.org,),
            details={
                "dataset": dataset_id,
                "datasets": [dataset_id],
                "policy_version": policy_number,
                "outcome": exc.code,
                "code": exc.code,
                "message": exc.message,
            },
        )
        raise
    record(
        services,
        principal,
        collab_id,
        "dataset.uploaded",
        visible_to=(principal.org,),
        details={
            "dataset": dataset_id,
            "datasets": [dataset_id],
            "version": dv.version,
            "rows": dv.rows,
            "policy_version": policy_version.version,
            "dropped_columns": dropped,
            "outcome": "stored",
        },
    )
    return {
        "dataset": dataset_id,
        "version": dv.version,
        "rows": dv.rows,
        "schema": dv.schema,
        "max_rows_per_customer": dv.max_rows_per_customer,
        "dropped_columns": dropped,
        "policy_version": policy_version.version,
    }


def list_datasets(services: Services, principal: Principal, collab_id: str) -> dict[str, Any]:
    """Datasets of the active policy with the columns it exposes.

    Exact row counts are shown to the dataset's owner only: to anyone else they are an exact
    aggregate of another party's customers.
    """
    member_collaboration(services, principal, collab_id)
    policy_version, policy = active_policy(services, collab_id)
    versions = services.catalog.latest_datasets(collab_id)
    listing = []
    for ds_id, ds in policy.datasets.items():
        dv = versions.get(ds_id)
        entry: dict[str, Any] = {
            "id": ds_id,
            "owner": ds.owner,
            "kind": ds.kind,
            "max_rows_per_unit": ds.max_rows_per_unit,
            "columns": _describe_columns(ds),
            "version": dv.version if dv else None,
            "uploaded_at": dv.created_at.isoformat() if dv else None,
        }
        if dv is not None and ds.owner == principal.org:
            entry["rows"] = dv.rows
            entry["max_rows_per_customer"] = dv.max_rows_per_customer
        listing.append(entry)
    return {"policy_version": policy_version.version, "datasets": listing}
