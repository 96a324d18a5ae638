"""The synchronous client of the Insight Gateway v1 HTTP API.

Every method sends one request with ``Authorization: Bearer <key>`` and either returns the
decoded answer or raises the :class:`~clients.errors.GatewayError` subclass matching the
gateway's error code; a network failure surfaces as the underlying ``httpx.TransportError``.
A 503, a rate limit or a network failure is retried with backoff only where asking again
cannot spend budget twice (the rule is in :mod:`clients.retry`).
Requests are built and answers read by the shared :mod:`clients._api` functions, so this class
and :class:`~clients.async_client.AsyncGatewayClient` cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from clients import _api, _upload
from clients import retry as _retry
from clients._api import Operation, QueryParam
from clients._upload import Progress, UploadSource
from clients.async_client import AsyncGatewayClient
from clients.release import Explanation, Release
from clients.retry import RetryPolicy

__all__ = ["AsyncGatewayClient", "GatewayClient"]

T = TypeVar("T")


class GatewayClient:
    """A connection to one gateway under one API key (one organisation, one role).

    Use it as a context manager, or call :meth:`close`, to release the connection pool.

    Args:
        base_url: The gateway's root, e.g. ``"http://127.0.0.1:8000"``.
        api_key: The secret of an API key; sent as a bearer token, never logged.
        timeout: Seconds allowed for connecting and for each read or write.
        transport: An httpx transport to use instead of the network (tests, ASGI apps).
        retry: When and how long to back off and retry; ``RetryPolicy(max_retries=0)``
            turns retrying off. A query is never sent twice unless the gateway certainly did
            not act on it (see :mod:`clients.retry`).

    Example:
        >>> with GatewayClient("http://127.0.0.1:8000", key) as gw:  # doctest: +SKIP
        ...     print(gw.me()["org"])
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = RetryPolicy() if retry is None else retry
        self._http = httpx.Client(
            base_url=base_url,
            headers=_api.default_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._http.close()

    def _run(self, op: Operation[T], body: Callable[[], Iterator[bytes]] | None = None) -> T:
        """Send ``op`` (``body`` makes a fresh streamed body per attempt) and read the answer."""
        attempt = 0
        while True:
            try:
                response = self._http.request(
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
            _retry.pause(delay)
            attempt += 1

    def health(self) -> dict[str, Any]:
        """Liveness and version; needs no particular role.

        Example:
            >>> gw.health()["status"]  # doctest: +SKIP
        """
        return self._run(_api.health())

    def me(self) -> dict[str, Any]:
        """The organisation and role of this client's key.

        Example:
            >>> gw.me()  # doctest: +SKIP
            {'org': 'acme', 'role': 'analyst'}
        """
        return self._run(_api.me())

    def create_org(self, id: str, name: str, kind: str) -> dict[str, Any]:
        """Create an organisation (admin only); answers the created organisation.

        Example:
            >>> gw.create_org("bigmart", "BigMart", "retailer")  # doctest: +SKIP
        """
        return self._run(_api.create_org(id, name, kind))

    def create_key(self, org: str, role: str) -> dict[str, Any]:
        """Issue a key for ``org`` with ``role`` (admin only).

        Returns:
            ``{"key_id", "org", "role", "secret"}``; the secret is shown this once only.

        Example:
            >>> secret = gw.create_key("bigmart", "contributor")["secret"]  # doctest: +SKIP
        """
        return self._run(_api.create_key(org, role))

    def create_collaboration(self, id: str, name: str, members: list[str]) -> dict[str, Any]:
        """Create a collaboration between member organisations (admin only).

        Example:
            >>> gw.create_collaboration("cx", "CX", ["acme", "bigmart"])  # doctest: +SKIP
        """
        return self._run(_api.create_collaboration(id, name, members))

    def collaboration(self, c: str) -> dict[str, Any]:
        """Read collaboration ``c`` (members only).

        Example:
            >>> gw.collaboration("acme-bigmart-cx")["members"]  # doctest: +SKIP
        """
        return self._run(_api.collaboration(c))

    def upload(
        self,
        collaboration: str,
        name: str,
        source: UploadSource,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a new version of the caller's dataset ``name`` (contributor only).

        A file is streamed from disk in 64 KiB chunks and never read whole; its media type
        comes from the suffix (``.parquet``/``.pq``, ``.csv``, ``.arrow``/``.arrows`` for an
        Arrow IPC stream) unless ``content_type`` is given. A pyarrow Table or pandas
        DataFrame (index dropped) is sent as Parquet. Pseudonymise keys first if partners
        agreed to (:func:`clients.pseudonymise.pseudonymise_table`).

        Args:
            collaboration: The collaboration id.
            name: The dataset name within the caller's organisation.
            source: A path, a ``pyarrow.Table`` or a ``pandas.DataFrame``.
            content_type: Media type overriding the one told by the suffix.
            progress: Called after each chunk with the bytes sent so far (from zero again
                if the upload is retried).

        Returns:
            The gateway's answer: version, schema, rows.

        Raises:
            FileNotFoundError, ValueError, TypeError: The source is unusable; nothing was sent.
            InvalidUpload: The dataset does not fit the policy.
            PayloadTooLarge: The body exceeds the gateway's limit.

        Example:
            >>> gw.upload("acme-bigmart-cx", "loyalty", "loyalty.parquet")  # doctest: +SKIP
            {'version': 1, 'rows': 120000, ...}
        """
        body = _upload.prepare_upload(source, content_type)
        op = _api.upload(collaboration, name, body.content_type, body.length)
        return self._run(op, lambda: _upload.iter_chunks(body, progress))

    def datasets(self, c: str) -> Any:
        """The datasets of ``c`` the policy lets this caller see, as the gateway answers them.

        Example:
            >>> gw.datasets("acme-bigmart-cx")  # doctest: +SKIP
        """
        return self._run(_api.datasets(c))

    def query(
        self,
        c: str,
        *,
        plan: Mapping[str, Any] | None = None,
        sql: str | None = None,
        epsilon: float | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> Release:
        """Run a DP query, given as exactly one of a JSON ``plan`` or ``sql`` (analyst only).

        ε is reserved from the budget before noise is drawn; asking the same query again
        returns the stored release with ``replay=True`` at no cost. Give exactly one of
        ``epsilon`` and ``accuracy``: a target such as ``{"abs": 50}`` (95% half-width of
        each value) or ``{"rel": 0.05, "at_count": 1000}`` lets the gateway pick the
        smallest ε that meets it (:meth:`explain` shows which).

        The query is sent again only when the gateway certainly did not act on it (the
        connection was never made, or a 503 or rate-limit 429 with ``Retry-After``). After
        any other failure it may have reserved ε, so the error is raised: ask again later;
        if the first attempt was released, that answer comes back as a free replay.

        Raises:
            ValueError: Both or neither of ``plan`` and ``sql`` (or of ``epsilon`` and
                ``accuracy``), or ε not positive; nothing sent.
            PolicyViolation: The policy forbids a use of data in the query, or meeting the
                accuracy target needs more than the per-query maximum ε.
            BudgetExceeded: The budget left is smaller than the query's ε.

        Example:
            >>> r = gw.query("acme-bigmart-cx", epsilon=0.5,  # doctest: +SKIP
            ...     sql="SELECT region, COUNT(*) AS n FROM bigmart.loyalty GROUP BY region")
            >>> r.to_pandas()  # doctest: +SKIP
        """
        return self._run(_api.query(c, plan, sql, epsilon, accuracy))

    def explain(
        self,
        c: str,
        *,
        plan: Mapping[str, Any] | None = None,
        sql: str | None = None,
        epsilon: float | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> Explanation:
        """The cost and expected error of a query, as for :meth:`query`; spends nothing.

        Example:
            >>> gw.explain("acme-bigmart-cx", sql=sql, epsilon=0.5).epsilon  # doctest: +SKIP
            0.5
        """
        return self._run(_api.explain(c, plan, sql, epsilon, accuracy))

    def budget(self, c: str) -> list[dict[str, Any]]:
        """Budget entries (``org``, ``epsilon_total``/``_spent``/``_left``, ``period``, ...).

        An analyst sees only its own organisation's entry.

        Example:
            >>> gw.budget("acme-bigmart-cx")[0]["epsilon_left"]  # doctest: +SKIP
        """
        return self._run(_api.budget(c))

    def budget_history(self, c: str) -> list[dict[str, Any]]:
        """Spend over time from the ledger: one series (``org``, ``period``, ``bucket``,
        ``points``) per analyst organisation and period, the current period last; each point
        has ``at`` and the cumulative ``epsilon_spent`` against ``epsilon_total``.

        An analyst sees only its own organisation's series.

        Example:
            >>> now = gw.budget_history("acme-bigmart-cx")[-1]  # doctest: +SKIP
            >>> now["points"][-1]["epsilon_spent"]  # doctest: +SKIP
            2.5
        """
        return self._run(_api.budget_history(c))

    def policy(self, c: str) -> str:
        """The active policy of ``c`` as YAML text.

        Example:
            >>> print(gw.policy("acme-bigmart-cx"))  # doctest: +SKIP
        """
        return self._run(_api.policy(c))

    def policy_document(self, c: str) -> dict[str, Any]:
        """The active policy of ``c`` as a JSON document.

        Example:
            >>> gw.policy_document("acme-bigmart-cx")["rules"]  # doctest: +SKIP
        """
        return self._run(_api.policy_document(c))

    def put_policy(self, c: str, yaml_text: str) -> dict[str, Any]:
        """Propose a new policy version (compliance only).

        Returns:
            ``{"status": "active" | "pending", "version", "approvals", "diff"}``.

        Raises:
            InvalidPolicyError: The document does not validate.

        Example:
            >>> gw.put_policy("acme-bigmart-cx", Path("policy.yaml").read_text())  # doctest: +SKIP
        """
        return self._run(_api.put_policy(c, yaml_text))

    def approve_policy(self, c: str, version: int) -> dict[str, Any]:
        """Approve a proposed policy version for this key's organisation (compliance only).

        Raises:
            Conflict: This organisation already approved the version.

        Example:
            >>> gw.approve_policy("acme-bigmart-cx", 2)["status"]  # doctest: +SKIP
            'active'
        """
        return self._run(_api.approve_policy(c, version))

    def reject_policy(self, c: str, version: int) -> dict[str, Any]:
        """Reject a proposed policy version for this key's organisation (compliance only).

        A rejected version never becomes active; the active version stays in force.

        Returns:
            ``{"status", "version", "approvals", "diff"}`` as for :meth:`put_policy`.

        Raises:
            Conflict: The version is no longer pending.

        Example:
            >>> gw.reject_policy("acme-bigmart-cx", 3)["status"]  # doctest: +SKIP
            'rejected'
        """
        return self._run(_api.decide_policy(c, version, "reject"))

    def withdraw_policy(self, c: str, version: int) -> dict[str, Any]:
        """Withdraw a pending proposal of this key's organisation (compliance only).

        Raises:
            Conflict: The version is no longer pending.

        Example:
            >>> gw.withdraw_policy("acme-bigmart-cx", 3)["status"]  # doctest: +SKIP
            'withdrawn'
        """
        return self._run(_api.decide_policy(c, version, "withdraw"))

    def policy_versions(self, c: str) -> list[dict[str, Any]]:
        """Every policy version of ``c``, oldest first, with its status and approvals.

        Returns:
            Entries ``{"version", "status", "proposed_by", "created_at", "approvals"}``;
            ``status`` is one of active, pending, superseded, rejected, withdrawn.

        Example:
            >>> [v["status"] for v in gw.policy_versions("acme-bigmart-cx")]  # doctest: +SKIP
            ['superseded', 'active', 'pending']
        """
        return self._run(_api.policy_versions(c))

    def policy_version(self, c: str, version: int) -> dict[str, Any]:
        """One policy version: ``status``, ``document`` (YAML), ``diff``, ``approvals``, ...

        Older and refused versions stay readable.

        Example:
            >>> print(gw.policy_version("acme-bigmart-cx", 1)["document"])  # doctest: +SKIP
        """
        return self._run(_api.policy_version(c, version))

    def audit(self, c: str, **params: QueryParam | None) -> list[dict[str, Any]]:
        """Audit events touching the caller's data (compliance only).

        Args:
            c: The collaboration id.
            **params: Query-string filters passed through to the gateway; ``None`` is dropped.

        Example:
            >>> gw.audit("acme-bigmart-cx", limit=50)  # doctest: +SKIP
        """
        return self._run(_api.audit(c, params))

    def verify_audit(self, c: str) -> dict[str, Any]:
        """Check the audit hash chain: ``{"ok", "events", "first_bad"}``.

        Example:
            >>> gw.verify_audit("acme-bigmart-cx")["ok"]  # doctest: +SKIP
            True
        """
        return self._run(_api.verify_audit(c))
