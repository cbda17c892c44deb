"""LocalShardHolder's admission: shards no active contract covers are refused NO_CONTRACT.

A real ShardStore in tmp_path behind the holder; the protocol end to end runs
over in-memory streams (StoreClient -> serve_store_stream -> StoreHandlers).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import blake3
import pytest
import trio

from node.dht import Dht
from node.files.network import ShardNoContract, ShardTransferError
from node.files.node_network import NodeFileNetwork
from node.storage.holder import LocalShardHolder
from node.storage.shards import Reservation, ShardStore
from protocols import ids
from protocols.framing import ByteStream, Counters
from protocols.kad.messages import PeerInfo
from protocols.store.client import StoreClient, StoreOutcome, StoreStatus
from protocols.store.handlers import StoreHandlers
from protocols.store.messages import Refused, RefuseReason
from protocols.store.session import serve_store_stream
from tests.unit.memory_stream import memory_stream_pair

MAX_BYTES = 1 << 20
MAX_SHARD = 64 << 10
CONTRACT = bytes.fromhex("c0ffee00" * 8)
OTHER_CONTRACT = bytes(range(32))
SERVER_PEER = b"holder-peer"
CLIENT_PEER = b"client-peer"
NO_CONTRACT = Refused(RefuseReason.NO_CONTRACT, "no active contract covers this shard")


def make_shard(size: int = 1000, seed: int = 0) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return blake3.blake3(data).digest(), data


class Admission:
    """An ``admit`` that accepts only ``covered`` (address, contract) pairs, and records calls."""

    def __init__(self, *covered: tuple[bytes, bytes]) -> None:
        self.covered = set(covered)
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, address: bytes, contract_id: bytes) -> bool:
        self.calls.append((address, contract_id))
        return (address, contract_id) in self.covered


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShardStore]:
    shards = ShardStore(tmp_path / "shards", tmp_path / "node.sqlite3", max_bytes=MAX_BYTES)
    try:
        yield shards
    finally:
        shards.close()


def assert_nothing_stored(store: ShardStore) -> None:
    stats = store.stats()
    assert (stats.count, stats.bytes, stats.reserved) == (0, 0, 0)


# == the holder on its own ==========================================================


async def test_refused_by_admit_reserves_nothing(store: ShardStore) -> None:
    address, data = make_shard()
    admit = Admission()
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD, admit=admit)
    assert await holder.reserve(address, len(data), CONTRACT) == NO_CONTRACT
    assert admit.calls == [(address, CONTRACT)]
    assert_nothing_stored(store)
    assert store.has_many([address]) == [False]


async def test_refused_before_other_checks(store: ShardStore) -> None:
    # Even a shard too large for this node is refused for want of a contract
    # first: no contract, nothing else to discuss.
    address, _ = make_shard()
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD, admit=Admission())
    assert await holder.reserve(address, MAX_SHARD + 1, b"") == NO_CONTRACT


async def test_accepted_by_admit_is_stored(store: ShardStore) -> None:
    address, data = make_shard()
    admit = Admission((address, CONTRACT))
    stored: list[bytes] = []
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD, admit=admit, on_stored=stored.append)
    reservation = await holder.reserve(address, len(data), CONTRACT)
    assert isinstance(reservation, Reservation)
    assert store.stats().reserved == len(data)
    assert await holder.commit(reservation, data) is True
    assert admit.calls == [(address, CONTRACT)]
    assert stored == [address]
    assert store.read(address) == data


async def test_without_admit_every_shard_is_stored(store: ShardStore) -> None:
    address, data = make_shard()
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD)
    reservation = await holder.reserve(address, len(data), b"")
    assert isinstance(reservation, Reservation)
    assert await holder.commit(reservation, data) is True
    assert store.read(address) == data


async def test_without_admit_the_old_refusals_stand(store: ShardStore) -> None:
    address, _ = make_shard()
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD)
    refused = await holder.reserve(address, MAX_SHARD + 1, CONTRACT)
    assert isinstance(refused, Refused)
    assert refused.reason is RefuseReason.TOO_LARGE


async def test_put_local_keeps_this_nodes_own_shards_without_a_contract(
    store: ShardStore,
) -> None:
    # A node placing or rebuilding shards on itself owes no one a contract.
    address, data = make_shard()
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD, admit=Admission())
    assert await holder.put_local(address, data) is True
    assert await holder.put_local(address, data) is False
    assert store.read(address) == data


# == through the store protocol ====================================================


@asynccontextmanager
async def serving(holder: LocalShardHolder) -> AsyncIterator[tuple[StoreClient, Counters]]:
    """A StoreClient whose every stream is served by ``holder`` behind StoreHandlers."""
    handlers = StoreHandlers(holder)
    counters = Counters()
    async with trio.open_nursery() as nursery:

        async def open_stream(peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
            assert (peer_id, protocol) == (SERVER_PEER, ids.STORE)
            client_end, server_end = memory_stream_pair()
            nursery.start_soon(serve_store_stream, server_end, CLIENT_PEER, handlers, counters)
            return client_end

        yield StoreClient(open_stream), counters


async def test_protocol_refusal_and_acceptance(store: ShardStore) -> None:
    address, data = make_shard(300_000)
    admit = Admission((address, CONTRACT))
    holder = LocalShardHolder(store, max_shard_size=1 << 20, admit=admit)
    with trio.fail_after(10):
        async with serving(holder) as (client, counters):
            refused = await client.store_shard(SERVER_PEER, (), address, data)
            assert_nothing_stored(store)
            other = await client.store_shard(
                SERVER_PEER, (), address, data, contract_id=OTHER_CONTRACT
            )
            assert_nothing_stored(store)
            stored = await client.store_shard(SERVER_PEER, (), address, data, contract_id=CONTRACT)
            # Held now: answered before admission, so no contract is needed.
            again = await client.store_shard(SERVER_PEER, (), address, data)
    assert refused == StoreOutcome(
        StoreStatus.REFUSED, RefuseReason.NO_CONTRACT, NO_CONTRACT.detail
    )
    assert other == refused
    assert stored == StoreOutcome(StoreStatus.STORED)
    assert again == StoreOutcome(StoreStatus.ALREADY_HELD)
    # admit saw exactly the contract IDs the client sent, and was not asked again.
    assert admit.calls == [(address, b""), (address, OTHER_CONTRACT), (address, CONTRACT)]
    assert store.read(address) == data
    assert counters.snapshot() == {"refused_no_contract": 2, "stored": 1, "already_held": 1}


async def test_protocol_without_admit_stores(store: ShardStore) -> None:
    address, data = make_shard(5000, seed=1)
    holder = LocalShardHolder(store, max_shard_size=MAX_SHARD)
    with trio.fail_after(10):
        async with serving(holder) as (client, _):
            outcome = await client.store_shard(SERVER_PEER, (), address, data, contract_id=CONTRACT)
    assert outcome == StoreOutcome(StoreStatus.STORED)
    assert store.read(address) == data


# == what node/files callers see ===================================================


def file_network(holder: LocalShardHolder, client: StoreClient) -> NodeFileNetwork:
    # store_shard never asks the DHT.
    return NodeFileNetwork(
        dht=cast(Dht, None),
        client=client,
        holder=holder,
        local_peer_id=CLIENT_PEER,
        self_addrs=lambda: (),
    )


async def test_file_network_surfaces_no_contract(tmp_path: Path, store: ShardStore) -> None:
    address, data = make_shard(5000, seed=2)
    remote = LocalShardHolder(store, max_shard_size=MAX_SHARD, admit=Admission((address, CONTRACT)))
    own_store = ShardStore(tmp_path / "own", tmp_path / "own.sqlite3", max_bytes=MAX_BYTES)
    try:
        own = LocalShardHolder(own_store, max_shard_size=MAX_SHARD, admit=Admission())
        with trio.fail_after(10):
            async with serving(remote) as (client, _):
                net = file_network(own, client)
                holder_peer = PeerInfo(SERVER_PEER, ())
                with pytest.raises(ShardNoContract, match="NO_CONTRACT") as info:
                    await net.store_shard(holder_peer, address, data, contract_id=OTHER_CONTRACT)
                assert OTHER_CONTRACT.hex() in str(info.value)
                assert isinstance(info.value, ShardTransferError)
                await net.store_shard(holder_peer, address, data, contract_id=CONTRACT)
                # The local shortcut keeps this node's own shards, contract or not.
                await net.store_shard(PeerInfo(CLIENT_PEER, ()), address, data)
        assert store.read(address) == data
        assert own_store.read(address) == data
    finally:
        own_store.close()
