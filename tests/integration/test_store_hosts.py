"""/zhtp/store/1.0.0 between two real py-libp2p hosts (TCP, Noise, Yamux) on 127.0.0.1.

The server host is the node's own (``node.host.build_host``) and registers
the real ``serve_store_stream`` for the STORE id, backed by the in-memory
holder of the unit tests; the client host uses the real ``StoreClient``
through the node's StreamOpener.

The slow-holder tests are about stock py-libp2p's Yamux, which any peer may
run: a writer that finds the stream's send window empty for 5 s gets the
stream reset. There the client is a stock py-libp2p host. Our window keeps a
sender from ever filling Yamux's window, so a server may pause as long as it
likes; the control test shows the same pause killing a sender that ignores
the window, so the slow-holder test is known to be able to fail.

The admission test runs the node's own LocalShardHolder on a real ShardStore
with an ``admit`` that accepts one contract, and the client through the
node's NodeFileNetwork, to see the error a caller gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, cast

import blake3
import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as StockNoise

from node.dht import Dht
from node.files.network import ShardNoContract
from node.files.node_network import NodeFileNetwork
from node.host import StreamOpener, build_host, set_handler, stream_peer
from node.storage.holder import LocalShardHolder
from node.storage.shards import ShardStore
from protocols import ids
from protocols.framing import TRANSPORT_ERRORS, ByteStream, Counters, FrameReader, StreamGate
from protocols.kad.messages import PeerInfo
from protocols.store.client import StoreClient, StoreOutcome, StoreStatus
from protocols.store.handlers import DEFAULT_WINDOW, ReservationT, StoreHandlers
from protocols.store.messages import (
    MAX_CHUNK,
    Chunk,
    RefuseReason,
    StoreBegin,
    StoreReady,
    decode_message,
)
from protocols.store.session import serve_store_stream
from tests.unit.test_store_protocol import MemoryHolder, Reservation, Server, frame, make_shard

SHARD_SIZE = 4 * 1024 * 1024
# More than the 16 MiB py-libp2p's Yamux may grow a stream's window to: a
# sender that did not wait for our acks would fill it and wait in Yamux.
BIG_SHARD_SIZE = 20 * 1024 * 1024
# Longer than Yamux's 5 s wait for a window update.
PAUSE = 6.0
LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def transport_addrs(host: IHost) -> tuple[bytes, ...]:
    """The host's listen addresses without the /p2p suffix, as binary multiaddrs."""
    suffix = multiaddr.Multiaddr(f"/p2p/{host.get_id().to_base58()}")
    out = []
    for addr in host.get_addrs():
        if str(addr).endswith(str(suffix)):
            addr = addr.decapsulate(suffix)
        out.append(bytes(addr.to_bytes()))
    return tuple(out)


def stock_host(pair: KeyPair) -> IHost:
    """A host with py-libp2p's own Noise and Yamux, as a peer on stock py-libp2p runs."""
    noise = StockNoise(pair, noise_privkey=create_noise_key_pair().private_key)
    return new_host(
        key_pair=pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


@dataclass
class HostPair(Generic[ReservationT]):
    handlers: StoreHandlers[ReservationT]
    counters: Counters
    client_host: IHost
    server_id: bytes
    server_addrs: tuple[bytes, ...]
    open_stream: StreamOpener

    def client(self, **options: float) -> StoreClient:
        return StoreClient(self.open_stream, **options)  # type: ignore[arg-type]


@asynccontextmanager
async def host_pair(
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
    *,
    wrap: Callable[[INetStream], ByteStream] | None = None,
    client_host: Callable[[KeyPair], IHost] = build_host,
) -> AsyncIterator[HostPair[ReservationT]]:
    """A node host serving ``handlers`` on the STORE id, and a client host to reach it."""
    gate = StreamGate(ids.STORE_LIMITS.max_streams_per_peer)

    async def handle(stream: INetStream) -> None:
        served: ByteStream = stream if wrap is None else wrap(stream)
        await serve_store_stream(served, stream_peer(stream), handlers, counters, gate)

    server = build_host(create_new_key_pair())
    client = client_host(create_new_key_pair())
    async with server.run([LOOPBACK]), client.run([LOOPBACK]):
        set_handler(server, ids.STORE, handle)
        yield HostPair(
            handlers,
            counters,
            client,
            server.get_id().to_bytes(),
            transport_addrs(server),
            StreamOpener(client),
        )


@dataclass
class StorePair:
    server: Server
    client_host: IHost
    server_id: bytes
    server_addrs: tuple[bytes, ...]
    open_stream: StreamOpener

    def client(self, **options: float) -> StoreClient:
        return StoreClient(self.open_stream, **options)  # type: ignore[arg-type]

    async def raw_stream(self) -> INetStream:
        return await self.open_stream(self.server_id, self.server_addrs, ids.STORE)


@asynccontextmanager
async def store_pair(
    holder: MemoryHolder | None = None,
    *,
    wrap: Callable[[INetStream], ByteStream] | None = None,
    client_host: Callable[[KeyPair], IHost] = build_host,
) -> AsyncIterator[StorePair]:
    store = Server(holder or MemoryHolder())
    async with host_pair(
        store.handlers, store.counters, wrap=wrap, client_host=client_host
    ) as hosts:
        yield StorePair(
            store, hosts.client_host, hosts.server_id, hosts.server_addrs, hosts.open_stream
        )


class PausingReads:
    """The server's end of a stream, reading like a slow disk.

    After the first read (the StoreBegin) the next read waits ``pause``
    seconds, and every read after that a little.
    """

    def __init__(self, inner: INetStream, pause: float, per_read: float = 0.002) -> None:
        self._inner = inner
        self._pause = pause
        self._per_read = per_read
        self._reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self._reads += 1
        if self._reads == 2:
            await trio.sleep(self._pause)
        elif self._reads > 2:
            await trio.sleep(self._per_read)
        return await self._inner.read(n)

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    async def close(self) -> None:
        await self._inner.close()

    async def reset(self) -> None:
        await self._inner.reset()


class SlowCommitHolder(MemoryHolder):
    async def commit(self, reservation: Reservation, data: bytes) -> bool:
        await trio.sleep(PAUSE + 0.5)
        return await super().commit(reservation, data)


async def test_store_and_fetch_a_4_mib_shard() -> None:
    address, data = make_shard(SHARD_SIZE)
    with trio.fail_after(60):
        async with store_pair() as pair:
            client = pair.client()
            outcome = await client.store_shard(pair.server_id, pair.server_addrs, address, data)
            assert outcome == StoreOutcome(StoreStatus.STORED)
            fetched = await client.fetch_shard(pair.server_id, pair.server_addrs, address)
            assert blake3.blake3(fetched).digest() == address
            assert fetched == data
            part = await client.fetch_shard(
                pair.server_id, pair.server_addrs, address, 1_000_000, 300_000
            )
            assert part == data[1_000_000:1_300_000]
            held = await client.has_shards(pair.server_id, pair.server_addrs, [address, bytes(32)])
            assert held == [True, False]
            again = await client.store_shard(pair.server_id, pair.server_addrs, address, data)
            assert again.status is StoreStatus.ALREADY_HELD
    assert pair.server.holder.shards == {address: data}
    assert pair.server.counters.snapshot() == {
        "stored": 1,
        "fetched": 2,
        "has": 1,
        "already_held": 1,
    }


async def test_slow_consumption_and_slow_commit_still_complete() -> None:
    holder = SlowCommitHolder(max_shard=BIG_SHARD_SIZE)
    address, data = make_shard(BIG_SHARD_SIZE, seed=1)
    with trio.fail_after(60):
        async with store_pair(
            holder, wrap=lambda s: PausingReads(s, PAUSE), client_host=stock_host
        ) as pair:
            outcome = await pair.client().store_shard(
                pair.server_id, pair.server_addrs, address, data
            )
    assert outcome == StoreOutcome(StoreStatus.STORED)
    assert holder.shards == {address: data}
    assert pair.server.counters.snapshot() == {"stored": 1}


async def test_control_a_sender_ignoring_the_window_is_reset_by_the_pause() -> None:
    # The same pausing server, and a sender that writes without waiting for
    # acks: whatever Yamux grew the window to, it fills, and after 5 s of
    # waiting for a window update py-libp2p resets the stream.
    size = BIG_SHARD_SIZE
    address, data = make_shard(size, seed=2)
    holder = MemoryHolder(max_shard=size)
    with trio.fail_after(60):
        async with store_pair(
            holder, wrap=lambda s: PausingReads(s, PAUSE), client_host=stock_host
        ) as pair:
            stream = await pair.raw_stream()
            await stream.write(frame(StoreBegin(address, size)))
            reply = await FrameReader(stream, ids.STORE_LIMITS.max_frame).read_frame()
            assert reply is not None
            assert decode_message(reply) == StoreReady(DEFAULT_WINDOW)
            with pytest.raises(TRANSPORT_ERRORS):
                for start in range(0, size, MAX_CHUNK):
                    await stream.write(frame(Chunk(data[start : start + MAX_CHUNK])))
            await stream.reset()
    assert holder.shards == {}
    assert holder.reservations == []


async def test_wrong_hash_is_refused_and_nothing_is_stored() -> None:
    address, data = make_shard(SHARD_SIZE, seed=3)
    tampered = bytes([data[0] ^ 0xFF]) + data[1:]
    with trio.fail_after(60):
        async with store_pair() as pair:
            outcome = await pair.client().store_shard(
                pair.server_id, pair.server_addrs, address, tampered
            )
    assert (outcome.status, outcome.reason) == (StoreStatus.REFUSED, RefuseReason.HASH_MISMATCH)
    pair.server.assert_nothing_stored()
    assert [r.address for r in pair.server.holder.released] == [address]
    assert pair.server.counters.snapshot() == {"refused_hash_mismatch": 1}


async def test_bytes_beyond_size_reset_the_stream_and_store_nothing() -> None:
    address, data = make_shard(100_000, seed=4)
    with trio.fail_after(60):
        async with store_pair() as pair:
            stream = await pair.raw_stream()
            reader = FrameReader(stream, ids.STORE_LIMITS.max_frame)
            await stream.write(frame(StoreBegin(address, len(data))))
            reply = await reader.read_frame()
            assert reply is not None
            assert decode_message(reply) == StoreReady(DEFAULT_WINDOW)
            await stream.write(frame(Chunk(data + b"!")))
            # py-libp2p reports the server's reset as an error or as an end
            # of stream, depending on timing; either way no answer comes.
            try:
                reply = await reader.read_frame()
            except TRANSPORT_ERRORS:
                reply = None
            assert reply is None
    pair.server.assert_nothing_stored()
    assert pair.server.counters.snapshot() == {"beyond_size": 1}


async def test_protocol_id_is_negotiated() -> None:
    with trio.fail_after(30):
        async with store_pair() as pair:
            stream = await pair.raw_stream()
            assert stream.get_protocol() == TProtocol(ids.STORE)
            await stream.close()


async def test_holder_refuses_shards_no_contract_covers(tmp_path: Path) -> None:
    contract = bytes.fromhex("c0ffee00" * 8)
    address, data = make_shard(SHARD_SIZE, seed=5)
    other_address, other_data = make_shard(100_000, seed=6)
    seen: list[tuple[bytes, bytes]] = []

    def admit(shard: bytes, contract_id: bytes) -> bool:
        seen.append((shard, contract_id))
        return contract_id == contract

    store = ShardStore(tmp_path / "shards", tmp_path / "node.sqlite3", max_bytes=64 << 20)
    own_store = ShardStore(tmp_path / "own", tmp_path / "own.sqlite3", max_bytes=1 << 20)
    try:
        holder = LocalShardHolder(store, max_shard_size=SHARD_SIZE, admit=admit)
        counters = Counters()
        with trio.fail_after(60):
            async with host_pair(StoreHandlers(holder), counters) as pair:
                client = pair.client()
                stored = await client.store_shard(
                    pair.server_id, pair.server_addrs, address, data, contract_id=contract
                )
                refused = await client.store_shard(
                    pair.server_id, pair.server_addrs, other_address, other_data
                )
                # Through the node's own FileNetwork: a clear error for the caller.
                net = NodeFileNetwork(
                    dht=cast(Dht, None),  # store_shard never asks the DHT
                    client=client,
                    holder=LocalShardHolder(own_store, max_shard_size=SHARD_SIZE),
                    local_peer_id=pair.client_host.get_id().to_bytes(),
                    self_addrs=lambda: (),
                )
                peer = PeerInfo(pair.server_id, pair.server_addrs)
                with pytest.raises(ShardNoContract, match="refused the shard: NO_CONTRACT"):
                    await net.store_shard(peer, other_address, other_data)
                await net.store_shard(peer, other_address, other_data, contract_id=contract)
    finally:
        store.close()
        own_store.close()
    assert stored == StoreOutcome(StoreStatus.STORED)
    assert (refused.status, refused.reason) == (StoreStatus.REFUSED, RefuseReason.NO_CONTRACT)
    assert refused.detail == "no active contract covers this shard"
    assert seen == [
        (address, contract),
        (other_address, b""),
        (other_address, b""),
        (other_address, contract),
    ]
    assert counters.snapshot() == {"stored": 2, "refused_no_contract": 2}
