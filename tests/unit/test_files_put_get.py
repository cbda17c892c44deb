"""Put and get over a scripted network: placement, loss, lies and bad references.

The network here is a dictionary of holders (a stand-in for the transport
only); the content pipeline, placement, manifest and fetch logic under test
are the real ones. The same flows run over real nodes in
tests/integration/test_files_network.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import blake3
import pytest
import trio
import trio.lowlevel

from node.content.address import Reference, parse_reference
from node.content.manifest import (
    Codec,
    Encryption,
    EncryptionScheme,
    Manifest,
    ManifestError,
    SegmentEntry,
    Tier,
    decode_manifest,
    encode_manifest,
)
from node.files.get import GetFailed, NotFound, read_file, resolve
from node.files.network import ShardBadCopy, ShardNotHeld, ShardTransferError
from node.files.put import PutFailed, PutOptions, put_file
from node.files.repair import repair_file
from node.tiers import TierPolicy
from protocols.kad.keyspace import distance, kad_id
from protocols.kad.messages import PeerInfo

WARM = TierPolicy("warm", k=4, m=2, holders_per_shard=1, price_percent=100)
SEGMENT = 64 << 10


class ScriptedNetwork:
    def __init__(self, nodes: int) -> None:
        self.peers = [PeerInfo(f"node-{i}".encode()) for i in range(nodes)]
        self.shards: dict[bytes, dict[bytes, bytes]] = {p.peer_id: {} for p in self.peers}
        self.records: dict[bytes, bytes] = {}
        self.down: set[bytes] = set()
        self.liars: set[bytes] = set()

    @property
    def local_peer_id(self) -> bytes:
        return self.peers[0].peer_id

    def _closest(self, address: bytes) -> list[PeerInfo]:
        target = kad_id(address)
        live = [p for p in self.peers if p.peer_id not in self.down]
        return sorted(live, key=lambda p: distance(target, kad_id(p.peer_id)))

    async def holder_candidates(self, address: bytes) -> list[PeerInfo]:
        await trio.lowlevel.checkpoint()
        return self._closest(address)

    async def store_shard(
        self, peer: PeerInfo, address: bytes, data: bytes, *, contract_id: bytes = b""
    ) -> None:
        await trio.lowlevel.checkpoint()
        if peer.peer_id in self.down:
            raise ShardTransferError("unreachable")
        assert blake3.blake3(data).digest() == address
        self.shards[peer.peer_id][address] = data

    async def shard_holders(self, address: bytes) -> tuple[list[PeerInfo], list[PeerInfo]]:
        await trio.lowlevel.checkpoint()
        holders = [p for p in self.peers if address in self.shards[p.peer_id]]
        # Two nodes that "might" hold it but do not: they must cost nothing.
        others = [p for p in self.peers if p not in holders][:2]
        return holders, others

    async def confirmed_holders(self, address: bytes) -> list[PeerInfo]:
        await trio.lowlevel.checkpoint()
        return [
            p
            for p in self.peers
            if address in self.shards[p.peer_id] and p.peer_id not in self.down
        ]

    async def fetch_shard(self, peer: PeerInfo, address: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        if peer.peer_id in self.down:
            raise ShardTransferError("unreachable")
        if address not in self.shards[peer.peer_id]:
            raise ShardNotHeld("not here")
        data = self.shards[peer.peer_id][address]
        if peer.peer_id in self.liars:
            raise ShardBadCopy("bytes do not hash to the address")
        return data

    async def publish_record(self, key: bytes, value: bytes) -> int:
        self.records[key] = value
        return 1

    async def find_record(self, key: bytes) -> bytes | None:
        return self.records.get(key)


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def put(net: ScriptedNetwork, data: bytes, **options: object) -> Reference:
    result = await put_file(
        net,
        chunks_of(data),
        PutOptions(policy=WARM, segment_size=SEGMENT, **options),  # type: ignore[arg-type]
    )
    return parse_reference(result.capability or result.cid)


async def get(net: ScriptedNetwork, ref: Reference) -> bytes:
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    manifest = await resolve(net, ref)
    await read_file(net, manifest, ref.key, write)
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, SEGMENT, 3 * SEGMENT + 17])
async def test_round_trip_encrypted(size: int) -> None:
    net = ScriptedNetwork(8)
    data = os.urandom(size)
    ref = await put(net, data, name="f.bin")
    assert ref.key is not None
    assert await get(net, ref) == data


async def test_public_content_needs_only_the_cid() -> None:
    net = ScriptedNetwork(8)
    data = b"public words " * 20_000
    ref = await put(net, data, public=True)
    assert ref.key is None
    assert await get(net, ref) == data


async def test_every_shard_of_a_segment_on_a_different_node() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(2 * SEGMENT))
    manifest = decode_manifest(net.records[next(iter(net.records))])
    for segment in manifest.segments:
        holders = [
            peer for peer, held in net.shards.items() for a in segment.shard_addresses if a in held
        ]
        assert len(holders) == len(set(holders)) == 6
    assert ref.key is not None


async def test_any_two_holders_lost_still_reads() -> None:
    net = ScriptedNetwork(8)
    data = os.urandom(3 * SEGMENT)
    ref = await put(net, data)
    holding = [p for p, held in net.shards.items() if held]
    net.down.update(holding[:2])
    assert await get(net, ref) == data


async def test_a_lying_holder_is_skipped() -> None:
    net = ScriptedNetwork(8)
    data = os.urandom(2 * SEGMENT)
    ref = await put(net, data)
    manifest = await resolve(net, ref)
    # Whoever holds shard 0 of each segment (asked first) serves garbage.
    for segment in manifest.segments:
        first = segment.shard_addresses[0]
        net.liars.update(p for p, held in net.shards.items() if first in held)
    out = bytearray()

    async def write(chunk: bytes) -> None:
        out.extend(chunk)

    report = await read_file(net, manifest, ref.key, write)
    assert bytes(out) == data
    assert report.bad_copies >= 1


async def test_three_holders_lost_is_a_clear_error() -> None:
    net = ScriptedNetwork(6)
    ref = await put(net, os.urandom(SEGMENT))
    net.down.update(p.peer_id for p in net.peers[:3])
    with pytest.raises(GetFailed, match="segment 0: only"):
        await get(net, ref)


async def test_wrong_key_is_a_clear_error() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(SEGMENT))
    wrong = Reference(ref.digest, bytes(32))
    with pytest.raises(GetFailed, match=r"segment 0: authentication failed \(wrong key"):
        await get(net, wrong)


async def test_encrypted_content_without_its_key_is_refused() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(100))
    with pytest.raises(GetFailed, match="needs its capability"):
        await get(net, Reference(ref.digest))


async def test_unknown_content_id_is_not_found() -> None:
    with pytest.raises(NotFound):
        await get(ScriptedNetwork(8), Reference(bytes(32)))


async def test_a_manifest_that_does_not_hash_to_its_id_is_refused() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(100), public=True)
    key = next(iter(net.records))
    net.records[key] = net.records[key] + b"\x00"
    with pytest.raises(GetFailed, match="does not hash"):
        await get(net, ref)


async def test_too_few_nodes_fails_the_put_and_publishes_nothing() -> None:
    net = ScriptedNetwork(8)
    net.down.update(p.peer_id for p in net.peers)
    with pytest.raises(PutFailed, match="segment 0: only 0 of 6 shards"):
        await put(net, os.urandom(SEGMENT))
    assert net.records == {}


# -- repair ----------------------------------------------------------------------


def drop_everywhere(net: ScriptedNetwork, address: bytes) -> None:
    for held in net.shards.values():
        held.pop(address, None)


async def test_repair_rebuilds_shards_nobody_holds_without_the_key() -> None:
    net = ScriptedNetwork(8)
    data = os.urandom(2 * SEGMENT)
    ref = await put(net, data)
    manifest = await resolve(net, ref)
    lost = manifest.segments[1].shard_addresses
    drop_everywhere(net, lost[0])
    drop_everywhere(net, lost[5])
    report = await repair_file(net, manifest)
    assert (report.shards_missing, report.shards_rebuilt, report.lost_segments) == (2, 2, [])
    assert report.healthy
    assert await net.confirmed_holders(lost[0]) and await net.confirmed_holders(lost[5])
    # The rebuilt copies are the real shards: lose two others, still readable.
    drop_everywhere(net, lost[1])
    drop_everywhere(net, lost[2])
    assert await get(net, ref) == data


async def test_repair_of_a_healthy_file_changes_nothing() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(SEGMENT))
    before = {p: dict(h) for p, h in net.shards.items()}
    report = await repair_file(net, await resolve(net, ref))
    assert report.healthy and report.shards_missing == 0
    assert net.shards == before


async def test_repair_reports_a_segment_with_too_few_shards_left() -> None:
    net = ScriptedNetwork(8)
    ref = await put(net, os.urandom(SEGMENT), public=True)
    manifest = await resolve(net, ref)
    for address in manifest.segments[0].shard_addresses[:3]:
        drop_everywhere(net, address)
    report = await repair_file(net, manifest)
    assert report.lost_segments == [0] and not report.healthy
    assert report.shards_rebuilt == 0


async def test_repair_of_a_hostile_manifest_reports_the_segment_lost() -> None:
    # Shards whose hashes match the manifest but whose sizes do not: nothing
    # can be rebuilt, and the repairer must say so rather than crash.
    net = ScriptedNetwork(6)
    shards = [os.urandom(10) for _ in range(6)]
    addresses = tuple(blake3.blake3(s).digest() for s in shards)
    for i, shard in enumerate(shards[:5]):
        net.shards[net.peers[i].peer_id][addresses[i]] = shard
    plain = 100_000
    manifest = Manifest(
        size=plain,
        segment_size=1 << 20,
        tier=Tier.WARM,
        codec=Codec(k=4, m=2),
        encryption=Encryption(scheme=EncryptionScheme.NONE),
        segments=(
            SegmentEntry(
                plain_size=plain,
                stored_size=plain,
                compressed=False,
                shard_size=plain // 4,
                shard_addresses=addresses,
            ),
        ),
        created=1,
    )
    report = await repair_file(net, decode_manifest(encode_manifest(manifest)))
    assert report.lost_segments == [0] and report.shards_rebuilt == 0


async def test_bad_metadata_is_refused_before_anything_is_stored() -> None:
    net = ScriptedNetwork(8)
    with pytest.raises(ManifestError, match="tags"):
        await put(net, os.urandom(3 * SEGMENT), tags=("a", "a"))
    assert all(not held for held in net.shards.values())
    assert net.records == {}
