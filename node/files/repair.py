"""Repair: rebuild shards that lost every holder, without the file's key.

Shards are ciphertext (or public plaintext) already erasure-coded, so any
node that can read a manifest can check a file and rebuild what is missing:
fetch any k shards of a damaged segment, erasure-decode them to the stored
bytes, re-encode, and store each missing shard on the live node closest to
its address. The content key is never needed and the owner may be offline;
the regenerated shard must hash to the address in the manifest before it is
stored, so a repairer cannot introduce different bytes.

Without repair a 4+2 file slowly dies under churn; with it, a segment is
lost only if more than m of its holders leave between two checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import blake3
import trio

from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.manifest import Manifest, SegmentEntry
from node.files.get import fetch_shards
from node.files.network import FileNetwork, ShardTransferError
from node.files.segment_fetch import HolderStats, SegmentUnavailable


@dataclass
class RepairReport:
    segments: int = 0
    shards_checked: int = 0
    shards_missing: int = 0
    shards_rebuilt: int = 0
    # Segments that could not be rebuilt: fewer than k shards left anywhere.
    lost_segments: list[int] = field(default_factory=list)
    failed_stores: int = 0

    @property
    def healthy(self) -> bool:
        return not self.lost_segments and self.shards_rebuilt == self.shards_missing


async def _segment_holders(net: FileNetwork, addresses: tuple[bytes, ...]) -> list[set[bytes]]:
    """For each shard, the IDs of the nodes that confirm they hold it now."""
    held: list[set[bytes]] = [set() for _ in addresses]

    async def check(i: int) -> None:
        held[i] = {p.peer_id for p in await net.confirmed_holders(addresses[i])}

    async with trio.open_nursery() as nursery:
        for i in range(len(addresses)):
            nursery.start_soon(check, i)
    return held


async def repair_file(
    net: FileNetwork, manifest: Manifest, *, stats: HolderStats | None = None
) -> RepairReport:
    """Check every segment of ``manifest``; rebuild and re-store shards nobody holds."""
    # Fresh per repair unless given: a peer once caught serving a bad copy
    # must not be shunned forever by a long-running node's repairs.
    stats = stats or HolderStats()
    codec = ErasureCodec(manifest.codec.k, manifest.codec.m)
    report = RepairReport(segments=len(manifest.segments))
    for index, entry in enumerate(manifest.segments):
        await _repair_segment(net, codec, index, entry, stats, report)
    return report


async def _repair_segment(
    net: FileNetwork,
    codec: ErasureCodec,
    index: int,
    entry: SegmentEntry,
    stats: HolderStats,
    report: RepairReport,
) -> None:
    addresses = entry.shard_addresses
    report.shards_checked += len(addresses)
    held = await _segment_holders(net, addresses)
    missing = [i for i, holders in enumerate(held) if not holders]
    if not missing:
        return
    # Nodes already holding a shard of this segment: a rebuilt shard goes
    # elsewhere when it can, so one node leaving still costs one shard.
    busy = set().union(*held)
    report.shards_missing += len(missing)
    try:
        fetched = await fetch_shards(net, addresses, codec.k, stats)
    except SegmentUnavailable:
        report.lost_segments.append(index)
        return
    try:
        shards = await trio.to_thread.run_sync(
            lambda: codec.encode(codec.decode(fetched.shards, entry.stored_size))
        )
    except ContentError:
        # Shards that hash right but disagree with the manifest's sizes: the
        # manifest is hostile or broken, and nothing can be rebuilt from it.
        report.lost_segments.append(index)
        return
    for i in missing:
        if blake3.blake3(shards[i]).digest() != addresses[i]:
            # Only if the manifest itself is inconsistent: never store it.
            report.lost_segments.append(index)
            return
        stored_on = await _store_rebuilt(net, addresses[i], shards[i], busy)
        if stored_on is not None:
            busy.add(stored_on)
            report.shards_rebuilt += 1
        else:
            report.failed_stores += 1


async def _store_rebuilt(
    net: FileNetwork, address: bytes, data: bytes, avoid: set[bytes]
) -> bytes | None:
    """Store on the closest node not in ``avoid`` (else the closest); returns its ID."""
    candidates = await net.holder_candidates(address)
    preferred = [p for p in candidates if p.peer_id not in avoid]
    for peer in [*preferred, *(p for p in candidates if p.peer_id in avoid)]:
        try:
            await net.store_shard(peer, address, data)
        except ShardTransferError:
            continue
        return peer.peer_id
    return None
