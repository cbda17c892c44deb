"""Deal rules both sides apply: how a quote becomes contract terms, and when a provider accepts.

Theory of operation
-------------------
A client asks providers for quotes (node/market/desk.py), then proposes to
each chosen provider one contract covering exactly the shards it will hold.
The quote was for an estimated size; the contract's price is the quote
*prorated* to the contract's actual size, rounded up to the micro-token:
``ceil(quote_total * size / quote_size)``. The provider checks the same
arithmetic with integers (``price * quote_size >= quote_total * size``), so
neither side can shave a fraction.

Money, per contract (each node keeps its own book, node/market/ledger.py):

- the client locks the whole price in escrow in its book, released one
  audit period at a time to the provider's account there (a payment the
  client signs, which the provider records as *inbound* in its book);
- the provider locks collateral (``collateral_bp`` of the price) in a
  per-contract account of its own book; a failed period costs it the
  penalty clause (``penalty_bp`` of one period's payment), paid from that
  collateral to the client's account in the provider's book; settlement
  returns what is left;
- a period that failed is never paid: its share stays in escrow and goes
  back to the client at settlement.

Settlement between books (an external chain) is an extension point: the
signed receipts and transitions are what it would settle.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.market.contract import ContractTerms, ShardTerm, seal_terms
from node.market.desk import GivenQuote
from node.market.quality import Sla

__all__ = [
    "DealPolicy",
    "accept_proposal",
    "build_terms",
    "collateral_account",
    "prorated_price",
]

_BP = 10_000
DEFAULT_SLA = Sla()


@dataclass(frozen=True)
class DealPolicy:
    """The client's deal parameters (config; see [deal] in config.toml)."""

    duration_ms: int = 30 * 86_400_000
    period_ms: int = 86_400_000
    audits_per_period: int = 4
    leaves_per_audit: int = 16
    leaf_size: int = 4096
    collateral_bp: int = 1_000  # of the price, locked by the provider
    penalty_bp: int = 5_000  # of one period's payment, per failed period
    sla: Sla = DEFAULT_SLA

    def __post_init__(self) -> None:
        if self.period_ms <= 0 or self.duration_ms <= 0:
            raise ValueError("deal duration and period must be positive")
        if self.duration_ms % self.period_ms:
            raise ValueError("deal duration must be a whole number of periods")
        if not 0 <= self.collateral_bp <= _BP or not 0 <= self.penalty_bp <= _BP:
            raise ValueError("collateral_bp and penalty_bp are basis points, 0..10000")
        if self.audits_per_period < 1 or self.leaves_per_audit < 1:
            raise ValueError("audits_per_period and leaves_per_audit must be at least 1")

    @property
    def periods(self) -> int:
        return self.duration_ms // self.period_ms


def prorated_price(quote_total: int, quote_size: int, size: int) -> int:
    """The quote's price scaled to `size` bytes, rounded up to the micro-token."""
    if quote_size <= 0 or size <= 0 or quote_total < 0:
        raise ValueError("sizes must be positive and the price non-negative")
    return -(-quote_total * size // quote_size)


def collateral_account(contract_id: bytes) -> bytes:
    """The provider-book account that holds one contract's collateral."""
    return b"collateral:" + contract_id


def build_terms(
    *,
    policy: DealPolicy,
    client: bytes,
    client_public_key: bytes,
    provider: bytes,
    provider_public_key: bytes,
    quote_id: bytes,
    quote_total: int,
    quote_size: int,
    quote_valid_until_ms: int,
    shards: Sequence[ShardTerm],
    start_ms: int,
) -> ContractTerms:
    """Sealed terms for one provider's shards, priced from its quote."""
    size = sum(s.size for s in shards)
    periods = policy.periods
    # A whole number of micro-tokens per period: the contract's and the
    # ledger's per-period split then agree exactly.
    per_period = max(1, -(-prorated_price(quote_total, quote_size, size) // periods))
    price = per_period * periods
    period_payment = per_period
    return seal_terms(
        ContractTerms(
            client=client,
            provider=provider,
            client_public_key=client_public_key,
            provider_public_key=provider_public_key,
            shards=tuple(sorted(shards, key=lambda s: s.address)),
            total_size=size,
            start_ms=start_ms,
            duration_ms=policy.duration_ms,
            period_ms=policy.period_ms,
            price_micro_tokens=price,
            escrow_micro_tokens=price,
            collateral_micro_tokens=price * policy.collateral_bp // _BP,
            penalty_micro_tokens=period_payment * policy.penalty_bp // _BP,
            quote_id=quote_id,
            quote_valid_until_ms=quote_valid_until_ms,
            sla=policy.sla,
            audits_per_period=policy.audits_per_period,
            leaves_per_audit=policy.leaves_per_audit,
            leaf_size=policy.leaf_size,
        )
    )


def accept_proposal(
    terms: ContractTerms,
    *,
    peer: bytes,
    me: bytes,
    my_public_key: bytes,
    given: GivenQuote | None,
    free_bytes: int,
    balance: int,
    now_ms: int,
) -> str | None:
    """Why the provider refuses `terms` from `peer`, or None to accept.

    `terms` already passed the contract module's checks (signature, shape).
    """
    if terms.provider != me or terms.provider_public_key != my_public_key:
        return "the contract names another provider"
    if terms.client != peer:
        return "the contract names another client than the sender"
    if given is None or given.client != peer:
        return "no quote of ours matches this contract (unknown or forgotten quote id)"
    if now_ms > given.valid_until_ms or terms.quote_valid_until_ms != given.valid_until_ms:
        return "the quote has expired"
    if terms.duration_ms > given.duration_seconds * 1000:
        return "the contract runs longer than quoted"
    if terms.price_micro_tokens * given.size_bytes < given.total_micro_tokens * terms.total_size:
        return "the price is below our quote for this size"
    if terms.escrow_micro_tokens < terms.price_micro_tokens:
        return "the escrow does not cover the price"
    if terms.total_size > free_bytes:
        return f"not enough free capacity ({free_bytes} bytes free)"
    if terms.collateral_micro_tokens > balance:
        return "our balance cannot cover the collateral"
    if terms.start_ms > now_ms + 60_000 or terms.start_ms < now_ms - 600_000:
        return "the contract's start is not now"
    return None
