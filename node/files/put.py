"""Put a file: segment, encode, place every shard, publish the manifest.

Data flows as bytes arrive: ``put_file`` cuts the incoming chunks into
segments, encodes each one (compress, encrypt, erasure-code, address) in a
worker thread, and stores its shards on their holders while later segments
are still arriving and encoding. At most ``lookahead`` segments are between
"read" and "stored" at any time, so memory stays bounded by a few segments
whatever the file size; and because the source is only read when a slot is
free, a slow network slows the reader instead of filling memory.

A segment counts as stored when at least k of its k+m shards have a holder
(it can then be read back); fewer than all k+m is reported as
under-replicated so the caller can say so. The manifest is published last:
a content ID is only ever handed out for a file whose every segment is
readable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio

from node.content.address import format_capability, format_cid
from node.content.encrypt import new_content_key
from node.content.erasure import ErasureCodec
from node.content.manifest import (
    Codec,
    Encryption,
    EncryptionScheme,
    Manifest,
    SegmentEntry,
    Tier,
    encode_manifest,
    manifest_id,
    manifest_record_key,
)
from node.content.segment_codec import EncodedSegment, encode_segment
from node.files.failures import first_of
from node.files.network import FileNetwork, ShardTransferError
from node.files.placement import choose_holders
from node.files.sizing import choose_segment_size, max_segments, segments_in_flight
from node.tiers import TierPolicy
from protocols.kad.messages import PeerInfo


class PutFailed(Exception):
    """The file could not be stored readably; the message says which part failed."""


@dataclass(frozen=True)
class PutOptions:
    policy: TierPolicy
    segment_size: int
    name: str = ""
    mime_type: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""
    public: bool = False
    # False when the owner's client seals and signs the manifest before it is
    # published (identity-based access): put stores the shards and returns
    # the capability-only manifest and its key instead.
    publish: bool = True
    # The total size when known in advance: large files get larger segments.
    size_hint: int | None = None
    # True when the caller chose segment_size on purpose: never grow it then.
    segment_size_fixed: bool = False
    lookahead: int = 4
    workers: int = 2


@dataclass(frozen=True)
class PutResult:
    content_id: bytes
    size: int
    segments: int
    shards: int
    shard_copies: int
    under_replicated_segments: int
    distinct_holders: int
    manifest_holders: int
    seconds: float
    capability: str | None
    created: int = 0
    # Set only when the manifest was not published (PutOptions.publish=False).
    unpublished_manifest: bytes | None = None
    # Storage contracts the put made (a put under deals; 0 otherwise).
    contracts: int = 0

    @property
    def cid(self) -> str:
        return format_cid(self.content_id)

    def __repr__(self) -> str:  # the capability holds the key: never print it by accident
        return f"PutResult(cid={self.cid!r}, size={self.size}, segments={self.segments})"


async def cut_segments(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class _SegmentStorer:
    """Places one segment's shards on holders and counts what landed where."""

    def __init__(self, net: FileNetwork, policy: TierPolicy) -> None:
        self.net = net
        self.policy = policy
        self.copies = 0
        self.holders: set[bytes] = set()

    async def store(self, segment: EncodedSegment) -> int:
        """Store the shards; returns how many of them have at least one holder."""
        n = len(segment.addresses)
        candidates: list[list[PeerInfo]] = [[] for _ in range(n)]

        async def find(i: int) -> None:
            candidates[i] = await self.net.holder_candidates(segment.addresses[i])

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(find, i)
        ids = [[p.peer_id for p in c] for c in candidates]
        chosen = choose_holders(ids, self.policy.holders_per_shard)
        placed = [0] * n

        async def place(i: int) -> None:
            by_id = {p.peer_id: p for p in candidates[i]}
            want = max(1, len(chosen[i]))
            # The chosen holders first, then the other candidates as fallbacks.
            order = chosen[i] + [p for p in ids[i] if p not in chosen[i]]
            for peer_id in order:
                if placed[i] >= want:
                    return
                try:
                    await self.net.store_shard(
                        by_id[peer_id], segment.addresses[i], segment.shards[i]
                    )
                except ShardTransferError:
                    continue
                placed[i] += 1
                self.copies += 1
                self.holders.add(peer_id)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(place, i)
        return sum(1 for count in placed if count)


def build_manifest(
    options: PutOptions,
    policy: TierPolicy,
    key: bytes | None,
    segment_size: int,
    segments: tuple[SegmentEntry, ...],
    size: int,
    created: int,
) -> Manifest:
    return Manifest(
        size=size,
        segment_size=segment_size,
        tier=Tier(policy.name),
        codec=Codec(k=policy.k, m=policy.m),
        encryption=Encryption(
            scheme=EncryptionScheme.NONE if key is None else EncryptionScheme.AES_256_GCM
        ),
        segments=segments,
        name=options.name,
        mime_type=options.mime_type,
        tags=options.tags,
        description=options.description,
        created=created,
    )


@dataclass(frozen=True)
class PutPlan:
    """How one put encodes: its codec, key, segment size and segment limit."""

    codec: ErasureCodec
    key: bytes | None
    segment_size: int
    segment_limit: int

    def __repr__(self) -> str:  # holds the content key: never print it by accident
        return f"PutPlan(segment_size={self.segment_size}, limit={self.segment_limit})"


def plan_put(options: PutOptions) -> PutPlan:
    """Choose the encoding of a put, and check its metadata before any byte is stored.

    A manifest refused at the end would leave every shard orphaned.
    """
    policy = options.policy
    key = None if options.public else new_content_key()
    segment_size = (
        options.segment_size
        if options.segment_size_fixed
        else choose_segment_size(options.size_hint, options.segment_size, policy.k + policy.m)
    )
    encode_manifest(build_manifest(options, policy, key, segment_size, (), 0, 0))
    return PutPlan(
        codec=ErasureCodec(policy.k, policy.m),
        key=key,
        segment_size=segment_size,
        segment_limit=max_segments(policy.k + policy.m),
    )


def entry_of(segment: EncodedSegment) -> SegmentEntry:
    """The manifest's entry for an encoded segment."""
    return SegmentEntry(
        plain_size=segment.plain_size,
        stored_size=segment.stored_size,
        compressed=segment.compressed,
        shard_size=segment.shard_size,
        shard_addresses=tuple(segment.addresses),
    )


async def each_segment(
    chunks: AsyncIterator[bytes],
    plan: PutPlan,
    options: PutOptions,
    handle: Callable[[int, bytes], Awaitable[None]],
) -> None:
    """Run ``handle(index, data)`` for every segment of ``chunks``, concurrently.

    At most ``segments_in_flight`` segments are between read and handled, so
    a slow network slows the reader instead of filling memory.
    """
    slots = trio.Semaphore(segments_in_flight(options.lookahead, plan.segment_size))

    async def run(index: int, data: bytes) -> None:
        try:
            await handle(index, data)
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        index = 0
        async for data in cut_segments(chunks, plan.segment_size):
            if index >= plan.segment_limit:
                raise PutFailed(
                    f"more than {plan.segment_limit} segments of {plan.segment_size} bytes: "
                    "pass the size in advance so larger segments are used"
                )
            await slots.acquire()
            nursery.start_soon(run, index, data)
            index += 1


async def finish_put(
    net: FileNetwork,
    options: PutOptions,
    plan: PutPlan,
    segments: tuple[SegmentEntry, ...],
    *,
    created: int,
    started: float,
    shard_copies: int,
    holders: int,
    under_replicated: int,
    contracts: int = 0,
) -> PutResult:
    """Build the manifest of stored `segments`, publish it (unless deferred), and report."""
    policy = options.policy
    total = sum(s.plain_size for s in segments)
    manifest = build_manifest(
        options, policy, plan.key, plan.segment_size, segments, total, created
    )
    encoded = encode_manifest(manifest)
    content_id = manifest_id(encoded)
    accepted = 0
    if options.publish:
        accepted = await net.publish_record(manifest_record_key(content_id), encoded)
        if accepted == 0:
            raise PutFailed("no node accepted the manifest record; the file could not be published")
    return PutResult(
        content_id=content_id,
        size=total,
        segments=len(segments),
        shards=len(segments) * (policy.k + policy.m),
        shard_copies=shard_copies,
        under_replicated_segments=under_replicated,
        distinct_holders=holders,
        manifest_holders=accepted,
        seconds=trio.current_time() - started,
        capability=None if plan.key is None else format_capability(content_id, plan.key),
        created=manifest.created,
        unpublished_manifest=None if options.publish else encoded,
        contracts=contracts,
    )


async def put_file(
    net: FileNetwork,
    chunks: AsyncIterator[bytes],
    options: PutOptions,
    *,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> PutResult:
    """Store the bytes of ``chunks`` as a file; returns its content ID (and capability)."""
    started = trio.current_time()
    policy = options.policy
    plan = plan_put(options)
    storer = _SegmentStorer(net, policy)
    entries: dict[int, SegmentEntry] = {}
    under_replicated = 0
    limiter = trio.CapacityLimiter(options.workers)

    async def encode_and_store(index: int, data: bytes) -> None:
        nonlocal under_replicated
        segment = await trio.to_thread.run_sync(
            lambda: encode_segment(index, data, key=plan.key, codec=plan.codec), limiter=limiter
        )
        with_holder = await storer.store(segment)
        if with_holder < policy.k:
            raise PutFailed(
                f"segment {index}: only {with_holder} of {policy.k + policy.m} shards found a "
                f"holder; {policy.k} are needed to read it back (too few reachable nodes?)"
            )
        if with_holder < policy.k + policy.m:
            under_replicated += 1
        entries[index] = entry_of(segment)
        if on_progress is not None:
            on_progress(segment.plain_size)

    with first_of(PutFailed, ShardTransferError):
        await each_segment(chunks, plan, options, encode_and_store)

    return await finish_put(
        net,
        options,
        plan,
        tuple(entries[i] for i in range(len(entries))),
        created=int(clock()),
        started=started,
        shard_copies=storer.copies,
        holders=len(storer.holders),
        under_replicated=under_replicated,
    )
