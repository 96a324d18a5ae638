"""HTTP routes of API v1. Routes authenticate, translate HTTP to a use case call, and format.

They never touch DuckDB or OpenDP: that is the service layer's job. Every JSON answer has a
response model (:mod:`gateway.api.models`) and every error status the one error shape, so the
OpenAPI document at ``/openapi.json`` describes what is really sent.

Who may call what is decided before a body is read where the body is ours to read (uploads,
policies): a caller who may not use a collaboration never gets a byte spooled or buffered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Message

from gateway.api import models as m
from gateway.domain.errors import (
    InvalidRequest,
    PayloadTooLarge,
    UnknownField,
    UnsupportedMediaType,
)
from gateway.domain.model import Principal
from gateway.service import admin, audit, budget, datasets, policies, queries
from gateway.service.access import authenticate, authorise, require_role
from gateway.service.context import Services
from gateway.version import __version__

_REFUSALS = {
    400: "malformed input (`invalid_request`, `unsupported_query`)",
    401: "no valid API key (`unauthenticated`)",
    403: "the key's role may not do this, or the policy forbids it (`policy_violation`)",
    404: "not found, or not visible to the caller's organisation (`not_found`)",
    409: "conflict with the current state (`conflict`)",
    413: "body too large (`payload_too_large`)",
    415: "unsupported Content-Type (`unsupported_media_type`)",
    422: "a body field the API does not define (`unknown_field`), or a dataset or policy "
    "that does not validate (`invalid_dataset`, `invalid_policy`)",
    429: "over the privacy budget (`budget_exceeded`)",
}
MAX_JSON_BODY = 4 * 1024**2


class BoundedJsonRoute(APIRoute):
    """A route whose JSON body is refused (413) past :data:`MAX_JSON_BODY` bytes.

    FastAPI reads and parses a JSON body before any dependency runs, so without a bound anyone,
    even without a key, could make the gateway buffer an arbitrarily large body. Routes that
    read their own body (uploads, policies, decisions) keep their own, earlier limits.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def bounded(request: Request) -> Response:
            too_large = f"body: larger than the limit of {MAX_JSON_BODY} bytes"
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_JSON_BODY:
                raise PayloadTooLarge(too_large)
            received = 0

            async def receive() -> Message:
                nonlocal received
                message = await request.receive()
                received += len(message.get("body", b""))
                if received > MAX_JSON_BODY:
                    raise HTTPException(413, too_large)  # FastAPI re-raises HTTP exceptions
                return message

            return await handler(Request(request.scope, receive))

        return bounded


# Any 4xx answer has the one error shape; each route also lists the refusals it can give.
router = APIRouter(
    prefix="/v1",
    route_class=BoundedJsonRoute,
    responses={
        "4XX": {"model": m.ErrorOut, "description": "a refusal: `{error: {code, message}}`"}
    },
)


def json_route(
    model: type[BaseModel], *refusals: int, ok: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Route options: the response model, the refusals (with the one error shape) and, in
    ``ok``, anything more the success response documents (another media type).

    Fields a service leaves out (another party's row counts, ρ outside zCDP) stay out rather
    than being sent as null: ``exclude_unset``.
    """
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": m.ErrorOut, "description": _REFUSALS[status]} for status in refusals
    }
    if ok is not None:
        responses[200] = ok
    return {"response_model": model, "response_model_exclude_unset": True, "responses": responses}


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


def admin_of(caller: Annotated[Principal, Depends(principal_of)]) -> Principal:
    """The caller, if its key is an admin's: checked before the body is validated."""
    require_role(caller, "admin")
    return caller


_MAX_IGNORED_BODY = 4096


async def no_body(request: Request) -> None:
    """For endpoints that take no body: one that tries to set fields is refused, not ignored.

    An empty body or ``{}`` is accepted; ``{"org": …}`` is a 422 ``unknown_field`` (every field
    is unknown here); anything else a 400.
    """
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_IGNORED_BODY:
            raise InvalidRequest("body: this endpoint takes no body")
    text = bytes(raw).strip()
    if not text:
        return
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest("body: this endpoint takes no body") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body: this endpoint takes no body")
    if value:
        raise UnknownField("body")


Svc = Annotated[Services, Depends(services_of)]
Caller = Annotated[Principal, Depends(principal_of)]
Admin = Annotated[Principal, Depends(admin_of)]
NoBody = Annotated[None, Depends(no_body)]


@router.get("/health", **json_route(m.HealthOut))
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/me", **json_route(m.MeOut, 401))
def me(caller: Caller) -> dict[str, str]:
    return {"org": caller.org, "role": caller.role, "key_id": caller.key_id}


@router.post("/orgs", status_code=201, **json_route(m.OrgOut, 400, 401, 403, 409, 422))
def create_org(body: m.OrgIn, svc: Svc, caller: Admin) -> dict[str, str]:
    org = admin.create_org(svc, caller, body.id, body.name, body.kind)
    return {"id": org.id, "name": org.name, "kind": org.kind}


@router.post("/orgs/{org}/keys", status_code=201, **json_route(m.KeyOut, 400, 401, 403, 404, 422))
def create_key(org: str, body: m.KeyIn, svc: Svc, caller: Admin) -> dict[str, Any]:
    return admin.issue_key(svc, caller, org, body.role)


@router.post(
    "/collaborations",
    status_code=201,
    **json_route(m.CollaborationOut, 400, 401, 403, 404, 409, 422),
)
def create_collaboration(body: m.CollaborationIn, svc: Svc, caller: Admin) -> dict[str, Any]:
    return admin.create_collaboration(svc, caller, body.id, body.name, body.members)


@router.get("/collaborations/{c}", **json_route(m.CollaborationOut, 401, 404))
def read_collaboration(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return admin.describe_collaboration(svc, caller, c)


@router.post(
    "/collaborations/{c}/datasets/{name}",
    status_code=201,
    **json_route(m.UploadOut, 400, 401, 403, 404, 409, 413, 415, 422),
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
    """Stream the body into a sealed spool, then validate, tokenise and store it.

    Who may upload is checked first, so a refused caller never gets a byte spooled to disk; the
    spool is encrypted under a key that lives only in memory for the length of the upload.
    """
    return await datasets.receive_upload(
        svc,
        caller,
        c,
        name,
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
    )


@router.get("/collaborations/{c}/datasets", **json_route(m.DatasetsOut, 401, 404, 409))
def list_datasets(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return datasets.list_datasets(svc, caller, c)


@router.get(
    "/collaborations/{c}/policy",
    **json_route(
        m.PolicyOut,
        401,
        404,
        409,
        ok={
            "description": "the active version as JSON, or its YAML text when the request "
            "accepts `application/yaml` (version in `X-Policy-Version`)",
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        },
    ),
)
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
    **json_route(m.PolicyAnswerOut, 400, 401, 403, 404, 409, 415, 422),
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
    """Who may propose is checked before the body is read, and at most a byte over the
    policy size limit is buffered (the service refuses a larger document)."""
    await run_in_threadpool(authorise, svc, caller, c, "compliance")
    media = (request.headers.get("content-type") or "application/yaml").split(";")[0].strip()
    if media not in ("application/yaml", "application/x-yaml", "text/yaml", "application/json"):
        raise UnsupportedMediaType("Content-Type must be application/yaml or application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > policies.MAX_POLICY_BYTES:
            break
    return await run_in_threadpool(policies.put_policy, svc, caller, c, bytes(body), media)


@router.get("/collaborations/{c}/policy/versions", **json_route(m.PolicyVersionsOut, 401, 404))
def list_policy_versions(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.list_versions(svc, caller, c)


@router.get(
    "/collaborations/{c}/policy/versions/{v}", **json_route(m.PolicyVersionOut, 400, 401, 404)
)
def read_policy_version(c: str, v: int, svc: Svc, caller: Caller) -> dict[str, Any]:
    return policies.read_version(svc, caller, c, v)


DECISION = json_route(m.PolicyAnswerOut, 400, 401, 403, 404, 409, 422)


@router.post(
    "/collaborations/{c}/policy/versions/{v}/approve",
    **DECISION,
)
def approve_policy(c: str, v: int, svc: Svc, caller: Caller, _: NoBody) -> dict[str, Any]:
    return policies.decide(svc, caller, c, v, "approved")


@router.post(
    "/collaborations/{c}/policy/versions/{v}/reject",
    **DECISION,
)
def reject_policy(c: str, v: int, svc: Svc, caller: Caller, _: NoBody) -> dict[str, Any]:
    return policies.decide(svc, caller, c, v, "rejected")


@router.post(
    "/collaborations/{c}/policy/versions/{v}/withdraw",
    **DECISION,
)
def withdraw_policy(c: str, v: int, svc: Svc, caller: Caller, _: NoBody) -> dict[str, Any]:
    return policies.withdraw(svc, caller, c, v)


@router.post(
    "/collaborations/{c}/queries", **json_route(m.ReleaseOut, 400, 401, 403, 404, 409, 422, 429)
)
def run_query(
    c: str,
    svc: Svc,
    caller: Caller,
    body: Annotated[dict[str, Any], Body(examples=[QUERY_EXAMPLE])],
) -> dict[str, Any]:
    return queries.run_query(svc, caller, c, body)


@router.post(
    "/collaborations/{c}/queries/explain",
    **json_route(m.ExplainOut, 400, 401, 403, 404, 409, 422),
)
def explain_query(
    c: str,
    svc: Svc,
    caller: Caller,
    body: Annotated[dict[str, Any], Body(examples=[QUERY_EXAMPLE])],
) -> dict[str, Any]:
    return queries.explain_query(svc, caller, c, body)


@router.get("/collaborations/{c}/budget", **json_route(m.BudgetsOut, 401, 403, 404, 409))
def read_budget(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return budget.read_budgets(svc, caller, c)


@router.get(
    "/collaborations/{c}/budget/history", **json_route(m.BudgetHistoryOut, 401, 403, 404, 409)
)
def read_budget_history(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return budget.read_budget_history(svc, caller, c)


@router.get("/collaborations/{c}/audit", **json_route(m.AuditOut, 400, 401, 403, 404))
def read_audit(
    c: str,
    svc: Svc,
    caller: Caller,
    limit: Annotated[int, Query()] = 1000,
    after: Annotated[int, Query(description="the last `seq` read (the caller's numbering)")] = 0,
) -> dict[str, Any]:
    return audit.read_audit(svc, caller, c, limit=limit, after=after)


@router.get("/collaborations/{c}/audit/verify", **json_route(m.AuditVerifyOut, 401, 403, 404))
def verify_audit(c: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    return audit.verify_audit(svc, caller, c)
