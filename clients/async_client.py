"""The asynchronous client of the Insight Gateway v1 HTTP API.

The same methods, arguments, answers and exceptions as :class:`clients.GatewayClient`, awaited
on ``httpx.AsyncClient``; requests are built and answers read by the same :mod:`clients._api`
functions. File uploads stream from an async generator whose disk reads run in a worker thread,
so a large upload never blocks the event loop nor sits whole in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from clients import _api, _upload
from clients import retry as _retry
from clients._api import Operation, QueryParam
from clients._upload import Progress, UploadSource
from clients.release import Explanation, Release
from clients.retry import RetryPolicy

__all__ = ["AsyncGatewayClient"]

T = TypeVar("T")


class AsyncGatewayClient:
    """An async connection to one gateway under one API key; see :class:`GatewayClient`.

    Args:
        base_url: The gateway's root, e.g. ``"http://127.0.0.1:8000"``.
        api_key: The secret of an API key; sent as a bearer token, never logged.
        timeout: Seconds allowed for connecting and for each read or write.
        transport: An httpx async transport to use instead of the network.
        retry: When and how long to back off and retry, as for :class:`GatewayClient`; the
            waits do not block the event loop.

    Example:
        >>> async with AsyncGatewayClient("http://127.0.0.1:8000", key) as gw:  # doctest: +SKIP
        ...     release = await gw.query("acme-bigmart-cx", sql=sql, epsilon=0.5)
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = RetryPolicy() if retry is None else retry
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_api.default_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _run(
        self, op: Operation[T], body: Callable[[], AsyncIterator[bytes]] | None = None
    ) -> T:
        """Send ``op`` (``body`` makes a fresh streamed body per attempt) and read the answer."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    op.method, op.path, **op.request_kwargs(body() if body else None)
                )
            except httpx.TransportError as exc:
                delay = _retry.after_failure(self.retry, attempt, op.read_only, exc)
                if delay is None:
                    raise
            else:
                delay = _retry.after_answer(self.retry, attempt, op.read_only, response)
                if delay is None:
                    return op.parse(_api.check(response))
            await _retry.apause(delay)
            attempt += 1

    async def health(self) -> dict[str, Any]:
        """Liveness and version. Example: ``await gw.health()``."""
        return await self._run(_api.health())

    async def me(self) -> dict[str, Any]:
        """The organisation and role of this key. Example: ``(await gw.me())["org"]``."""
        return await self._run(_api.me())

    async def create_org(self, id: str, name: str, kind: str) -> dict[str, Any]:
        """Create an organisation (admin only).

        Example: ``await gw.create_org("bigmart", "BigMart", "retailer")``.
        """
        return await self._run(_api.create_org(id, name, kind))

    async def create_key(self, org: str, role: str) -> dict[str, Any]:
        """Issue a key: ``{"key_id", "org", "role", "secret"}``, the secret shown once.

        Example: ``(await gw.create_key("bigmart", "analyst"))["secret"]``.
        """
        return await self._run(_api.create_key(org, role))

    async def create_collaboration(self, id: str, name: str, members: list[str]) -> dict[str, Any]:
        """Create a collaboration (admin only).

        Example: ``await gw.create_collaboration("cx", "CX", ["acme", "bigmart"])``.
        """
        return await self._run(_api.create_collaboration(id, name, members))

    async def collaboration(self, c: str) -> dict[str, Any]:
        """Read collaboration ``c``. Example: ``await gw.collaboration("cx")``."""
        return await self._run(_api.collaboration(c))

    async def upload(
        self,
        collaboration: str,
        name: str,
        source: UploadSource,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a dataset version, streamed; see :meth:`GatewayClient.upload`.

        Raises:
            FileNotFoundError, ValueError, TypeError: The source is unusable; nothing was sent.
            InvalidUpload: The dataset does not fit the policy.

        Example:
            >>> await gw.upload("cx", "loyalty", "loyalty.parquet")  # doctest: +SKIP
        """
        body = _upload.prepare_upload(source, content_type)
        op = _api.upload(collaboration, name, body.content_type, body.length)
        return await self._run(op, lambda: _upload.aiter_chunks(body, progress))

    async def datasets(self, c: str) -> Any:
        """The datasets the policy lets this caller see. Example: ``await gw.datasets("cx")``."""
        return await self._run(_api.datasets(c))

    async def query(
        self,
        c: str,
        *,
        plan: Mapping[str, Any] | None = None,
        sql: str | None = None,
        epsilon: float | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> Release:
        """Run a DP query given as exactly one of ``plan`` or ``sql``; see ``GatewayClient.query``.

        Sent again only when the gateway certainly did not act on it, as for the sync client.

        Example:
            >>> r = await gw.query("cx", sql=sql, epsilon=0.5)  # doctest: +SKIP
        """
        return await self._run(_api.query(c, plan, sql, epsilon, accuracy))

    async def explain(
        self,
        c: str,
        *,
        plan: Mapping[str, Any] | None = None,
        sql: str | None = None,
        epsilon: float | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> Explanation:
        """Cost and expected error of a query; spends nothing.

        Example: ``(await gw.explain("cx", sql=sql, epsilon=0.5)).epsilon``.
        """
        return await self._run(_api.explain(c, plan, sql, epsilon, accuracy))

    async def budget(self, c: str) -> list[dict[str, Any]]:
        """The ``budgets`` entries visible to this key. Example: ``await gw.budget("cx")``."""
        return await self._run(_api.budget(c))

    async def budget_history(self, c: str) -> list[dict[str, Any]]:
        """Spend over time per analyst organisation and period, from the ledger (as
        :meth:`GatewayClient.budget_history`). Example: ``await gw.budget_history("cx")``."""
        return await self._run(_api.budget_history(c))

    async def policy(self, c: str) -> str:
        """The active policy as YAML text. Example: ``print(await gw.policy("cx"))``."""
        return await self._run(_api.policy(c))

    async def policy_document(self, c: str) -> dict[str, Any]:
        """The active policy as JSON. Example: ``await gw.policy_document("cx")``."""
        return await self._run(_api.policy_document(c))

    async def put_policy(self, c: str, yaml_text: str) -> dict[str, Any]:
        """Propose a policy version: ``{"status", "version", "approvals", "diff"}``.

        Example: ``await gw.put_policy("cx", Path("policy.yaml").read_text())``.
        """
        return await self._run(_api.put_policy(c, yaml_text))

    async def approve_policy(self, c: str, version: int) -> dict[str, Any]:
        """Approve a proposed version for this key's organisation.

        Example: ``await gw.approve_policy("cx", 2)``.
        """
        return await self._run(_api.approve_policy(c, version))

    async def reject_policy(self, c: str, version: int) -> dict[str, Any]:
        """Reject a proposed version for this key's organisation.

        Example: ``await gw.reject_policy("cx", 3)``.
        """
        return await self._run(_api.decide_policy(c, version, "reject"))

    async def withdraw_policy(self, c: str, version: int) -> dict[str, Any]:
        """Withdraw a pending proposal of this key's organisation.

        Example: ``await gw.withdraw_policy("cx", 3)``.
        """
        return await self._run(_api.decide_policy(c, version, "withdraw"))

    async def policy_versions(self, c: str) -> list[dict[str, Any]]:
        """Every policy version with its status and approvals.

        Example: ``[v["status"] for v in await gw.policy_versions("cx")]``.
        """
        return await self._run(_api.policy_versions(c))

    async def policy_version(self, c: str, version: int) -> dict[str, Any]:
        """One policy version with its document, diff and approvals.

        Example: ``(await gw.policy_version("cx", 1))["document"]``.
        """
        return await self._run(_api.policy_version(c, version))

    async def audit(self, c: str, **params: QueryParam | None) -> list[dict[str, Any]]:
        """Audit events touching the caller's data; ``params`` go to the query string.

        Example: ``await gw.audit("cx", limit=50)``.
        """
        return await self._run(_api.audit(c, params))

    async def verify_audit(self, c: str) -> dict[str, Any]:
        """Check the audit hash chain. Example: ``(await gw.verify_audit("cx"))["ok"]``."""
        return await self._run(_api.verify_audit(c))
