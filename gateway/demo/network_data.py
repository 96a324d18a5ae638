"""Synthetic demo tables for the ``acme-retail-network`` collaboration.

BigMart and ShopCo share weekly store aggregates (``<retailer>.store_weeks``: one row per store
and week, 13 weeks, with the loyalty customers behind the row, their spend and how many of them
are promoters); ACME shares a customer-level NPS survey (``acme.nps_survey``). Columns, types
and public keys are those of ``policies/acme-retail-network.yaml``.

Every aggregate row is a real aggregate of simulated customers: each customer of a store-week
draws a spend (capped at 500, the policy's ``per_unit_bounds``) and a promoter flag, and the row
sums them, so every row satisfies ``count x per_unit_bounds`` and a customer, counted once a week
at one store, is in at most 13 rows. Rows of fewer than 10 customers (the policy's
``min_row_count``) are left out, as a retailer would before sharing.

The data tells a story an analyst can find: ShopCo's customers spend less per visit-week than
BigMart's (about 47 against 61) but are more often promoters (about 46% against 37%); north
spends the most at both; ACME's NPS is highest in the north. Noise here is numpy's seeded
generator: this is data generation, never privacy noise.

Example:
    >>> tables = generate_network_tables(survey_customers=2_000)
    >>> tables.store_weeks["shopco"].num_rows <= 24 * 13
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gateway.demo.data import REGIONS, SEGMENTS, STORE_REGIONS

__all__ = ["NETWORK_SEED", "RETAILERS", "WEEKS", "NetworkTables", "generate_network_tables"]

NETWORK_SEED = 20261124
WEEKS = 13
RETAILERS = ("bigmart", "shopco")
_MIN_ROW_COUNT = 10
_SPEND_CAP = 500.0


@dataclass(frozen=True)
class _Retailer:
    stores: tuple[tuple[str, int], ...]  # (store_id, region index)
    weekly_customers: float  # mean customers per store-week of an average store
    basket: float  # median weekly spend per customer
    promoter_rate: float


_REGION_SPEND = np.array([1.18, 0.97, 0.93, 1.0])  # north spends the most
_SHOPCO_STORES = tuple(
    (f"K{n:03d}", region)
    for n, region in enumerate((0,) * 8 + (1,) * 7 + (2,) * 5 + (3,) * 4, start=1)
)
_RETAILER_PROFILES = {
    "bigmart": _Retailer(
        stores=tuple((s, REGIONS.index(r)) for s, r in STORE_REGIONS),
        weekly_customers=180.0,
        basket=52.0,
        promoter_rate=0.37,
    ),
    "shopco": _Retailer(
        stores=_SHOPCO_STORES, weekly_customers=140.0, basket=40.0, promoter_rate=0.46
    ),
}


@dataclass(frozen=True)
class NetworkTables:
    """The demo network's tables: each retailer's ``store_weeks`` and ACME's ``nps_survey``."""

    store_weeks: dict[str, pa.Table]
    nps_survey: pa.Table


def generate_network_tables(
    survey_customers: int = 20_000, seed: int = NETWORK_SEED
) -> NetworkTables:
    """Generate both retailers' weekly store aggregates and ACME's NPS survey.

    The same arguments always give the same tables.

    Args:
        survey_customers: Rows of ``acme.nps_survey``, one per customer.
        seed: Seed of the numpy generator that draws everything.
    """
    if survey_customers < 0:
        raise ValueError("survey_customers must be >= 0")
    rng = np.random.default_rng(seed)
    weeks = {name: _store_weeks(rng, _RETAILER_PROFILES[name]) for name in RETAILERS}
    return NetworkTables(store_weeks=weeks, nps_survey=_nps_survey(rng, survey_customers))


def _store_weeks(rng: np.random.Generator, retailer: _Retailer) -> pa.Table:
    size = rng.gamma(6.0, 1.0 / 6.0, len(retailer.stores))  # store size around 1
    season = 1.0 + 0.15 * np.sin(np.arange(WEEKS) / WEEKS * 2 * np.pi)
    store_ids: list[str] = []
    regions: list[int] = []
    weeks: list[int] = []
    counts: list[int] = []
    for (store_id, store_region), scale in zip(retailer.stores, size, strict=True):
        customers = rng.poisson(retailer.weekly_customers * scale * season)
        for week, n in enumerate(customers, start=1):
            if n >= _MIN_ROW_COUNT:
                store_ids.append(store_id)
                regions.append(store_region)
                weeks.append(week)
                counts.append(int(n))
    count = np.array(counts, dtype=np.int64)
    # One draw per customer behind each row, summed per row: rows are true aggregates.
    row_of_customer = np.repeat(np.arange(len(count)), count)
    median = retailer.basket * _REGION_SPEND[np.array(regions, dtype=np.int64)[row_of_customer]]
    spend = np.minimum(median * np.exp(0.55 * rng.standard_normal(len(median))), _SPEND_CAP)
    promoter = (rng.random(len(median)) < retailer.promoter_rate).astype(np.int64)
    starts = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(count)[:-1]))
    row_spend = np.add.reduceat(np.round(spend, 2), starts)
    row_promoters = np.add.reduceat(promoter, starts)
    return pa.table(
        {
            "region": pa.array([REGIONS[r] for r in regions], type=pa.string()),
            "store_id": pa.array(store_ids, type=pa.string()),
            "week": pa.array(weeks, type=pa.int64()),
            "customers": pa.array(count, type=pa.int64()),
            "spend": pa.array(np.round(row_spend, 2), type=pa.float64()),
            "promoters": pa.array(row_promoters, type=pa.int64()),
        }
    )


def _nps_survey(rng: np.random.Generator, n: int) -> pa.Table:
    region = rng.choice(len(REGIONS), size=n, p=(0.34, 0.27, 0.22, 0.17))
    segment = rng.choice(len(SEGMENTS), size=n, p=(0.3, 0.4, 0.2, 0.1))
    latent = 0.5 * (region == 0) + 0.25 * segment + rng.standard_normal(n)
    nps = np.clip(np.rint(7.0 + 1.5 * latent), 0, 10).astype(np.int64)
    ids = rng.choice(10**8, size=n, replace=False)
    return pa.table(
        {
            "customer_id": pa.array([f"A{i:08d}" for i in ids], type=pa.string()),
            "region": pa.array([REGIONS[r] for r in region], type=pa.string()),
            "segment": pa.array([SEGMENTS[s] for s in segment], type=pa.string()),
            "nps_score": pa.array(nps, type=pa.int64()),
        }
    )
