"""The v1 HTTP API of DESIGN.md as pure functions, shared by the sync and async clients.

Each function builds an :class:`Operation`: the request to send (method, path, JSON or text
body, headers, query parameters) and the function that reads the answer. No I/O happens here,
so both clients only differ in how they send, and the contract lives in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from clients.errors import GatewayError, error_from_response
from clients.release import Explanation, Release

T = TypeVar("T")
JSON = "application/json"
YAML = "application/yaml"
QueryParam = str | int | float | bool
USER_AGENT = "insight-gateway-python/0.1.0"


def default_headers(api_key: str) -> dict[str, str]:
    """The headers every request carries; refuses an empty key before anything is sent."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("api_key must be a non-empty string")
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One API call: what to send and how to read a 2xx answer into ``T``."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, QueryParam] | None = None
    safe_to_repeat: bool = False  # a POST that changes nothing (explain); see clients.retry

    @property
    def read_only(self) -> bool:
        """True when sending the request twice changes nothing, so any retry is safe."""
        return self.method == "GET" or self.safe_to_repeat

    def request_kwargs(self, content: Any = None) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request``; ``content`` overrides the body."""
        return {
            "json": self.json,
            "content": self.content if content is None else content,
            "headers": dict(self.headers),
            "params": self.params,
        }


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _collab(c: str) -> str:
    return f"/v1/collaborations/{_segment(c, 'collaboration id')}"


# Reading answers -------------------------------------------------------------------------------


def check(response: httpx.Response) -> httpx.Response:
    """Return a 2xx answer unchanged; raise the typed :class:`GatewayError` otherwise."""
    if response.is_success:
        return response
    raise error_from_response(response)


def _invalid(response: httpx.Response, what: str) -> GatewayError:
    return GatewayError("invalid_response", f"the gateway answered {what}", response.status_code)


def json_value(response: httpx.Response) -> Any:
    """The decoded JSON body of a 2xx answer."""
    try:
        return response.json()
    except ValueError:
        raise _invalid(response, "a body that is not JSON") from None


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The decoded JSON body of a 2xx answer, which must be an object."""
    body = json_value(response)
    if not isinstance(body, dict):
        raise _invalid(response, "JSON that is not an object")
    return body


def _list_field(key: str) -> Callable[[httpx.Response], list[dict[str, Any]]]:
    def parse(response: httpx.Response) -> list[dict[str, Any]]:
        items = json_object(response).get(key)
        if not isinstance(items, list):
            raise _invalid(response, f"an object without a {key!r} list")
        return items

    return parse


def text(response: httpx.Response) -> str:
    """The body of a 2xx answer as text."""
    return response.text


def release(response: httpx.Response) -> Release:
    """The :class:`Release` in a 2xx answer."""
    try:
        return Release.from_json(json_object(response))
    except (ValueError, TypeError) as exc:
        raise _invalid(response, f"a malformed release ({exc})") from None


def explanation(response: httpx.Response) -> Explanation:
    """The :class:`Explanation` in a 2xx answer."""
    try:
        return Explanation.from_json(json_object(response))
    except (ValueError, TypeError) as exc:
        raise _invalid(response, f"a malformed explanation ({exc})") from None


# Building requests -----------------------------------------------------------------------------


def health() -> Operation[dict[str, Any]]:
    return Operation("GET", "/v1/health", json_object)


def me() -> Operation[dict[str, Any]]:
    return Operation("GET", "/v1/me", json_object)


def create_org(id: str, name: str, kind: str) -> Operation[dict[str, Any]]:
    _segment(id, "organisation id")
    return Operation("POST", "/v1/orgs", json_object, json={"id": id, "name": name, "kind": kind})


def create_key(org: str, role: str) -> Operation[dict[str, Any]]:
    path = f"/v1/orgs/{_segment(org, 'organisation id')}/keys"
    return Operation("POST", path, json_object, json={"role": role})


def create_collaboration(id: str, name: str, members: Sequence[str]) -> Operation[dict[str, Any]]:
    _segment(id, "collaboration id")
    if isinstance(members, str):
        raise TypeError("members must be a list of organisation ids, not one string")
    body = {"id": id, "name": name, "members": list(members)}
    return Operation("POST", "/v1/collaborations", json_object, json=body)


def collaboration(c: str) -> Operation[dict[str, Any]]:
    return Operation("GET", _collab(c), json_object)


def upload(c: str, name: str, content_type: str, length: int) -> Operation[dict[str, Any]]:
    """The upload request; the client supplies the streamed body separately."""
    path = f"{_collab(c)}/datasets/{_segment(name, 'dataset name')}"
    headers = {"Content-Type": content_type, "Content-Length": str(length), "Accept": JSON}
    return Operation("POST", path, json_object, headers=headers)


def datasets(c: str) -> Operation[Any]:
    return Operation("GET", f"{_collab(c)}/datasets", json_value)


def _query_body(
    plan: Mapping[str, Any] | None,
    sql: str | None,
    epsilon: float | None,
    accuracy: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    if (plan is None) == (sql is None):
        raise ValueError("pass exactly one of plan= and sql=")
    body: dict[str, Any] = {"plan": dict(plan)} if plan is not None else {"sql": sql}
    if (epsilon is None) == (accuracy is None):
        raise ValueError("pass exactly one of epsilon= and accuracy=")
    if accuracy is not None:
        if not isinstance(accuracy, Mapping):
            raise TypeError("accuracy must be a mapping such as {'abs': 50}")
        body["accuracy"] = dict(accuracy)
        return body
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise TypeError("epsilon must be a number")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number, not {epsilon!r}")
    body["epsilon"] = epsilon
    return body


def query(
    c: str,
    plan: Mapping[str, Any] | None,
    sql: str | None,
    epsilon: float | None,
    accuracy: Mapping[str, float] | None = None,
) -> Operation[Release]:
    body = _query_body(plan, sql, epsilon, accuracy)
    return Operation("POST", f"{_collab(c)}/queries", release, json=body)


def explain(
    c: str,
    plan: Mapping[str, Any] | None,
    sql: str | None,
    epsilon: float | None,
    accuracy: Mapping[str, float] | None = None,
) -> Operation[Explanation]:
    body = _query_body(plan, sql, epsilon, accuracy)
    path = f"{_collab(c)}/queries/explain"
    return Operation("POST", path, explanation, json=body, safe_to_repeat=True)


def budget(c: str) -> Operation[list[dict[str, Any]]]:
    return Operation("GET", f"{_collab(c)}/budget", _list_field("budgets"))


def budget_history(c: str) -> Operation[list[dict[str, Any]]]:
    return Operation("GET", f"{_collab(c)}/budget/history", _list_field("series"))


def policy(c: str) -> Operation[str]:
    return Operation("GET", f"{_collab(c)}/policy", text, headers={"Accept": YAML})


def policy_document(c: str) -> Operation[dict[str, Any]]:
    return Operation("GET", f"{_collab(c)}/policy", json_object, headers={"Accept": JSON})


def put_policy(c: str, yaml_text: str) -> Operation[dict[str, Any]]:
    if not isinstance(yaml_text, str):
        raise TypeError("yaml_text must be the policy document as a string")
    headers = {"Content-Type": YAML, "Accept": JSON}
    return Operation(
        "PUT", f"{_collab(c)}/policy", json_object, content=yaml_text.encode(), headers=headers
    )


def _policy_version(c: str, version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"policy version must be a positive integer, not {version!r}")
    return f"{_collab(c)}/policy/versions/{version}"


def policy_versions(c: str) -> Operation[list[dict[str, Any]]]:
    return Operation("GET", f"{_collab(c)}/policy/versions", _list_field("versions"))


def policy_version(c: str, version: int) -> Operation[dict[str, Any]]:
    path = _policy_version(c, version)
    return Operation("GET", path, json_object, headers={"Accept": JSON})


def decide_policy(c: str, version: int, decision: str) -> Operation[dict[str, Any]]:
    """``POST …/policy/versions/{v}/<decision>`` for approve, reject or withdraw."""
    if decision not in ("approve", "reject", "withdraw"):
        raise ValueError(f"decision must be approve, reject or withdraw, not {decision!r}")
    return Operation("POST", f"{_policy_version(c, version)}/{decision}", json_object)


def approve_policy(c: str, version: int) -> Operation[dict[str, Any]]:
    return decide_policy(c, version, "approve")


def audit(c: str, params: Mapping[str, QueryParam | None]) -> Operation[list[dict[str, Any]]]:
    kept = {k: v for k, v in params.items() if v is not None}
    return Operation("GET", f"{_collab(c)}/audit", _list_field("events"), params=kept)


def verify_audit(c: str) -> Operation[dict[str, Any]]:
    return Operation("GET", f"{_collab(c)}/audit/verify", json_object)
