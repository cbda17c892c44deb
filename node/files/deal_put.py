"""Put a file as a storage deal: encode, get quotes, sign contracts, lock escrow, then store.

A contract names the shards it covers and their Merkle roots, so shards must
exist before contracts do; and shards may be sent only under an active
contract. So this put works in phases:

1. **Encode** every segment (compress, encrypt, erasure-code, address) in
   worker threads, as `put_file` does, but write the shards to a spool
   directory on local disk with their audit Merkle roots instead of sending
   them. Memory stays at a few segments; the spool needs about
   (k+m)/k times the file size of free disk, and is removed afterwards.
2. **Quote**: ask the nodes closest to the shards' addresses (the same
   candidates plain placement would use) for quotes, and keep the providers
   that offer, ranked by reputation and price.
3. **Place** each segment's shards on distinct providers among those,
   closest to the shard address first. This node counts as a candidate too,
   as in plain placement, and keeps what lands on it without a contract (a
   node alone keeps every shard).
4. **Deal**: one contract per provider covering all its shards of this
   file; the client locks the escrow and starts monitoring before a byte
   of shard data moves.
5. **Store** each shard under its contract; holders refuse shards no
   contract of theirs covers.
6. **Publish** the manifest. (The market starts monitoring each contract
   and publishes its record on its next audit round.)

A provider whose deal fails has its shards offered to the next providers
(in a second contract with them). A segment with fewer than k stored
shards fails the put, as in `put_file`.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from node.content.manifest import SegmentEntry
from node.content.segment_codec import encode_segment
from node.files.failures import first_of
from node.files.network import FileNetwork, ShardTransferError
from node.files.placement import choose_holders
from node.files.put import (
    PutFailed,
    PutOptions,
    PutPlan,
    PutResult,
    each_segment,
    entry_of,
    finish_put,
    plan_put,
)
from node.market.audit import merkle_root
from node.market.contract import ShardTerm
from protocols.kad.messages import PeerInfo

__all__ = ["DealMaker", "Offer", "put_file_with_deals"]

STORE_PARALLEL = 8
LOOKUP_PARALLEL = 16


@dataclass(frozen=True)
class Offer:
    """A provider willing to store, with whatever its quote says (opaque here)."""

    provider: PeerInfo
    quote: object


class DealMaker(Protocol):
    """What the put needs of the market (node/market_node.py implements it)."""

    @property
    def leaf_size(self) -> int:
        """The Merkle leaf size contracts name (node/market/audit.py)."""
        ...

    async def offers(self, candidates: Sequence[PeerInfo], size: int, tier: str) -> list[Offer]:
        """Providers among `candidates` that quote for `size` bytes, best first."""
        ...

    async def deal(self, offer: Offer, shards: Sequence[ShardTerm]) -> bytes:
        """A countersigned contract with `offer.provider` for `shards`, escrow locked; its ID.

        Raises one of the caller's `deal_errors`. The market starts monitoring
        it and publishes its record afterwards, off the put's path.
        """
        ...


async def put_file_with_deals(
    net: FileNetwork,
    market: DealMaker,
    chunks: AsyncIterator[bytes],
    options: PutOptions,
    spool_root: Path,
    *,
    local_peer_id: bytes,
    deal_errors: tuple[type[Exception], ...],
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> PutResult:
    """Store the bytes of ``chunks`` under storage contracts (module docstring)."""
    started = trio.current_time()
    policy = options.policy
    plan = plan_put(options)
    spool = spool_root / uuid.uuid4().hex
    spool.mkdir(parents=True, mode=0o700)
    try:
        entries, roots = await _encode_to_spool(
            chunks, spool, plan, options, market.leaf_size, on_progress,
        )  # fmt: skip
        segments = [entries[i] for i in range(len(entries))]
        placement, offers = await _place(net, market, segments, options, local_peer_id)
        contracts = await _make_deals(market, placement, offers, segments, roots, deal_errors)
        copies, holders, under = await _store(net, spool, segments, offers, contracts, policy.k)
    finally:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(spool, ignore_errors=True))
    return await finish_put(
        net,
        options,
        plan,
        tuple(segments),
        created=int(clock()),
        started=started,
        shard_copies=copies,
        holders=len(holders),
        under_replicated=under,
        contracts=len(set(contracts.values()) - {b""}),
    )


async def _encode_to_spool(
    chunks: AsyncIterator[bytes],
    spool: Path,
    plan: PutPlan,
    options: PutOptions,
    leaf_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[dict[int, SegmentEntry], dict[bytes, bytes]]:
    entries: dict[int, SegmentEntry] = {}
    roots: dict[bytes, bytes] = {}
    limiter = trio.CapacityLimiter(options.workers)

    def encode_and_spool(index: int, data: bytes) -> None:
        segment = encode_segment(index, data, key=plan.key, codec=plan.codec)
        for address, shard in zip(segment.addresses, segment.shards, strict=True):
            (spool / address.hex()).write_bytes(shard)
            roots[address] = merkle_root(shard, leaf_size)
        entries[index] = entry_of(segment)

    async def one(index: int, data: bytes) -> None:
        await trio.to_thread.run_sync(encode_and_spool, index, data, limiter=limiter)
        if on_progress is not None:
            on_progress(len(data))

    with first_of(PutFailed):
        await each_segment(chunks, plan, options, one)
    return entries, roots


async def _place(
    net: FileNetwork,
    market: DealMaker,
    segments: Sequence[SegmentEntry],
    options: PutOptions,
    local_peer_id: bytes,
) -> tuple[dict[bytes, list[bytes]], dict[bytes, Offer]]:
    """Shard address -> chosen provider IDs, and the offers by provider."""
    policy = options.policy
    addresses = [a for s in segments for a in s.shard_addresses]
    candidates: dict[bytes, list[PeerInfo]] = {}
    limiter = trio.Semaphore(LOOKUP_PARALLEL)

    async def find(address: bytes) -> None:
        async with limiter:
            candidates[address] = await net.holder_candidates(address)

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(find, address)
    distinct: dict[bytes, PeerInfo] = {}
    for address in addresses:
        for peer in candidates[address]:
            if peer.peer_id != local_peer_id:
                distinct.setdefault(peer.peer_id, peer)
    if not segments:
        return {}, {}
    stored_bytes = sum(s.shard_size * len(s.shard_addresses) for s in segments)
    share = -(-stored_bytes * policy.holders_per_shard // max(1, min(len(distinct), 64)))
    offers = await market.offers(list(distinct.values()), share, policy.name) if distinct else []
    by_id = {o.provider.peer_id: o for o in offers}
    # This node may keep shards of its own file as plain placement would put
    # them here: no contract with itself. Alone, it keeps them all.
    by_id[local_peer_id] = Offer(provider=PeerInfo(local_peer_id, ()), quote=None)
    rank = {peer_id: i for i, peer_id in enumerate(by_id)}
    placement: dict[bytes, list[bytes]] = {}
    for segment in segments:
        # Offering nodes closest to each shard first, then every other offer
        # in rank order so a shard always has somewhere to go.
        per_shard = []
        for address in segment.shard_addresses:
            near = [p.peer_id for p in candidates[address] if p.peer_id in by_id]
            rest = sorted((p for p in by_id if p not in near), key=rank.__getitem__)
            per_shard.append(near + rest)
        chosen = choose_holders(per_shard, policy.holders_per_shard)
        for address, holders in zip(segment.shard_addresses, chosen, strict=True):
            placement[address] = holders
    return placement, by_id


async def _make_deals(
    market: DealMaker,
    placement: dict[bytes, list[bytes]],
    offers: dict[bytes, Offer],
    segments: Sequence[SegmentEntry],
    roots: dict[bytes, bytes],
    deal_errors: tuple[type[Exception], ...],
) -> dict[tuple[bytes, bytes], bytes]:
    """(provider, shard address) -> contract ID, for every placed copy that got a deal."""
    sizes = {a: s.shard_size for s in segments for a in s.shard_addresses}
    wanted: dict[bytes, list[bytes]] = {}
    for address, holders in placement.items():
        for peer_id in holders:
            wanted.setdefault(peer_id, []).append(address)
    contracts: dict[tuple[bytes, bytes], bytes] = {}
    failed: dict[bytes, list[bytes]] = {}

    async def deal(peer_id: bytes, addresses: list[bytes]) -> None:
        if offers[peer_id].quote is None:  # this node: no contract with itself
            for address in addresses:
                contracts[(peer_id, address)] = b""
            return
        shards = [ShardTerm(address=a, merkle_root=roots[a], size=sizes[a]) for a in addresses]
        try:
            contract_id = await market.deal(offers[peer_id], shards)
        except deal_errors:
            failed[peer_id] = addresses
            return
        for address in addresses:
            contracts[(peer_id, address)] = contract_id

    async with trio.open_nursery() as nursery:
        for peer_id, addresses in wanted.items():
            nursery.start_soon(deal, peer_id, addresses)
    if failed:
        # Offer the orphaned shards to providers that did sign, in rank order,
        # never two copies of one shard on one node.
        signed = [p for p in offers if p not in failed and offers[p].quote is not None]
        reassigned: dict[bytes, list[bytes]] = {}
        for addresses in failed.values():
            for address in addresses:
                holding = {p for (p, a) in contracts if a == address}
                target = next((p for p in signed if p not in holding), None)
                if target is not None:
                    reassigned.setdefault(target, []).append(address)
        async with trio.open_nursery() as nursery:
            for peer_id, addresses in reassigned.items():
                nursery.start_soon(deal, peer_id, addresses)
    return contracts


async def _store(
    net: FileNetwork,
    spool: Path,
    segments: Sequence[SegmentEntry],
    offers: dict[bytes, Offer],
    contracts: dict[tuple[bytes, bytes], bytes],
    k: int,
) -> tuple[int, set[bytes], int]:
    """Send every shard under its contract; (copies, holders, under-replicated segments)."""
    stored: dict[bytes, int] = {}
    holders: set[bytes] = set()
    limiter = trio.Semaphore(STORE_PARALLEL)
    copies = 0

    async def send(peer_id: bytes, address: bytes, contract_id: bytes) -> None:
        nonlocal copies
        async with limiter:
            data = await trio.to_thread.run_sync((spool / address.hex()).read_bytes)
            try:
                await net.store_shard(
                    offers[peer_id].provider, address, data, contract_id=contract_id
                )
            except ShardTransferError:
                return
        stored[address] = stored.get(address, 0) + 1
        holders.add(peer_id)
        copies += 1

    with first_of(PutFailed):
        async with trio.open_nursery() as nursery:
            for (peer_id, address), contract_id in contracts.items():
                nursery.start_soon(send, peer_id, address, contract_id)
    under = 0
    for i, segment in enumerate(segments):
        with_copy = sum(1 for a in segment.shard_addresses if stored.get(a))
        if with_copy < k:
            raise PutFailed(
                f"segment {i}: only {with_copy} of {len(segment.shard_addresses)} shards were "
                f"stored under a contract; {k} are needed to read it back"
            )
        if with_copy < len(segment.shard_addresses):
            under += 1
    return copies, holders, under
