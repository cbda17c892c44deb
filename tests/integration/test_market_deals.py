"""Storage deals on real nodes: a put makes contracts, audits catch a damaged holder.

Six nodes on loopback with contracts required, short deal periods (2 s, four
periods) and two audits per period. One node puts a file as deals; then one
holder loses 10% of every shard it holds for the file. Audits catch it: its
periods fail, it pays penalties from its collateral, and its reputation
falls, each change with its cause; the honest holders pass and are paid for
every period. Contract replicas (the provider's book, and the records the
DHT holds) agree with the client's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import blake3
import pytest
import trio

from node.files.deal_put import put_file_with_deals
from node.files.put import PutOptions, PutResult
from node.market.book import BookRole
from node.market.contract import (
    ShardTerm,
    State,
    decode_contract_record,
    replay,
    state_digest,
)
from node.market.deals import collateral_account
from node.market.pricing import PricingPolicy
from node.market_node import DealFailed
from node.records.contracts import contract_key
from protocols.kad.messages import PeerInfo
from protocols.market.messages import Quote
from tests.integration.netutil import RunningNode, start_network, wait_for

NODES = 6
PERIOD = 2.0
PERIODS = 4
MARKET = {
    "require_contracts": True,
    "faucet_tokens": 1_000_000,
    "deal_period": PERIOD,
    "deal_duration": PERIOD * PERIODS,
    "audits_per_period": 2,
    # Deals of seconds at the seed's price cost a few micro-tokens, too
    # little for collateral and penalties to show: price it a million times up.
    "pricing": PricingPolicy(base_price_micro_per_gb_day=10**12),
}
SEGMENT = 256 << 10
TOKEN = 1_000_000


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def put_as_deals(node: RunningNode, data: bytes) -> PutResult:
    service = node.service
    options = PutOptions(
        policy=service.config.policy("warm"),
        segment_size=SEGMENT,
        segment_size_fixed=True,
        name="f.bin",
    )
    return await put_file_with_deals(
        service.files,
        service.market,
        chunks_of(data),
        options,
        service.config.data_dir / "spool",
        local_peer_id=service.peer_id.to_bytes(),
        deal_errors=(DealFailed,),
    )


def damage(node: RunningNode, address: bytes, fraction: float = 0.1) -> None:
    """Zero `fraction` of a held shard's bytes on disk, as a failing or cheating disk would."""
    path = node.service.shards._shard_path(address)
    data = bytearray(path.read_bytes())
    cut = max(1, int(len(data) * fraction))
    data[-cut:] = bytes(cut)
    path.write_bytes(bytes(data))


@pytest.mark.slow
async def test_deals_audits_payments_penalties_and_reputation(tmp_path: Path) -> None:
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES, **MARKET)
            for node in nodes:
                await wait_for(lambda n=node: len(n.service.dht.table) >= NODES - 2)
            client = nodes[0]
            market = client.service.market
            before = market.ledger.balance(client.peer_id)

            data = os.urandom(3 * SEGMENT)
            result = await put_as_deals(client, data)
            assert result.under_replicated_segments == 0
            deals = market.book.list(role=BookRole.CLIENT)
            assert len(deals) == result.contracts >= 4
            escrow = sum(d.price_micro_tokens for d in deals)
            assert market.ledger.balance(client.peer_id) == before - escrow
            assert market.ledger.escrowed_total(client.peer_id) == escrow

            by_peer = {n.peer_id: n for n in nodes}
            for deal in deals:
                assert deal.state is State.MONITORING
                provider = by_peer[deal.provider]
                theirs = provider.service.market.book.state(deal.contract_id)
                assert theirs is not None and theirs.state is State.MONITORING
                # Every shard the contract names is on that provider, and only
                # because the contract covers it.
                for shard in theirs.terms.shards:
                    assert provider.service.shards.has(shard.address)

            # One holder loses 10% of every shard it holds for this file.
            victim_deal = deals[0]
            victim = by_peer[victim_deal.provider]
            victim_terms = market.book.state(victim_deal.contract_id)
            assert victim_terms is not None
            for shard in victim_terms.terms.shards:
                damage(victim, shard.address)

            # Wait for every deal to be judged to the end and settled, on both
            # sides, and the unearned escrow refunded (settling sends the last
            # transition to the provider and then refunds, after our book says
            # SETTLED).
            def settled() -> bool:
                books = [market.book] + [by_peer[d.provider].service.market.book for d in deals]
                return market.ledger.escrowed_total(client.peer_id) == 0 and all(
                    (s := book.state(d.contract_id)) is None or s.state is State.SETTLED
                    for book in books
                    for d in deals
                )

            await wait_for(settled, interval=0.2)

            for deal in deals:
                state = market.book.state(deal.contract_id)
                assert state is not None
                provider = by_peer[deal.provider]
                score = market.reputation.score(deal.provider)
                history = market.reputation.history(deal.provider)
                theirs = provider.service.market.book.state(deal.contract_id)
                assert theirs is not None
                # Replicas agree: the provider's book and the client's.
                assert (theirs.state, theirs.sequence) == (state.state, state.sequence), (
                    [t.event.name for t in theirs.history],
                    [t.event.name for t in state.history],
                )
                assert state_digest(theirs) == state_digest(state)
                if deal.provider == victim.peer_id:
                    assert state.failed, "the damaged holder passed every audit"
                    assert state.penalties_micro_tokens > 0
                    assert score < 1000
                    assert any(c.points < 0 and "violation" in c.cause for c in history)
                else:
                    assert state.passed == frozenset(range(PERIODS)) and not state.failed
                    assert state.released == state.passed
                    assert score > 1000
                    # The provider recorded every period's payment in its book.
                    inbound = [
                        r
                        for r in provider.service.market.ledger.receipts(provider.peer_id, 100)
                        if r.kind.value == "inbound" and r.contract_id == deal.contract_id
                    ]
                    assert len(inbound) == PERIODS
                    assert sum(r.amount for r in inbound) == deal.price_micro_tokens

            # The client paid the honest holders and got the failed periods back.
            paid = sum(
                (market.book.state(d.contract_id) or victim_terms).released_micro_tokens
                for d in deals
            )
            assert market.ledger.balance(client.peer_id) == before - paid
            assert market.ledger.escrowed_total(client.peer_id) == 0

            # Records in the DHT replay to the same state.
            for deal in deals[:2]:
                report = await nodes[3].service.dht.get(contract_key(deal.contract_id))
                assert report.value is not None
                replayed = replay(decode_contract_record(report.value), now_ms=2**62)
                ours = market.book.state(deal.contract_id)
                assert ours is not None and state_digest(replayed) == state_digest(ours)

            # A client that names a wrong Merkle root cannot frame a provider:
            # the provider checks the stored shard and ends the contract.
            honest = next(by_peer[d.provider] for d in deals if d.provider != victim.peer_id)
            provider_info = PeerInfo(honest.peer_id, honest.service.listen_addrs())
            shard = os.urandom(50_000)
            address = blake3.blake3(shard).digest()
            quote = await market.client.quote(
                honest.peer_id, provider_info.addrs, market.quote_request(len(shard), "warm")
            )
            assert isinstance(quote, Quote)
            wrong = ShardTerm(address=address, merkle_root=os.urandom(32), size=len(shard))
            framed = await market.make_deal(provider_info, quote, [wrong])
            balance = market.ledger.balance(client.peer_id)
            await client.service.files.store_shard(
                provider_info, address, shard, contract_id=framed
            )

            def ended() -> bool:
                ours = market.book.state(framed)
                return ours is not None and ours.state is State.TERMINATED

            await wait_for(ended, interval=0.1)
            ours = market.book.state(framed)
            assert ours is not None and "root" in ours.history[-1].reason
            await wait_for(lambda: market.ledger.escrowed_total(client.peer_id) == 0)
            assert market.ledger.balance(client.peer_id) == balance + ours.terms.escrow_micro_tokens
            assert honest.service.market.ledger.balance(collateral_account(framed)) == 0

            for node in nodes:
                node.service.market.ledger.check_invariant()
            nursery.cancel_scope.cancel()
