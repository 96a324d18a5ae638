"""A collaboration made by an earlier release (HMAC-SHA256 tokens) keeps its token scheme.

The store is seeded by a gateway that still created HMAC collaborations, then reopened by this
one (which creates AES-CMAC collaborations): the collaboration stays on HMAC, a new upload is
tokenised with HMAC too, and its tokens still match the other partner's for shared customers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.demo.seed import seed_demo
from gateway.service import admin
from gateway.service.context import Services, open_services
from gateway.service.tokens import HMAC_SHA256

DEMO = "acme-bigmart-cx"
CUSTOMERS = 2_000


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A store seeded by a gateway that created HMAC collaborations (overrides conftest's)."""
    settings = Settings(data_dir=tmp_path / "var", demo=True, demo_customers=CUSTOMERS)
    with monkeypatch.context() as patch:
        patch.setattr(admin, "NEW_COLLABORATIONS", HMAC_SHA256)
        services = open_services(settings)
        try:
            seed_demo(services, customers=CUSTOMERS, progress=lambda _: None)
        finally:
            services.close()
    return settings


def stored_tokens(services: Services, dataset: str) -> set[bytes]:
    table = services.files.read(services.catalog.latest_datasets(DEMO)[dataset])
    return set(table["_token"].to_pylist())


def test_an_hmac_collaboration_keeps_hmac_and_still_joins(
    services: Services, upload: Any, encode: Any, demo_tables: Any
) -> None:
    key = services.token_key(DEMO)
    assert key.scheme == HMAC_SHA256
    response = upload("bigmart", "loyalty", encode.parquet(demo_tables.loyalty))
    assert response.status_code == 201, response.text
    assert services.catalog.latest_datasets(DEMO)["bigmart.loyalty"].version == 2
    loyalty = demo_tables.loyalty["customer_key"].to_pylist()
    survey = demo_tables.survey["customer_id"].to_pylist()
    expected = {key.token(k.encode()) for k in loyalty}
    assert stored_tokens(services, "bigmart.loyalty") == expected
    both = stored_tokens(services, "bigmart.loyalty") & stored_tokens(services, "acme.survey")
    assert len(both) == len(set(loyalty) & set(survey)) > 0
