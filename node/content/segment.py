"""Cutting a byte stream into fixed-size segments.

Every segment but the last holds exactly `segment_size` bytes, so a segment's
offset in the file is its index times the segment size and a reader can
seek to any one of them. The manifest lists every segment (k + m shard
addresses each), and a manifest travels as one DHT record of at most 1 MiB:
`segment_size_for` grows the segment size for very large files to keep the
list short.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import BinaryIO

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "iter_segments",
    "segment_size_for",
    "validate_segment_size",
]

MIN_SEGMENT_SIZE = 64 << 10
MAX_SEGMENT_SIZE = 64 << 20
DEFAULT_SEGMENT_SIZE = 1 << 20

# At 4+2 a segment costs about 200 bytes of manifest (six 32-byte addresses
# plus sizes and framing), so 4096 segments keep a manifest well under 1 MiB.
MAX_SEGMENTS = 4096


def validate_segment_size(size: int) -> int:
    """`size` if it is a usable segment size; ValueError naming the bounds otherwise."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"segment size must be an integer, got {type(size).__name__}")
    if not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise ValueError(
            f"segment size {size} is outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes"
        )
    return size


def segment_size_for(total_size: int | None, default: int) -> int:
    """The segment size to use for a file of `total_size` bytes.

    `default` when that gives at most `MAX_SEGMENTS` segments (or the size is
    unknown, as for a pipe); otherwise the smallest power of two that does,
    capped at `MAX_SEGMENT_SIZE`. Past 256 GiB even 64 MiB segments number
    more than `MAX_SEGMENTS`; whether such a manifest still fits is for the
    manifest encoder to decide.
    """
    validate_segment_size(default)
    if total_size is None:
        return default
    if isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 0:
        raise ValueError(f"file size must be a non-negative integer, got {total_size!r}")
    if total_size <= default * MAX_SEGMENTS:
        return default
    needed = -(-total_size // MAX_SEGMENTS)
    return min(max(1 << (needed - 1).bit_length(), default), MAX_SEGMENT_SIZE)


def iter_segments(source: BinaryIO, segment_size: int) -> Generator[bytes, None, None]:
    """The segments of `source`, read to its end; an empty source yields none.

    Pipes, sockets and raw files may return fewer bytes than asked for
    before the end, so a segment is read until it is full or the source
    reports end of file.
    """
    validate_segment_size(segment_size)
    while True:
        first = source.read(segment_size)
        if not first:
            return
        if len(first) == segment_size:
            # The common case (buffered files, BytesIO): no join, no copy.
            yield first
            continue
        parts = [first]
        filled = len(first)
        while filled < segment_size:
            more = source.read(segment_size - filled)
            if not more:
                break
            parts.append(more)
            filled += len(more)
        yield b"".join(parts)
        if filled < segment_size:
            return
