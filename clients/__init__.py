"""Python SDK of the Insight Gateway: typed sync and async clients, releases, pseudonymisation.

Example:
    >>> from clients import GatewayClient
    >>> with GatewayClient("http://127.0.0.1:8000", key) as gw:  # doctest: +SKIP
    ...     sql = "SELECT region, COUNT(*) AS n FROM bigmart.loyalty GROUP BY region"
    ...     release = gw.query("acme-bigmart-cx", sql=sql, epsilon=0.5)
    ...     print(release.to_pandas())
"""

from clients.async_client import AsyncGatewayClient
from clients.client import GatewayClient
from clients.errors import (
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    GatewayError,
    InvalidPolicyError,
    InvalidRequest,
    InvalidUpload,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PolicyViolation,
    ServerError,
)
from clients.pseudonymise import pseudonymise_keys, pseudonymise_table
from clients.release import Release
from clients.retry import RetryPolicy

__all__ = [
    "AsyncGatewayClient",
    "AuthenticationError",
    "BudgetExceeded",
    "Conflict",
    "GatewayClient",
    "GatewayError",
    "InvalidPolicyError",
    "InvalidRequest",
    "InvalidUpload",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolicyViolation",
    "Release",
    "RetryPolicy",
    "ServerError",
    "pseudonymise_keys",
    "pseudonymise_table",
]
