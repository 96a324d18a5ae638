"""When the SDK asks the gateway again, and when it must not: the privacy budget decides.

A query reserves its ε in the ledger *before* it computes anything, and the gateway recognises
a repeated query (answering the stored release for free, ``"replay": true``) only once the
first one has been released. A query that is still running, or that failed after its
reservation, is not deduplicated: sending it again would reserve ε a second time. The gateway
has no idempotency key either. So a request that may change something is retried only when
the gateway certainly did not act on it::

    answer or failure                          read-only request       request that may change
                                               (GET, explain)          something (query, upload,
                                                                       policy, admin)
    503 Service Unavailable                    retried                 retried if Retry-After
    429 budget_exceeded                        never                   never
    429 rate limit (any other code)            retried                 retried if Retry-After
    connection never made (connect error or    retried                 retried
      timeout, no free pooled connection)
    any other network failure (read or write   retried                 never
      timeout, connection dropped)
    a request that cannot be sent (bad URL     never                   never
      scheme, malformed request)
    any other answer                           never                   never

A 503 or 429 with ``Retry-After`` is a server, rate limiter or load balancer deliberately
refusing the request before handling it and saying when to come back. A bare 503 can come
from a proxy whose upstream connection broke mid-request, and the gateway answers 500 for a
query that failed after its reservation: neither is retried for a query (the safe side: a
bare 503 that was in fact sent before any work, such as uvicorn's concurrency limit, is
raised for the caller to decide). Waiting never refills a budget before its period ends, so
``budget_exceeded`` is final.

Delays grow exponentially with full jitter, ``uniform(0, min(max_delay, backoff * 2**n))``
before retry ``n + 1``; a ``Retry-After`` is honoured as a minimum, and one longer than
``max_delay`` is not waited for: the error is raised at once.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import httpx

__all__ = ["RetryPolicy"]

_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures that may pass; a bad URL scheme or a malformed request would only fail again.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a client retries; see the module docstring for *when*.

    Attributes:
        max_retries: Retries after the first attempt (0 turns retrying off).
        backoff: Seconds of the first backoff window; each retry doubles it.
        max_delay: Cap on one wait, in seconds; a longer ``Retry-After`` is not waited for.

    Example:
        >>> RetryPolicy(max_retries=5, backoff=0.2).max_retries
        5
        >>> RetryPolicy(max_retries=-1)
        Traceback (most recent call last):
        ...
        ValueError: max_retries must be a non-negative integer, not -1
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(
                f"max_retries must be a non-negative integer, not {self.max_retries!r}"
            )
        for name in ("backoff", "max_delay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before retry ``attempt + 1``, or None when no retry is left.

        Args:
            attempt: Retries made so far (0 before the first retry).
            retry_after: The server's ``Retry-After`` in seconds, if it sent one.
            rand: A uniform draw in [0, 1); jitter only, never anything privacy-related.

        Example:
            >>> RetryPolicy(backoff=1.0).delay(2, rand=lambda: 0.5)
            2.0
            >>> RetryPolicy(max_delay=10.0).delay(0, retry_after=60.0) is None
            True
        """
        if attempt >= self.max_retries:
            return None
        if retry_after is not None and retry_after > self.max_delay:
            return None
        window = min(self.max_delay, self.backoff * 2.0**attempt)
        jittered = rand() * window
        return jittered if retry_after is None else max(retry_after, jittered)


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None.

    Example:
        >>> retry_after(httpx.Response(503, headers={"Retry-After": "2"}))
        2.0
    """
    header = response.headers.get("Retry-After")
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def after_answer(
    policy: RetryPolicy,
    attempt: int,
    read_only: bool,
    response: httpx.Response,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before asking again after ``response``, or None to give it back."""
    status = response.status_code
    if status == 429 and _error_code(response) == "budget_exceeded":
        return None
    if status not in (429, 503):
        return None
    wait = retry_after(response)
    if wait is None and not read_only:
        return None
    return policy.delay(attempt, wait, rand)


def after_failure(
    policy: RetryPolicy,
    attempt: int,
    read_only: bool,
    error: httpx.TransportError,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before asking again after a network failure, or None to raise it."""
    if not isinstance(error, _NOTHING_SENT if not read_only else _TRANSIENT):
        return None
    return policy.delay(attempt, None, rand)


def pause(seconds: float) -> None:
    """Wait before a retry (the sync client)."""
    time.sleep(seconds)


async def apause(seconds: float) -> None:
    """Wait before a retry (the async client), without blocking the event loop."""
    await anyio.sleep(seconds)
