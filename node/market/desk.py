"""The provider's desk: prices storage and remembers the quotes it gave.

A quote is an offer the provider signs: price lines from the pricing engine
(node/market/pricing.py), for a size, duration and tier, valid until a time,
with the capacity the provider has free. The desk remembers each quote it
gave (bounded, oldest forgotten first) so that a contract naming it can be
checked against what was offered: a client cannot deploy a contract at a
price or size the provider never quoted.

Pure decisions on typed messages; the node wires it to the network and
supplies the provider's measured state (capacity, utilisation, quality).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.market.pricing import PricingError, PricingPolicy, QuoteInput, quote_price
from protocols.market.messages import PriceLine, Quote, QuoteRequest, Refused, sign_quote

__all__ = ["GivenQuote", "MarketDesk", "ProviderState"]

QUOTE_ID_SIZE = 16
REMEMBERED_QUOTES = 4096


@dataclass(frozen=True)
class ProviderState:
    """What the provider measures about itself when it prices."""

    capacity_bytes: int
    used_bytes: int  # stored and reserved
    quality_bp: int | None  # measured service quality, None until measured

    @property
    def free_bytes(self) -> int:
        return max(0, self.capacity_bytes - self.used_bytes)

    @property
    def utilisation_bp(self) -> int:
        if self.capacity_bytes <= 0:
            return 10_000
        return min(10_000, self.used_bytes * 10_000 // self.capacity_bytes)


@dataclass(frozen=True)
class GivenQuote:
    """A quote as the provider remembers it, to check contracts against."""

    quote_id: bytes
    client: bytes
    size_bytes: int
    duration_seconds: int
    tier: str
    sla_requested: bool
    total_micro_tokens: int
    valid_until_ms: int


class MarketDesk:
    def __init__(
        self,
        *,
        party_id: bytes,
        key: Ed25519PrivateKey,
        public_key: bytes,
        pricing: PricingPolicy,
        tier_percent: Mapping[str, int],
        quote_validity_ms: int,
        state: Callable[[], ProviderState],
    ) -> None:
        self.party_id = party_id
        self._key = key
        self.public_key = public_key
        self.pricing = pricing
        self.tier_percent = dict(tier_percent)
        self.quote_validity_ms = quote_validity_ms
        self._state = state
        self._given: OrderedDict[bytes, GivenQuote] = OrderedDict()

    def quote(self, request: QuoteRequest, now_ms: int) -> Quote | Refused:
        """A signed offer for `request`, or the reason there is none."""
        percent = self.tier_percent.get(request.tier)
        if percent is None:
            return Refused(f"tier {request.tier!r} is not served here")
        state = self._state()
        if request.size_bytes > state.free_bytes:
            return Refused(f"not enough free capacity ({state.free_bytes} bytes free)")
        try:
            breakdown = quote_price(
                self.pricing,
                QuoteInput(
                    size_bytes=request.size_bytes,
                    duration_seconds=request.duration_seconds,
                    tier_percent=percent,
                    sla_requested=request.sla_requested,
                    utilisation_bp=state.utilisation_bp,
                    quality_bp=state.quality_bp,
                ),
            )
        except PricingError as error:
            return Refused(f"cannot price this request: {error}")
        quote_id = os.urandom(QUOTE_ID_SIZE)
        valid_until = now_ms + self.quote_validity_ms
        quote = Quote(
            quote_id=quote_id,
            provider=self.party_id,
            provider_public_key=self.public_key,
            size_bytes=request.size_bytes,
            duration_seconds=request.duration_seconds,
            tier=request.tier,
            sla_requested=request.sla_requested,
            lines=tuple(
                PriceLine(
                    key=line.key,
                    label=line.label,
                    micro_tokens=line.micro_tokens,
                    detail=line.detail,
                )
                for line in breakdown.lines
            ),
            total_micro_tokens=breakdown.total_micro_tokens,
            valid_until_ms=valid_until,
            free_capacity_bytes=state.free_bytes,
        )
        self._remember(
            GivenQuote(
                quote_id=quote_id,
                client=request.client,
                size_bytes=request.size_bytes,
                duration_seconds=request.duration_seconds,
                tier=request.tier,
                sla_requested=request.sla_requested,
                total_micro_tokens=breakdown.total_micro_tokens,
                valid_until_ms=valid_until,
            )
        )
        return sign_quote(quote, self._key)

    def given(self, quote_id: bytes) -> GivenQuote | None:
        """The quote this desk gave under `quote_id`, if it still remembers it."""
        return self._given.get(quote_id)

    def _remember(self, given: GivenQuote) -> None:
        self._given[given.quote_id] = given
        while len(self._given) > REMEMBERED_QUOTES:
            self._given.popitem(last=False)
