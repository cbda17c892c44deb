"""How big a file's segments are, and how many are in flight at once."""

from __future__ import annotations

from node.content.manifest import MAX_MANIFEST_SIZE
from node.content.segment import MAX_SEGMENT_SIZE, MAX_SEGMENTS, segment_size_for

# Room in a manifest for everything but the segment table (name, tags,
# description and the fixed fields stay well under this).
_MANIFEST_HEADER_ROOM = 8 << 10

# Every segment costs each of its shards a lookup, a stream and a provider
# announcement (about a hundred RPCs per segment), and on a small machine that,
# not bandwidth, bounds throughput. Measured, 64 MiB put on a 6-node testnet
# (2026-11-24): 1 MiB segments 19.6 MB/s, 4 MiB 56.9, 8 MiB 73.2. So a file of
# known size gets segments of at least 1/16 of it, up to 8 MiB; small files
# keep the default, and the manifest's segment cap can grow them further.
BULK_SEGMENTS = 16
BULK_SEGMENT_MAX = 8 << 20
# Plaintext bytes a put or get keeps between "read" and "done" (shards add
# half as much again), whatever the segment size.
IN_FLIGHT_BUDGET = 24 << 20


def max_segments(shards_per_segment: int) -> int:
    """How many segments a manifest can list with this many shards each.

    A segment's entry is its shard addresses (34 bytes each with their
    protobuf envelope) plus about 24 bytes of sizes and flags; the manifest
    must stay under its 1 MiB cap, so 10+4 files list fewer segments than 4+2.
    """
    per_segment = 34 * shards_per_segment + 24
    return min(MAX_SEGMENTS, (MAX_MANIFEST_SIZE - _MANIFEST_HEADER_ROOM) // per_segment)


def choose_segment_size(size_hint: int | None, default: int, shards_per_segment: int = 6) -> int:
    size = segment_size_for(size_hint, default)
    if size_hint is None:
        return size
    if size < BULK_SEGMENT_MAX:
        wanted = -(-size_hint // BULK_SEGMENTS)
        size = max(size, min(1 << max(wanted - 1, 0).bit_length(), BULK_SEGMENT_MAX))
    limit = max_segments(shards_per_segment)
    while -(-size_hint // size) > limit and size < MAX_SEGMENT_SIZE:
        size *= 2
    return size


def segments_in_flight(lookahead: int, segment_size: int) -> int:
    """At most ``lookahead``, fewer for large segments; never less than two."""
    return max(2, min(lookahead, IN_FLIGHT_BUDGET // segment_size))
