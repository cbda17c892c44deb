"""LZ4 frame compression of one segment, and its hostile-input-safe inverse.

Compression runs before encryption (ciphertext does not compress) and is
skipped when it does not shrink the segment, which the manifest records per
segment. The frame carries no content checksum: a segment's integrity is
already checked by the BLAKE3 address of every shard and, when encrypted,
by the AES-GCM tag.

A frame read back comes from the network. `decompress_segment` is told how
large the output must be (from the manifest) and never produces more, so a
small frame that expands to gigabytes costs at most `expected_size` bytes.
"""

from __future__ import annotations

import lz4.frame

from node.content.errors import ContentError
from node.content.segment import MAX_SEGMENT_SIZE

__all__ = ["compress_segment", "decompress_segment"]

# One block covers a whole segment up to 4 MiB: incompressible data is
# detected about three times faster than with the 64 KiB default, for the
# same ratio. The plain size is in the manifest, so the frame need not
# store it.
_BLOCK_SIZE = lz4.frame.BLOCKSIZE_MAX4MB


def compress_segment(data: bytes) -> tuple[bytes, bool]:
    """`(frame, True)`, or `(data, False)` when compression would not shrink `data`."""
    frame: bytes = lz4.frame.compress(
        data, block_size=_BLOCK_SIZE, block_linked=False, store_size=False
    )
    if len(frame) >= len(data):
        return data, False
    return frame, True


def decompress_segment(data: bytes | memoryview, expected_size: int) -> bytes:
    """The `expected_size` bytes that the LZ4 frame `data` holds.

    Raises ContentError if the frame is corrupt, truncated, followed by other
    bytes, or decompresses to any size other than `expected_size`.
    """
    # The decompressor allocates its whole output buffer up front.
    if not 0 <= expected_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"expected size {expected_size} is outside 0..{MAX_SEGMENT_SIZE}")
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        plain: bytes = decompressor.decompress(data, max_length=expected_size)
    except RuntimeError as exc:  # lz4 reports every malformed frame this way
        raise ContentError(f"corrupt lz4 frame: {exc}") from exc
    if not decompressor.eof:
        if decompressor.needs_input:
            raise ContentError(
                f"lz4 frame is truncated after {len(plain)} bytes of output "
                f"(expected {expected_size})"
            )
        raise ContentError(f"lz4 frame expands beyond the expected {expected_size} bytes")
    if decompressor.unused_data:
        raise ContentError(
            f"lz4 frame is followed by {len(decompressor.unused_data)} unexpected bytes"
        )
    if len(plain) != expected_size:
        raise ContentError(f"lz4 frame holds {len(plain)} bytes, expected {expected_size}")
    return plain
