"""Storage tiers: one policy table that says how each tier stores a file.

A tier maps to erasure parameters (k data + m parity shards per segment), how
many nodes hold each shard, and a price multiplier the market applies. The
table lives in the node's config (``[tier_policy.<name>]``) so an operator can
change it; the tier a file was stored under is recorded in its manifest, and
the manifest's own k+m is what a reader uses, so changing the table never
breaks reading old files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TIER_NAMES = ("hot", "warm", "cold", "archive")

# zfec's limit is 256 shards; more than 64 per segment only adds lookups.
MAX_SHARDS_PER_SEGMENT = 64
MAX_HOLDERS_PER_SHARD = 12


class TierPolicyError(ValueError):
    """A tier policy that cannot be used; the message names the field."""


@dataclass(frozen=True)
class TierPolicy:
    name: str
    k: int
    m: int
    holders_per_shard: int
    # Percent of the base price; integers keep money arithmetic exact.
    price_percent: int

    def __post_init__(self) -> None:
        where = f"tier_policy.{self.name}"
        if self.name not in TIER_NAMES:
            raise TierPolicyError(f"{where}: unknown tier (known: {', '.join(TIER_NAMES)})")
        if self.k < 1 or self.m < 0 or self.k + self.m > MAX_SHARDS_PER_SEGMENT:
            raise TierPolicyError(
                f"{where}: need k >= 1, m >= 0 and k + m <= {MAX_SHARDS_PER_SEGMENT}"
            )
        if not 1 <= self.holders_per_shard <= MAX_HOLDERS_PER_SHARD:
            raise TierPolicyError(f"{where}: holders must be 1..{MAX_HOLDERS_PER_SHARD}")
        if self.price_percent <= 0:
            raise TierPolicyError(f"{where}: price_percent must be positive")


# Warm is the seed's 4+2 on one holder per shard (1.5x overhead, survives
# any two lost shards per segment). Hot adds a second holder for every shard:
# 3x overhead for reads that find a copy even while nodes come and go. Cold
# keeps 1.5x but survives three losses (6+3); archive trades read fan-out for
# the least overhead (10+4: 1.4x, four losses).
DEFAULT_TIER_POLICIES: tuple[TierPolicy, ...] = (
    TierPolicy("hot", k=4, m=2, holders_per_shard=2, price_percent=150),
    TierPolicy("warm", k=4, m=2, holders_per_shard=1, price_percent=100),
    TierPolicy("cold", k=6, m=3, holders_per_shard=1, price_percent=60),
    TierPolicy("archive", k=10, m=4, holders_per_shard=1, price_percent=30),
)

_FIELDS = {"k": "k", "m": "m", "holders": "holders_per_shard", "price_percent": "price_percent"}


def policies_from_toml(raw: Any, defaults: tuple[TierPolicy, ...]) -> tuple[TierPolicy, ...]:
    """Overlay ``[tier_policy.<name>]`` tables from a config file on the defaults."""
    if not isinstance(raw, Mapping):
        raise TierPolicyError("tier_policy must be a table of tables")
    by_name = {p.name: p for p in defaults}
    for name, table in raw.items():
        if name not in TIER_NAMES:
            raise TierPolicyError(f"tier_policy.{name}: unknown tier")
        if not isinstance(table, Mapping):
            raise TierPolicyError(f"tier_policy.{name} must be a table")
        unknown = sorted(set(table) - set(_FIELDS))
        if unknown:
            raise TierPolicyError(f"tier_policy.{name}: unknown setting {', '.join(unknown)}")
        values: dict[str, int] = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise TierPolicyError(f"tier_policy.{name}.{key} must be an integer")
            values[_FIELDS[key]] = value
        base = by_name[name]
        by_name[name] = TierPolicy(
            name=name,
            k=values.get("k", base.k),
            m=values.get("m", base.m),
            holders_per_shard=values.get("holders_per_shard", base.holders_per_shard),
            price_percent=values.get("price_percent", base.price_percent),
        )
    return tuple(by_name[n] for n in TIER_NAMES if n in by_name)


def policies_to_toml(policies: tuple[TierPolicy, ...]) -> str:
    out = []
    for p in policies:
        out.append(
            f"\n[tier_policy.{p.name}]\nk = {p.k}\nm = {p.m}\n"
            f"holders = {p.holders_per_shard}\nprice_percent = {p.price_percent}\n"
        )
    return "".join(out)
