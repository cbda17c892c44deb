"""One segment through every stage: compress, encrypt, erasure-code, address.

Put: plain → LZ4 frame (kept only if smaller) → AES-256-GCM under the
content key (or left as is for public content) → k + m shards → the BLAKE3
address of each shard. Get is the reverse, and trusts nothing it is given:
each shard is checked against its address before use, the ciphertext must
authenticate against the index, flag and size the manifest claims, and the
result must be exactly the plain size.

Pure functions of their arguments, safe to run in worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import blake3

from node.content.compress import compress_segment, decompress_segment
from node.content.encrypt import TAG_SIZE, open_segment, seal_segment
from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.segment import MAX_SEGMENT_SIZE

__all__ = ["EncodedSegment", "decode_segment", "encode_segment"]


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    """A segment ready to store: its shards and what its manifest entry records."""

    index: int
    plain_size: int
    stored_size: int  # bytes that were erasure-coded: the frame or plain, plus any tag
    compressed: bool
    shard_size: int
    shards: list[bytes]
    addresses: list[bytes]  # BLAKE3-256 of each shard, in shard order

    def __repr__(self) -> str:
        return (
            f"EncodedSegment(index={self.index}, plain_size={self.plain_size}, "
            f"stored_size={self.stored_size}, compressed={self.compressed}, "
            f"shard_size={self.shard_size}, shards={len(self.shards)})"
        )


def encode_segment(
    index: int,
    data: bytes,
    *,
    key: bytes | None,
    codec: ErasureCodec,
    compress: bool = True,
) -> EncodedSegment:
    """Segment `index` of a file, encoded; `key` None stores it unencrypted (public)."""
    if len(data) > MAX_SEGMENT_SIZE:
        raise ValueError(f"segment {index} is {len(data)} bytes; the limit is {MAX_SEGMENT_SIZE}")
    stored, compressed = compress_segment(data) if compress else (data, False)
    if key is not None:
        stored = seal_segment(key, index, stored, compressed=compressed, plain_size=len(data))
    shards = codec.encode(stored)
    return EncodedSegment(
        index=index,
        plain_size=len(data),
        stored_size=len(stored),
        compressed=compressed,
        shard_size=codec.shard_size(len(stored)),
        shards=shards,
        addresses=[blake3.blake3(shard).digest() for shard in shards],
    )


def decode_segment(
    shards: Mapping[int, bytes],
    *,
    index: int,
    plain_size: int,
    stored_size: int,
    compressed: bool,
    key: bytes | None,
    codec: ErasureCodec,
    addresses: Sequence[bytes] | None = None,
) -> bytes:
    """The plain bytes of segment `index` from at least k of its shards.

    `plain_size`, `stored_size`, `compressed` and `addresses` come from the
    manifest entry. Raises ContentError naming the segment (and shard) when a
    shard does not match its address, too few or inconsistent shards are
    given, the ciphertext does not authenticate, or the frame does not
    decompress to exactly `plain_size` bytes.
    """
    where = f"segment {index}"
    if not 0 <= plain_size <= MAX_SEGMENT_SIZE:
        raise ContentError(f"{where}: plain size {plain_size} is outside 0..{MAX_SEGMENT_SIZE}")
    overhead = TAG_SIZE if key is not None else 0
    if not compressed and stored_size != plain_size + overhead:
        raise ContentError(
            f"{where}: stored size {stored_size} does not fit an uncompressed segment of "
            f"{plain_size} bytes (expected {plain_size + overhead})"
        )
    if addresses is not None:
        _verify_addresses(where, shards, addresses, codec)
    try:
        stored = codec.decode(shards, stored_size)
    except ContentError as exc:
        raise ContentError(f"{where}: {exc}") from exc
    if key is not None:
        stored = open_segment(key, index, stored, compressed=compressed, plain_size=plain_size)
    if not compressed:
        return stored
    try:
        return decompress_segment(stored, plain_size)
    except ContentError as exc:
        raise ContentError(f"{where}: {exc}") from exc


def _verify_addresses(
    where: str, shards: Mapping[int, bytes], addresses: Sequence[bytes], codec: ErasureCodec
) -> None:
    if len(addresses) != codec.n:
        raise ContentError(f"{where}: {len(addresses)} shard addresses given; k + m is {codec.n}")
    for number, shard in shards.items():
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < codec.n:
            raise ContentError(f"{where}: shard index {number!r} is outside 0..{codec.n - 1}")
        if blake3.blake3(shard).digest() != addresses[number]:
            raise ContentError(f"{where}: shard {number} does not match its BLAKE3 address")
