"""Get a file: resolve its manifest, fetch any k shards per segment, stream it out.

Segments are fetched ahead of the writer (at most ``lookahead`` at a time,
which bounds memory whatever the file size), each from the fastest holders
that prove honest (see segment_fetch.py), decoded in worker threads, and
written strictly in order. A segment that cannot be rebuilt or does not
authenticate stops the read with an error naming it; the caller never gets
bytes that were not verified.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from node.content.address import Reference
from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.manifest import (
    EncryptionScheme,
    Manifest,
    ManifestError,
    decode_manifest,
    manifest_id,
    manifest_record_key,
)
from node.content.segment_codec import decode_segment
from node.files.failures import first_of
from node.files.network import FileNetwork, ShardBadCopy, ShardNotHeld, ShardTransferError
from node.files.segment_fetch import (
    HolderStats,
    NotHeld,
    SegmentFetchReport,
    SegmentUnavailable,
    ShardHashMismatch,
    fetch_segment,
)
from node.files.sizing import segments_in_flight
from protocols.kad.messages import PeerInfo


class GetFailed(Exception):
    """The file could not be read; the message names what failed."""


class NotFound(GetFailed):
    """No node has the manifest of this content ID."""


@dataclass
class GetReport:
    bytes_written: int = 0
    segments: int = 0
    shard_fetches: int = 0
    failed_fetches: int = 0
    bad_copies: int = 0
    hedges: int = 0


async def resolve(net: FileNetwork, ref: Reference, *, need_key: bool = True) -> Manifest:
    """The manifest named by ``ref``, checked against its ID and against the key we hold."""
    raw = await net.find_record(manifest_record_key(ref.digest))
    if raw is None:
        raise NotFound("no node has the manifest for this content ID")
    # The DHT layer checks the hash too; checking again here keeps this
    # function honest whatever FileNetwork implementation it is given.
    if manifest_id(raw) != ref.digest:
        raise GetFailed("the manifest received does not hash to the content ID")
    try:
        manifest = decode_manifest(raw)
    except ManifestError as error:
        raise GetFailed(f"the manifest is invalid: {error}") from error
    encrypted = manifest.encryption.scheme is not EncryptionScheme.NONE
    if encrypted and ref.key is None and need_key:
        raise GetFailed(
            "this content is encrypted: reading it needs its capability (zhtp://<cid>#<key>), "
            "not the bare content ID"
        )
    return manifest


async def fetch_shards(
    net: FileNetwork, addresses: Sequence[bytes], k: int, stats: HolderStats
) -> SegmentFetchReport:
    """Any k verified shards of one segment, from whoever holds them (see segment_fetch)."""
    holders: dict[int, list[PeerInfo]] = {}

    async def locate(i: int) -> tuple[list[bytes], list[bytes]]:
        announced, possible = await net.shard_holders(addresses[i])
        holders[i] = [*announced, *possible]
        return [p.peer_id for p in announced], [p.peer_id for p in possible]

    async def fetch(peer_id: bytes, i: int) -> bytes:
        peer = next(p for p in holders[i] if p.peer_id == peer_id)
        try:
            return await net.fetch_shard(peer, addresses[i])
        except ShardNotHeld as error:
            raise NotHeld(str(error)) from error
        except ShardBadCopy as error:
            raise ShardHashMismatch(str(error)) from error
        except ShardTransferError as error:
            raise OSError(str(error)) from error

    return await fetch_segment(addresses=addresses, k=k, locate=locate, fetch=fetch, stats=stats)


async def read_file(
    net: FileNetwork,
    manifest: Manifest,
    key: bytes | None,
    write: Callable[[bytes], Awaitable[None]],
    *,
    stats: HolderStats | None = None,
    lookahead: int = 4,
    workers: int = 2,
) -> GetReport:
    """Fetch, verify, decode and ``write`` every segment in order."""
    if manifest.encryption.scheme is EncryptionScheme.NONE:
        key = None
    stats = stats or HolderStats()
    codec = ErasureCodec(manifest.codec.k, manifest.codec.m)
    report = GetReport()
    limiter = trio.CapacityLimiter(workers)
    slots = trio.Semaphore(segments_in_flight(lookahead, manifest.segment_size))
    n = len(manifest.segments)
    results: list[bytes | None] = [None] * n
    ready = [trio.Event() for _ in range(n)]

    async def rebuild(index: int) -> None:
        entry = manifest.segments[index]
        try:
            fetched = await fetch_shards(net, entry.shard_addresses, manifest.codec.k, stats)
        except SegmentUnavailable as error:
            raise GetFailed(f"segment {index}: {error}") from error
        report.shard_fetches += fetched.attempts
        report.failed_fetches += fetched.failures
        report.bad_copies += fetched.lies
        report.hedges += fetched.hedges
        try:
            # Shards were verified against their addresses as they arrived.
            results[index] = await trio.to_thread.run_sync(
                lambda: decode_segment(
                    fetched.shards,
                    index=index,
                    plain_size=entry.plain_size,
                    stored_size=entry.stored_size,
                    compressed=entry.compressed,
                    key=key,
                    codec=codec,
                ),
                limiter=limiter,
            )
        except ContentError as error:
            raise GetFailed(str(error)) from error
        ready[index].set()

    async def writer() -> None:
        for index in range(n):
            await ready[index].wait()
            data = results[index]
            results[index] = None
            assert data is not None
            await write(data)
            report.bytes_written += len(data)
            report.segments += 1
            slots.release()

    with first_of(GetFailed, OSError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for index in range(n):
                await slots.acquire()
                nursery.start_soon(rebuild, index)
    if report.bytes_written != manifest.size:
        raise GetFailed(f"wrote {report.bytes_written} bytes; the manifest says {manifest.size}")
    return report
