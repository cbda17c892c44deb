"""/zhtp/market/1.0.0 between two real py-libp2p hosts (TCP, Noise, Yamux) on 127.0.0.1.

The server host is the node's own (``node.host.build_host``) and registers
the real ``serve_market_stream`` for the MARKET id, backed by the unit
tests' StubBackend (a real MarketBackend with fixed answers: this is the
wire layer's test, not the market's); the client host uses the real
``MarketClient`` through the node's StreamOpener.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair

from node.host import StreamOpener, build_host, set_handler, stream_peer
from protocols import ids
from protocols.framing import (
    TRANSPORT_ERRORS,
    Counters,
    StreamGate,
    encode_frame,
    encode_uvarint,
)
from protocols.market.client import MarketClient
from protocols.market.messages import (
    AuditProof,
    ContractDeploy,
    ContractQuery,
    ContractRecord,
    DeployResult,
    ExecuteResult,
    NotFound,
    Quote,
    Refused,
    verify_quote_signature,
)
from protocols.market.session import serve_market_stream
from tests.integration.test_store_hosts import LOOPBACK, transport_addrs
from tests.unit.test_market_session import (
    AUDIT,
    DEPLOY,
    DIGEST,
    EXECUTE,
    LARGE_CONTRACT,
    NONCE,
    QUERY,
    QUOTE_REQUEST,
    SIG,
    StubBackend,
    large_record,
    stub_proof_item,
)

TIMEOUT = 30


@dataclass
class MarketPair:
    backend: StubBackend
    counters: Counters
    client: MarketClient
    open_stream: StreamOpener
    server_id: bytes
    server_addrs: tuple[bytes, ...]
    client_id: bytes


@asynccontextmanager
async def market_pair() -> AsyncIterator[MarketPair]:
    server = build_host(create_new_key_pair())
    client = build_host(create_new_key_pair())
    backend = StubBackend(provider=server.get_id().to_bytes())
    counters = Counters()
    gate = StreamGate(ids.MARKET_LIMITS.max_streams_per_peer)

    async def handle(stream: INetStream) -> None:
        await serve_market_stream(stream, stream_peer(stream), backend, counters, gate)

    async with server.run([LOOPBACK]), client.run([LOOPBACK]):
        set_handler(server, ids.MARKET, handle)
        open_stream = StreamOpener(client)
        yield MarketPair(
            backend,
            counters,
            MarketClient(open_stream, timeout=10.0, clock_ms=lambda: backend.clock_ms),
            open_stream,
            server.get_id().to_bytes(),
            transport_addrs(server),
            client.get_id().to_bytes(),
        )


async def test_quote_deploy_query_execute_round_trips() -> None:
    with trio.fail_after(TIMEOUT):
        async with market_pair() as pair:
            c, peer, addrs = pair.client, pair.server_id, pair.server_addrs
            quote = await c.quote(peer, addrs, QUOTE_REQUEST)
            assert isinstance(quote, Quote)
            assert quote.provider == peer
            assert verify_quote_signature(quote)
            assert (quote.size_bytes, quote.tier, quote.sla_requested) == (1 << 30, "warm", True)
            assert await c.deploy(peer, addrs, DEPLOY) == DeployResult(
                True, b"countersign:canonical terms"
            )
            rejected = await c.deploy(peer, addrs, ContractDeploy(b"bad", SIG))
            assert rejected == DeployResult(False, b"", "quote expired")
            record = await c.query(peer, addrs, QUERY)
            assert isinstance(record, ContractRecord)
            assert (record.state, record.sequence, record.replica) == ("monitoring", 2, peer)
            assert record.transitions == (b"countersign", b"start monitoring")
            assert await c.query(peer, addrs, ContractQuery(bytes(32))) == NotFound()
            assert await c.execute(peer, addrs, EXECUTE) == ExecuteResult(True, "", 3, DIGEST)
    # The server saw the client's authenticated PeerID on every request.
    assert {peer for _, peer, _ in pair.backend.calls} == {pair.client_id}
    assert pair.counters.snapshot() == {
        "quote_quoted": 1,
        "deploy_accepted": 1,
        "deploy_rejected": 1,
        "query_found": 1,
        "query_not_found": 1,
        "execute_accepted": 1,
        "served": 6,
    }


async def test_audit_proof_arrives_intact() -> None:
    # The stub's proof is any bytes of the right shape (protocols/ may not
    # import node/market/audit.py); this layer must carry it unchanged.
    with trio.fail_after(TIMEOUT):
        async with market_pair() as pair:
            proof = await pair.client.audit(pair.server_id, pair.server_addrs, AUDIT)
            wide = dataclasses.replace(AUDIT, leaf_indices=tuple(range(64, 0, -1)))
            wide_proof = await pair.client.audit(pair.server_id, pair.server_addrs, wide)
            not_ours = dataclasses.replace(AUDIT, contract_id=bytes(32))
            refusal = await pair.client.audit(pair.server_id, pair.server_addrs, not_ours)
    assert proof == AuditProof(NONCE, tuple(map(stub_proof_item, AUDIT.leaf_indices)))
    assert isinstance(wide_proof, AuditProof)
    assert [item.index for item in wide_proof.items] == list(range(64, 0, -1))
    assert wide_proof.items == tuple(map(stub_proof_item, range(64, 0, -1)))
    assert refusal == Refused("no such contract here")
    assert [request for _, _, request in pair.backend.calls] == [AUDIT, wide, not_ours]
    assert pair.counters.snapshot() == {"audit_proved": 2, "audit_refused": 1, "served": 3}


async def test_one_mib_record_round_trips() -> None:
    with trio.fail_after(TIMEOUT):
        async with market_pair() as pair:
            record = await pair.client.query(
                pair.server_id, pair.server_addrs, ContractQuery(LARGE_CONTRACT)
            )
    assert record == large_record(pair.server_id)
    assert isinstance(record, ContractRecord)
    assert len(record.terms) + sum(map(len, record.transitions)) > 1_000_000
    assert pair.counters.snapshot() == {"query_found": 1, "served": 1}


async def test_refusal_is_returned_as_a_value() -> None:
    with trio.fail_after(TIMEOUT):
        async with market_pair() as pair:
            refusal = await pair.client.quote(
                pair.server_id,
                pair.server_addrs,
                dataclasses.replace(QUOTE_REQUEST, tier="archive"),
            )
    assert refusal == Refused("no capacity")
    assert pair.counters.snapshot() == {"quote_refused": 1, "served": 1}


async def _read_until_the_end(stream: INetStream) -> bytes:
    """Everything the server sends before its end of the stream goes away."""
    received = b""
    with contextlib.suppress(*TRANSPORT_ERRORS):
        while chunk := await stream.read(65536):
            received += chunk
    return received


async def test_hostile_peer_is_reset_and_the_server_keeps_serving() -> None:
    with trio.fail_after(TIMEOUT):
        async with market_pair() as pair:
            for junk in (
                encode_frame(b"\xff\xfe garbage \x00\x01", ids.MARKET_LIMITS.max_frame),
                b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",  # a varint that never ends
                encode_uvarint(ids.MARKET_LIMITS.max_frame + 1) + b"x" * 100,
            ):
                stream = await pair.open_stream(pair.server_id, pair.server_addrs, ids.MARKET)
                await stream.write(junk)
                assert await _read_until_the_end(stream) == b""  # no answer, only a reset
                await stream.reset()
            # The same connection, a new stream: still served.
            quote = await pair.client.quote(pair.server_id, pair.server_addrs, QUOTE_REQUEST)
            assert isinstance(quote, Quote)
    counts = pair.counters.snapshot()
    assert counts == {
        "garbage": 1,
        "varint_too_long": 1,
        "frame_too_large": 1,
        "quote_quoted": 1,
        "served": 1,
    }
    assert [name for name, _, _ in pair.backend.calls] == ["quote"]
