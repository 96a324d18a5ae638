"""Synthetic demo tables for the ``acme-bigmart-cx`` collaboration.

BigMart (a retailer) holds a loyalty table and ACME (a brand) a survey table, one row per
customer each, with the columns, types and public keys of ``policies/acme-bigmart-cx.yaml``.
About ``shared_fraction`` of each table's customers are also in the other table, under the same
customer key (``"C00012345"``), so the two join.

Every customer of the universe has latent traits drawn once from the seed (affinity, sentiment,
engagement, home region); both tables derive their columns from those traits, so a customer
in both tables looks like the same person in both. The data therefore tells stories an analyst
can find through the gateway:

* premium and luxury ACME customers spend more at BigMart (affinity drives both);
* north spends the most per visit; app users give a higher NPS than store or online shoppers;
* satisfaction rises with segment, and ACME satisfaction tracks BigMart NPS (shared sentiment);
* outdoor products are more popular with north shoppers;
* store ``S040`` is a tiny pop-up store that DP partition selection should keep hidden.

Some values exceed the policy's bounds on purpose (about 0.5% of ``spend_90d`` above 2000, a
few ``visits_90d`` above 60), so clamping matters. Noise here is numpy's seeded generator: this
is data generation, never privacy noise. Generation is vectorised and deterministic for a seed.

Example:
    >>> tables = generate_demo_tables(customers=1_000, seed=7)
    >>> tables.loyalty.num_rows, tables.survey.num_rows
    (1000, 1000)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

__all__ = [
    "CHANNELS",
    "DEFAULT_CUSTOMERS",
    "DEFAULT_SEED",
    "DEFAULT_SHARED_FRACTION",
    "LOYALTY_CSV_FILE",
    "LOYALTY_FILE",
    "PRODUCT_LINES",
    "REGIONS",
    "SEGMENTS",
    "STORE_REGIONS",
    "SURVEY_FILE",
    "DemoTables",
    "generate_demo_tables",
    "write_demo_files",
]

DEFAULT_CUSTOMERS = 200_000
DEFAULT_SHARED_FRACTION = 0.5
DEFAULT_SEED = 20261123

LOYALTY_FILE = "bigmart_loyalty.parquet"
SURVEY_FILE = "acme_survey.parquet"
LOYALTY_CSV_FILE = "bigmart_loyalty.csv"

REGIONS = ("north", "south", "east", "west")
CHANNELS = ("store", "online", "app")
SEGMENTS = ("value", "mainstream", "premium", "luxury")
PRODUCT_LINES = ("apparel", "footwear", "accessories", "outdoor")

_REGION_SHARES = (0.34, 0.27, 0.22, 0.17)
_STORES_PER_REGION = (12, 11, 9, 8)
STORE_REGIONS: tuple[tuple[str, str], ...] = tuple(
    (f"S{number:03d}", region)
    for number, region in enumerate(
        (r for r, count in zip(REGIONS, _STORES_PER_REGION, strict=True) for _ in range(count)),
        start=1,
    )
)
"""Every store as ``(store_id, region)``; stores are numbered region by region."""

_POPUP_SHARE_OF_REGION = 3e-4  # S040: ~10 customers in 200k, well under partition selection
_KEY_DIGITS = 8

# Per-region and per-channel effects on the log of the basket (spend per visit).
_REGION_BASKET = np.array([0.20, 0.00, -0.05, 0.05])
_CHANNEL_BASKET = np.array([0.00, 0.45, 0.10])
_CHANNEL_VISITS = np.array([0.00, -0.50, 0.10])
# Standard-normal quantiles at 0.30, 0.70 and 0.90: segment shares 30/40/20/10%.
_SEGMENT_CUTS = np.array([-0.5244, 0.5244, 1.2816])
# Cut points on the satisfaction score: shares of roughly 5/11/24/35/25% for 1..5.
_SATISFACTION_CUTS = np.array([-1.60, -1.00, -0.30, 0.62])

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class DemoTables:
    """The two demo tables, one row per customer each.

    Attributes:
        loyalty: BigMart's ``bigmart.loyalty`` table, keyed by ``customer_key``.
        survey: ACME's ``acme.survey`` table, keyed by ``customer_id``.
    """

    loyalty: pa.Table
    survey: pa.Table


@dataclass(frozen=True)
class _Universe:
    """Latent traits of every customer of the universe, indexed by universe id."""

    key_numbers: Ints
    key_digits: int
    affinity: Floats
    sentiment: Floats
    engagement: Floats
    home_region: Ints


def generate_demo_tables(
    customers: int = DEFAULT_CUSTOMERS,
    shared_fraction: float = DEFAULT_SHARED_FRACTION,
    seed: int = DEFAULT_SEED,
) -> DemoTables:
    """Generate the BigMart loyalty and ACME survey tables.

    ACME takes universe ids ``[0, n)`` and BigMart ``[n - shared, 2n - shared)`` with
    ``shared = round(shared_fraction * n)``, so exactly ``shared`` customers are in both tables.
    Rows come in a shuffled order. The same arguments always give the same tables.

    Args:
        customers: Rows in each table (``n``), one per customer.
        shared_fraction: Fraction of each table's customers that are also in the other one.
        seed: Seed of the numpy generator that draws everything.

    Returns:
        The two tables, with the column names and Arrow types the demo policy expects.

    Raises:
        ValueError: If ``customers`` is negative or ``shared_fraction`` is outside ``[0, 1]``.

    Example:
        >>> tables = generate_demo_tables(customers=2_000, shared_fraction=0.25)
        >>> keys = set(tables.loyalty["customer_key"].to_pylist())
        >>> len(keys & set(tables.survey["customer_id"].to_pylist()))
        500
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if not 0.0 <= shared_fraction <= 1.0:
        raise ValueError("shared_fraction must be within [0, 1]")
    shared = round(shared_fraction * customers)
    rng = np.random.default_rng(seed)
    universe = _draw_universe(rng, 2 * customers - shared)
    survey_ids = rng.permutation(customers).astype(np.int64)
    loyalty_ids = rng.permutation(customers).astype(np.int64) + (customers - shared)
    return DemoTables(
        loyalty=_loyalty_table(rng, universe, loyalty_ids),
        survey=_survey_table(rng, universe, survey_ids),
    )


def write_demo_files(
    directory: Path,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Path]:
    """Write the demo tables as files a contributor can upload.

    Writes ``bigmart_loyalty.parquet``, ``acme_survey.parquet`` and ``bigmart_loyalty.csv``
    (the loyalty table again, for trying CSV uploads), creating ``directory`` if needed and
    replacing files of the same names.

    Args:
        directory: Where to write the files.
        customers: Rows in each table.
        seed: Seed of the generator (see :func:`generate_demo_tables`).

    Returns:
        The written paths under the keys ``"loyalty"``, ``"survey"`` and ``"loyalty_csv"``.

    Example:
        >>> paths = write_demo_files(Path("var/demo"), customers=10_000)
        >>> sorted(paths)
        ['loyalty', 'loyalty_csv', 'survey']
    """
    tables = generate_demo_tables(customers=customers, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "loyalty": directory / LOYALTY_FILE,
        "survey": directory / SURVEY_FILE,
        "loyalty_csv": directory / LOYALTY_CSV_FILE,
    }
    pq.write_table(tables.loyalty, paths["loyalty"])
    pq.write_table(tables.survey, paths["survey"])
    pa_csv.write_csv(
        tables.loyalty,
        paths["loyalty_csv"],
        write_options=pa_csv.WriteOptions(quoting_style="needed"),
    )
    return paths


def _draw_universe(rng: np.random.Generator, size: int) -> _Universe:
    """Draw key numbers and latent traits for universe ids ``[0, size)``."""
    # Spread the ids over the key space in a random order, so keys reveal neither membership
    # nor position; distinct slots keep the keys distinct.
    digits = max(_KEY_DIGITS, len(str(max(size - 1, 0))))
    stride = max(1, 10**digits // max(size, 1))
    slots = rng.permutation(size).astype(np.int64)
    key_numbers = slots * stride + rng.integers(0, stride, size, dtype=np.int64)
    return _Universe(
        key_numbers=key_numbers,
        key_digits=digits,
        affinity=rng.standard_normal(size),
        sentiment=rng.standard_normal(size),
        engagement=rng.standard_normal(size),
        home_region=rng.choice(len(REGIONS), size=size, p=_REGION_SHARES).astype(np.int64),
    )


def _loyalty_table(rng: np.random.Generator, universe: _Universe, ids: Ints) -> pa.Table:
    """BigMart's loyalty rows for the universe ids ``ids``, in that order."""
    n = len(ids)
    affinity = universe.affinity[ids]
    engagement = universe.engagement[ids]
    region = universe.home_region[ids]
    store = _draw_store(rng, region)

    channel_logits = np.zeros((n, len(CHANNELS)))
    channel_logits[:, 1] = -0.7 + 0.3 * affinity
    channel_logits[:, 2] = -1.0 + 0.5 * engagement
    channel = _categorical(rng, channel_logits)

    inactive = rng.random(n) < 1.0 / (1.0 + np.exp(2.6 + 0.5 * engagement))
    log_rate = np.log(8.0) + 0.35 * engagement + _CHANNEL_VISITS[channel]
    rate = np.exp(log_rate + 0.65 * rng.standard_normal(n))
    visits = np.where(inactive, 0, rng.poisson(rate)).astype(np.int64)

    log_basket = np.log(22.0) + 0.35 * affinity + _REGION_BASKET[region]
    basket = np.exp(log_basket + _CHANNEL_BASKET[channel] + 0.35 * rng.standard_normal(n))
    spend = np.round(visits * basket, 2)

    activity = (np.log1p(visits) - 2.0) / 0.8
    nps_latent = (
        0.6 * universe.sentiment[ids]
        + 0.3 * activity
        + 0.1 * affinity
        + 0.6 * (channel == 2)
        + 0.6 * rng.standard_normal(n)
    )
    nps = np.clip(np.rint(7.0 + 1.6 * nps_latent), 0, 10).astype(np.int64)

    keys = _padded(universe.key_numbers[ids], universe.key_digits)
    return pa.table(
        {
            "customer_key": pc.binary_join_element_wise("C", keys, ""),
            "region": _labels(REGIONS, region),
            "store_id": _labels(tuple(store_id for store_id, _ in STORE_REGIONS), store),
            "channel": _labels(CHANNELS, channel),
            "spend_90d": pa.array(spend, type=pa.float64()),
            "visits_90d": pa.array(visits, type=pa.int64()),
            "nps_score": pa.array(nps, type=pa.int64()),
            "email": pc.binary_join_element_wise("c", keys, "@example.invalid", ""),
        }
    )


def _survey_table(rng: np.random.Generator, universe: _Universe, ids: Ints) -> pa.Table:
    """ACME's survey rows for the universe ids ``ids``, in that order."""
    n = len(ids)
    affinity = universe.affinity[ids]
    segment_score = 0.75 * affinity + np.sqrt(1.0 - 0.75**2) * rng.standard_normal(n)
    segment = np.searchsorted(_SEGMENT_CUTS, segment_score).astype(np.int64)

    line_logits = np.zeros((n, len(PRODUCT_LINES)))
    line_logits[:, 1] = -0.3
    line_logits[:, 2] = -0.6 + 0.5 * (segment >= 2)
    line_logits[:, 3] = -0.8 + 1.0 * (universe.home_region[ids] == 0)
    product_line = _categorical(rng, line_logits)

    satisfaction_score = (
        0.3 * (segment - 1.1) + 0.7 * universe.sentiment[ids] + 0.6 * rng.standard_normal(n)
    )
    satisfaction = np.searchsorted(_SATISFACTION_CUTS, satisfaction_score).astype(np.int64) + 1

    tenure = rng.gamma(1.6, 28.0, n) * np.exp(0.15 * universe.engagement[ids] + 0.1 * affinity)
    tenure_months = np.clip(np.floor(tenure), 0, 240).astype(np.int64)

    keys = _padded(universe.key_numbers[ids], universe.key_digits)
    return pa.table(
        {
            "customer_id": pc.binary_join_element_wise("C", keys, ""),
            "segment": _labels(SEGMENTS, segment),
            "product_line": _labels(PRODUCT_LINES, product_line),
            "satisfaction": pa.array(satisfaction, type=pa.int64()),
            "tenure_months": pa.array(tenure_months, type=pa.int64()),
            "phone": pc.binary_join_element_wise("+00-000-", keys, ""),
        }
    )


def _draw_store(rng: np.random.Generator, region: Ints) -> Ints:
    """Pick a store in each row's region, with unequal store sizes and one tiny pop-up."""
    weights = rng.gamma(4.0, 1.0, len(STORE_REGIONS))
    cdf_parts = []
    start = 0
    for index, count in enumerate(_STORES_PER_REGION):
        part = weights[start : start + count].copy()
        if index == len(REGIONS) - 1:
            part[-1] = _POPUP_SHARE_OF_REGION * part[:-1].sum() / (1 - _POPUP_SHARE_OF_REGION)
        cdf = np.cumsum(part) / part.sum()
        cdf[-1] = 1.0
        cdf_parts.append(index + cdf)
        start += count
    # Region r's stores own the interval (r, r + 1] of the stacked CDF, so one search over it
    # picks a store inside each row's own region.
    stacked = np.concatenate(cdf_parts)
    picks = np.searchsorted(stacked, region + rng.random(len(region)), side="right")
    return np.minimum(picks, len(STORE_REGIONS) - 1).astype(np.int64)


def _categorical(rng: np.random.Generator, logits: Floats) -> Ints:
    """Draw one category per row of ``logits`` (softmax probabilities, Gumbel-max trick)."""
    gumbel: Floats = -np.log(-np.log(rng.random(logits.shape)))
    picks: Ints = np.argmax(logits + gumbel, axis=1).astype(np.int64)
    return picks


def _labels(labels: tuple[str, ...], codes: Ints) -> pa.Array:
    """Decode integer codes to a string array of ``labels``."""
    return pc.take(pa.array(labels, type=pa.string()), pa.array(codes, type=pa.int64()))


def _padded(numbers: Ints, digits: int) -> pa.Array:
    """Key numbers as zero-padded strings of ``digits`` digits."""
    return pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=digits, padding="0")
