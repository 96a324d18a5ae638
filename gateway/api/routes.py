"""HTTP routes of API v1. Routes authenticate, translate HTTP to a use case call, and format.

They never touch DuckDB or OpenDP: that is the service layer's job.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.domain.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.domain.model import Principal
from gateway.service import admin, audit, budget, datasets, policies, queries
from gateway.service.access import authenticate
from gateway.service.context import Services
from gateway.service.ingest import format_of
from gateway.version import __version__

router = APIRouter(prefix="/v1")

QUERY_EXAMPLE = {
    "plan": {
        "from": "bigmart.loyalty",
        "join": ["acme.survey"],
        "where": [{"column": "region", "op": "in", "values": ["north", "south"]}],
        "group_by": ["region"],
        "aggregates": [
            {"fn": "count", "as": "customers"},
            {"fn": "mean", "column": "spend_90d", "as": "avg_spend"},
        ],
    },
    "epsilon": 0.5,
}


def services_of(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal_of(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return authenticate(services_of(request), authorization)


Svc = Annotated[Services, Depends(services_of)]
Caller = Annotated[Principal, Depends(principal_of)]


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # nobody sets fields we do not expect

    id: str
    name: str
    kind: str


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # nobody sets fields we do not expect

    role: str


class CollaborationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # nobody sets fields we do not expect

    id: str
    name: str
    members: list[str] = Field(default_factory=list)


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/me")
def me(caller: Caller) -> dict[str, str]:
    return {"org": caller.org, "role": caller.role, "key_id": caller.key_id}


@router.post("/orgs", status_code=201)
def create_org(body: OrgIn, svc: Svc, caller: Caller) -> dict[str, str]:
    org = admin.create_org(svc, caller, body.id, body.name, body.kind)
    return {"id": org.id, "name": org.name, "kind": org.kind}


@router.post("/orgs/{org}/keys", status_code=201)
def create_key(org: str, body: KeyIn, svc: Svc, caller: Caller) -> dict[str, Any]:
    return admin.issue_key(svc, caller, org, body.role)


@router.post("/collaborations", status_code=201)
def create_collaboration(body: CollaborationIn, svc: Svc, caller: Caller) -> dict[str, Any]:
    return admin.create_collaboration(svc, caller, body.id, body.name, body.members)


@router.get("/collaborations/{c}")
def read_collaboration(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return admin.describe_collaboration(svc, caller, c)


@router.post(
    "/collaborations/{c}/datasets/{name}",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.arrow.stream": {
                    "schema": {"type": "string", "format": "binary"}
                },
            }
        }
    },
)
async def upload(c: str, name: str, request: Request, svc: Svc, caller: Caller) -> dict[str, Any]:
    """Stream the body to a private spool file, then validate, tokenise and store it.

    Who may upload is checked first, so a refused caller never gets a byte spooled to disk.
    """
    await run_in_threadpool(datasets.authorise_upload, svc, caller, c)
    fmt = format_of(request.headers.get("content-type"))
    limit = svc.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
    spool_dir = svc.settings.upload_tmp_dir
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, spool = tempfile.mkstemp(dir=spool_dir, suffix=".upload")
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
                fh.write(chunk)
        if size == 0:
            raise InvalidRequest("body: the upload is empty")
        return await run_in_threadpool(
            datasets.upload_dataset, svc, caller, c, name, Path(spool), fmt
        )
    finally:
        Path(spool).unlink(missing_ok=True)


@router.get("/collaborations/{c}/datasets")
def list_datasets(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return datasets.list_datasets(svc, caller, c)


@router.get("/collaborations/{c}/policy", response_model=None)
def read_policy(c: str, request: Request, svc: Svc, caller: Caller) -> Any:
    doc = policies.read_policy(svc, caller, c)
    accept = request.headers.get("accept", "")
    if "yaml" in accept:
        return PlainTextResponse(
            doc["document"],
            media_type="application/yaml",
            headers={"X-Policy-Version": str(doc["version"])},
        )
    return doc


@router.put(
    "/collaborations/{c}/policy",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            }
        }
    },
)
async def put_policy(c: str, request: Request, svc: Svc, caller: Caller) -> dict[str, Any]:
    media = (request.headers.get("content-type") or "application/yaml").split(";")[0].strip()
    if media not in ("application/yaml", "application/x-yaml", "text/yaml", "application/json"):
        raise UnsupportedMediaType("Content-Type must be application/yaml or application/json")
    body = await request.body()
    return await run_in_threadpool(policies.put_policy, svc, caller, c, body, media)


@router.get("/collaborations/{c}/policy/versions")
def list_policy_versions(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.list_versions(svc, caller, c)


@router.get("/collaborations/{c}/policy/versions/{v}")
def read_policy_version(c: str, v: int, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.read_version(svc, caller, c, v)


@router.post("/collaborations/{c}/policy/versions/{v}/approve")
def approve_policy(c: str, v: int, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.decide(svc, caller, c, v, "approved")


@router.post("/collaborations/{c}/policy/versions/{v}/reject")
def reject_policy(c: str, v: int, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.decide(svc, caller, c, v, "rejected")


@router.post("/collaborations/{c}/policy/versions/{v}/withdraw")
def withdraw_policy(c: str, v: int, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.withdraw(svc, caller, c, v)


@router.post("/collaborations/{c}/queries")
def run_query(
    c: str,
    svc: Svc,
    caller: Caller,
    body: Annotated[dict[str, Any], Body(examples=[QUERY_EXAMPLE])],
) -> dict[str, Any]:
    return queries.run_query(svc, caller, c, body)


@router.post("/collaborations/{c}/queries/explain")
def explain_query(
    c: str,
    svc: Svc,
    caller: Caller,
    body: Annotated[dict[str, Any], Body(examples=[QUERY_EXAMPLE])],
) -> dict[str, Any]:
    return queries.explain_query(svc, caller, c, body)


@router.get("/collaborations/{c}/budget")
def read_budget(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return budget.read_budgets(svc, caller, c)


@router.get("/collaborations/{c}/audit")
def read_audit(
    c: str,
    svc: Svc,
    caller: Caller,
    limit: Annotated[int, Query()] = 1000,
    after: Annotated[int, Query()] = 0,
) -> dict[str, Any]:
    return audit.read_audit(svc, caller, c, limit=limit, after=after)


@router.get("/collaborations/{c}/audit/verify")
def verify_audit(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return audit.verify_audit(svc, caller, c)
