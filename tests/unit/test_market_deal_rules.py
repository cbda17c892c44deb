"""The deal rules both sides apply (node/market/deals.py): pricing a contract, accepting it."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from node.market.contract import ShardTerm
from node.market.deals import DealPolicy, accept_proposal, build_terms, prorated_price
from node.market.desk import GivenQuote
from node.market_node import raw_public_key

NOW = 1_700_000_000_000
CLIENT = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
PROVIDER = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
POLICY = DealPolicy(duration_ms=4_000, period_ms=1_000)
QUOTE = GivenQuote(
    quote_id=b"q" * 16,
    client=b"client",
    size_bytes=1_000_000,
    duration_seconds=4,
    tier="warm",
    sla_requested=True,
    total_micro_tokens=1_000_003,
    valid_until_ms=NOW + 60_000,
)


def shards(*sizes: int) -> list[ShardTerm]:
    return [
        ShardTerm(address=bytes([i]) * 32, merkle_root=bytes([i + 100]) * 32, size=size)
        for i, size in enumerate(sizes)
    ]


def terms(*sizes: int, quote: GivenQuote = QUOTE, **changes: object):  # type: ignore[no-untyped-def]
    built = build_terms(
        policy=POLICY,
        client=b"client",
        client_public_key=raw_public_key(CLIENT),
        provider=b"provider",
        provider_public_key=raw_public_key(PROVIDER),
        quote_id=quote.quote_id,
        quote_total=quote.total_micro_tokens,
        quote_size=quote.size_bytes,
        quote_valid_until_ms=quote.valid_until_ms,
        shards=shards(*sizes),
        start_ms=NOW,
    )
    return dataclasses.replace(built, **changes) if changes else built


def verdict(t, *, peer: bytes = b"client", given: GivenQuote | None = QUOTE, **kw: int):  # type: ignore[no-untyped-def]
    return accept_proposal(
        t,
        peer=peer,
        me=b"provider",
        my_public_key=raw_public_key(PROVIDER),
        given=given,
        free_bytes=kw.get("free", 10**12),
        balance=kw.get("balance", 10**12),
        now_ms=kw.get("now", NOW),
    )


def test_price_is_the_quote_prorated_up_to_whole_periods() -> None:
    t = terms(250_000, 250_000)
    # 1,000,003 x 500,000 / 1,000,000 = 500,001.5 -> 500,002, then up to a
    # multiple of 4 periods: 500,004.
    assert t.price_micro_tokens == 500_004 == t.escrow_micro_tokens
    assert t.collateral_micro_tokens == 50_000  # 10%
    assert t.penalty_micro_tokens == 62_500  # half of one period's 125,001
    assert t.total_size == 500_000
    assert verdict(t) is None


@given(st.integers(1, 10**12), st.integers(1, 10**12), st.integers(1, 10**12))
def test_prorated_price_never_undercuts(total: int, quoted: int, size: int) -> None:
    price = prorated_price(total, quoted, size)
    assert price * quoted >= total * size > (price - 1) * quoted


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"peer": b"mallory"}, "another client"),
        ({"given": None}, "no quote of ours"),
        ({"now": NOW + 120_000}, "expired"),
        ({"free": 10}, "capacity"),
        ({"balance": 0}, "collateral"),
    ],
)
def test_proposals_are_refused_with_a_reason(case: dict[str, object], expected: str) -> None:
    reason = verdict(terms(250_000), **case)  # type: ignore[arg-type]
    assert reason is not None and expected in reason


def test_a_price_below_the_quote_is_refused() -> None:
    t = terms(250_000)
    assert verdict(dataclasses.replace(t, price_micro_tokens=t.price_micro_tokens - 4)) == (
        "the price is below our quote for this size"
    )


def test_a_contract_for_another_provider_or_longer_than_quoted_is_refused() -> None:
    t = terms(250_000)
    assert "another provider" in (verdict(dataclasses.replace(t, provider=b"other")) or "")
    longer = dataclasses.replace(t, duration_ms=8_000)
    assert "longer than quoted" in (verdict(longer) or "")


def test_a_quote_given_to_someone_else_does_not_cover_this_client() -> None:
    theirs = dataclasses.replace(QUOTE, client=b"someone-else")
    assert "no quote of ours" in (verdict(terms(250_000), given=theirs) or "")


def test_policy_needs_whole_periods() -> None:
    with pytest.raises(ValueError, match="whole number"):
        DealPolicy(duration_ms=4_500, period_ms=1_000)
