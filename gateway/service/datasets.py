"""Uploading datasets and listing what the policy lets a caller see.

An upload body is received into an :class:`UploadSpool` (sealed on disk under a key held only
in memory), then parsed from it batch by batch straight into the sealed dataset file: neither
the body nor the stored table is ever on disk in the clear, and memory stays bounded by a few
batches whatever the upload's size.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

from anyio import to_thread

from gateway.domain.errors import (
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    PolicyViolation,
)
from gateway.domain.model import DatasetVersion, Principal, dataset_key_aad
from gateway.service.access import active_policy, member_collaboration, require_role
from gateway.service.context import Services, record
from gateway.service.ingest import BatchCheck, Ingested, format_of, ingest
from gateway.service.ingest_aggregate import check_aggregate_rows
from gateway.store.spool import UploadSpool

_upload_locks: dict[tuple[str, str, str], threading.Lock] = {}
_upload_locks_guard = threading.Lock()


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
        elif rule.per_unit_bounds is not None:  # a measure of an aggregate dataset
            entry["per_unit_bounds"] = list(rule.per_unit_bounds)
            entry["aggregates"] = list(rule.aggregates)
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


def open_spool(services: Services) -> UploadSpool:
    """A new spool for one upload body, under the data directory's ``tmp``; close it after."""
    return UploadSpool(services.settings.upload_tmp_dir)


async def receive_upload(
    services: Services,
    principal: Principal,
    collab_id: str,
    name: str,
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterable[bytes],
    *,
    checks: Sequence[BatchCheck] = (),
) -> dict[str, Any]:
    """Receive a streamed upload body into a sealed spool, then store it (``upload_dataset``).

    Who may upload is checked first, so a refused caller never gets a byte spooled; the spool
    is removed on every path, success or failure. This is what the upload route calls.

    Raises:
        UnsupportedMediaType: ``content_type`` is not Parquet, CSV or an Arrow stream.
        PayloadTooLarge: the declared or received body is over ``max_upload_bytes``.
        InvalidRequest: the body is empty.
        GatewayError: whatever ``upload_dataset`` refuses.
    """
    await to_thread.run_sync(authorise_upload, services, principal, collab_id)
    refusal: GatewayError | None = None
    try:
        return await _receive(
            services, principal, collab_id, name, content_type, content_length, body, checks
        )
    except GatewayError as exc:
        # Drop the frames (and the Arrow buffers they hold) before handing freed memory back: a
        # refused bomb would otherwise leave the process at its peak size.
        refusal = exc.with_traceback(None)
        refusal.__context__ = refusal.__cause__ = None
    await to_thread.run_sync(_release_arrow_memory)
    raise refusal


def _release_arrow_memory() -> None:
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


async def _receive(
    services: Services,
    principal: Principal,
    collab_id: str,
    name: str,
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterable[bytes],
    checks: Sequence[BatchCheck],
) -> dict[str, Any]:
    fmt = format_of(content_type)
    limit = services.settings.max_upload_bytes
    too_large = PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise too_large
    with open_spool(services) as spool:
        async for chunk in body:
            if spool.size + len(chunk) > limit:
                raise too_large
            spool.write(chunk)
        if spool.size == 0:
            raise InvalidRequest("body: the upload is empty")
        result: dict[str, Any] = await to_thread.run_sync(
            partial(upload_dataset, checks=checks),
            services,
            principal,
            collab_id,
            name,
            spool,
            fmt,
        )
        return result


@contextmanager
def _one_upload_at_a_time(services: Services, collab_id: str, dataset_id: str) -> Iterator[None]:
    """Serialise uploads of one dataset: its next version number is taken before ingest."""
    key = (str(services.settings.data_dir), collab_id, dataset_id)
    with _upload_locks_guard:
        lock = _upload_locks.setdefault(key, threading.Lock())
    with lock:
        yield


@contextmanager
def _body_file(spooled: UploadSpool | Path) -> Iterator[BinaryIO]:
    if isinstance(spooled, UploadSpool):
        with spooled.reader() as reader:
            yield cast(BinaryIO, reader)
    else:  # a plaintext file the caller wrote itself (tools, benchmarks)
        with spooled.open("rb") as fh:
            yield fh


def _ingest_version(
    services: Services,
    principal: Principal,
    collab_id: str,
    dataset_id: str,
    ds_policy: Any,
    spooled: UploadSpool | Path,
    fmt: str,
    checks: Sequence[BatchCheck],
) -> tuple[DatasetVersion, tuple[str, ...]]:
    """Ingest into the sealed file of the next version and add that version to the catalog.

    Returns the version and the hidden columns the file held (dropped, not stored). The file
    is complete and durable before the catalog row is written: a crash in between leaves an
    orphan file, never a dangling version.
    """
    with _one_upload_at_a_time(services, collab_id, dataset_id):
        with services.lock:
            version = services.catalog.next_dataset_version(collab_id, dataset_id)
        relative = f"{collab_id}/{dataset_id}/v{version}.parquet.enc"
        aad = dataset_key_aad(collab_id, dataset_id, version)
        with _body_file(spooled) as body, services.files.writer(relative, aad) as writer:
            stored: Ingested = ingest(
                body,
                fmt,
                ds_policy,
                services.token_key(collab_id),
                writer.write,
                max_decoded_bytes=services.settings.max_decoded_bytes,
                checks=checks,
            )
            wrapped = writer.commit()
        dv = DatasetVersion(
            collaboration=collab_id,
            dataset=dataset_id,
            version=version,
            file=relative,
            wrapped_key=wrapped,
            rows=stored.rows,
            max_rows_per_customer=stored.max_rows_per_customer,
            schema=stored.schema,
            uploaded_by=principal.key_id,
            created_at=services.clock(),
        )
        with services.lock:
            services.catalog.add_dataset_version(dv)
        return dv, stored.dropped


def upload_dataset(
    services: Services,
    principal: Principal,
    collab_id: str,
    name: str,
    spooled: UploadSpool | Path,
    fmt: str,
    *,
    checks: Sequence[BatchCheck] = (),
) -> dict[str, Any]:
    """Validate, tokenise, encrypt and store a new version of ``<caller org>.<name>``.

    ``spooled`` is the upload's spool (or, for tools that made one, a plaintext file). The
    body is read once, batch by batch, into the sealed file of the new version; nothing is
    added to the catalog unless every check passes (``checks`` run on every stored batch).

    Raises:
        InvalidRequest: a bad dataset name, or a kind of dataset that cannot be uploaded yet.
        PolicyViolation: the active policy does not describe the dataset.
        InvalidDataset: the file does not satisfy the policy (see ``ingest``).
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
        if ds_policy.is_aggregate:  # every row checked against its owner's declarations
            checks = (*checks, check_aggregate_rows)
        dv, dropped_columns = _ingest_version(
            services, principal, collab_id, dataset_id, ds_policy, spooled, fmt, checks
        )
        dropped = list(dropped_columns)
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
