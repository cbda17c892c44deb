"""The provider's desk: signed quotes from measured state, remembered for contracts."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.market.desk import REMEMBERED_QUOTES, MarketDesk, ProviderState
from node.market.pricing import PricingPolicy
from node.market_node import raw_public_key
from protocols.market.messages import Quote, QuoteRequest, Refused, verify_quote_signature

NOW = 1_700_000_000_000
GB = 10**9
DAY = 86_400
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)


def desk(used: int = 50 * GB, capacity: int = 100 * GB) -> MarketDesk:
    return MarketDesk(
        party_id=b"provider",
        key=KEY,
        public_key=raw_public_key(KEY),
        pricing=PricingPolicy(),
        tier_percent={"warm": 100, "cold": 60},
        quote_validity_ms=600_000,
        state=lambda: ProviderState(capacity_bytes=capacity, used_bytes=used, quality_bp=None),
    )


def ask(size: int = GB, tier: str = "warm", days: int = 1) -> QuoteRequest:
    return QuoteRequest(
        size_bytes=size, duration_seconds=days * DAY, tier=tier, sla_requested=False,
        client=b"client",
    )  # fmt: skip


def test_quote_is_signed_priced_and_remembered() -> None:
    d = desk()
    quote = d.quote(ask(), NOW)
    assert isinstance(quote, Quote)
    assert verify_quote_signature(quote)
    # 1 GB, 1 day, warm, 50% utilisation: 100 + 5% + 2% = 107 tokens.
    assert quote.total_micro_tokens == 107_000_000
    assert quote.valid_until_ms == NOW + 600_000
    assert quote.free_capacity_bytes == 50 * GB
    given = d.given(quote.quote_id)
    assert given is not None and given.total_micro_tokens == quote.total_micro_tokens
    assert given.client == b"client"


def test_cold_tier_and_empty_provider_are_cheaper() -> None:
    quote = desk(used=0).quote(ask(tier="cold"), NOW)
    assert isinstance(quote, Quote)
    # 100 x 60% x 0.8 = 48, + 7% fees = 51.36 tokens.
    assert quote.total_micro_tokens == 51_360_000


def test_unknown_tier_and_full_provider_are_refused() -> None:
    assert isinstance(desk().quote(ask(tier="hot"), NOW), Refused)
    refused = desk(used=100 * GB).quote(ask(), NOW)
    assert isinstance(refused, Refused) and "capacity" in refused.reason


def test_old_quotes_are_forgotten_first() -> None:
    d = desk()
    first = d.quote(ask(), NOW)
    assert isinstance(first, Quote)
    for _ in range(REMEMBERED_QUOTES):
        d.quote(ask(), NOW)
    assert d.given(first.quote_id) is None
