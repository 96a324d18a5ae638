"""The SDK's public surface changes only on purpose."""

import clients


def test_all_is_exactly_the_public_api() -> None:
    assert clients.__all__ == [
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


def test_every_exported_name_exists_and_belongs_to_the_sdk() -> None:
    for name in clients.__all__:
        member = getattr(clients, name)
        assert member.__module__.startswith("clients."), name


def test_every_exception_derives_from_gateway_error() -> None:
    for name in clients.__all__:
        member = getattr(clients, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, clients.GatewayError), name
