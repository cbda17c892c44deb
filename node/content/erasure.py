"""Reed-Solomon erasure coding of one stored segment into k + m shards (zfec).

The segment is cut into k equal primary shards — the last padded with zeros
— and zfec computes m parity shards; any k distinct shards rebuild it. A
shard is ceil(len / k) bytes, and the segment's length (the manifest's
stored size) tells the decoder how much padding to drop.

Empty data encodes to k + m empty shards and decodes from any k of them. The
pipeline never produces an empty segment (an empty file has none); the case
is defined so the codec is total, not because it is useful.

Shards are ciphertext (or public plaintext) and the same codec rebuilds a
lost shard without any key, which is what repair relies on.
"""

from __future__ import annotations

from collections.abc import Mapping

import zfec

from node.content.errors import ContentError

__all__ = ["MAX_SHARDS", "ErasureCodec"]

MAX_SHARDS = 256  # zfec works in GF(2^8): at most 256 distinct shards


class ErasureCodec:
    """k-of-(k + m) erasure code; one instance may be used from many threads at once.

    zfec's encoder and decoder only read their coding matrix, and every call
    below hands zfec lists of its own (the decoder reorders the list it is
    given in place).
    """

    def __init__(self, k: int, m: int) -> None:
        for name, value in (("k", k), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"erasure {name} must be an integer, got {value!r}")
        if k < 1:
            raise ValueError(f"erasure k is {k}; at least 1 shard must be needed")
        if m < 0:
            raise ValueError(f"erasure m is {m}; cannot be negative")
        if k + m > MAX_SHARDS:
            raise ValueError(f"erasure k + m = {k + m} is over the {MAX_SHARDS}-shard limit")
        self.k = k
        self.m = m
        self.n = k + m
        self._encoder = zfec.Encoder(k, self.n)
        self._decoder = zfec.Decoder(k, self.n)
        self._parity_numbers = list(range(k, self.n))

    def __repr__(self) -> str:
        return f"ErasureCodec(k={self.k}, m={self.m})"

    def shard_size(self, data_size: int) -> int:
        """The size of every shard of `data_size` bytes of data: ceil(data_size / k)."""
        return -(-data_size // self.k)

    def encode(self, data: bytes | memoryview) -> list[bytes]:
        """The k + m shards of `data`, primaries first, all `shard_size(len(data))` bytes."""
        size = len(data)
        shard_size = self.shard_size(size)
        if shard_size == 0:
            return [b""] * self.n
        view = memoryview(data)
        primaries: list[bytes] = []
        for start in range(0, self.k * shard_size, shard_size):
            piece = view[start : start + shard_size]
            if len(piece) < shard_size:
                primaries.append(bytes(piece) + bytes(shard_size - len(piece)))
            else:
                primaries.append(bytes(piece))
        if not self.m:
            return primaries
        parities: list[bytes] = self._encoder.encode(list(primaries), self._parity_numbers)
        return primaries + parities

    def decode(self, shards: Mapping[int, bytes], data_size: int) -> bytes:
        """The `data_size` bytes encoded as `shards` (shard index -> shard).

        Any k shards of distinct indices will do; more are allowed and the
        primaries among them are preferred. Raises ContentError if fewer than
        k are given, an index is out of range, the shards differ in size, or
        their size is not the one `data_size` implies.
        """
        if isinstance(data_size, bool) or not isinstance(data_size, int) or data_size < 0:
            raise ContentError(f"data size must be a non-negative integer, got {data_size!r}")
        shard_size = self.shard_size(data_size)
        for number, shard in shards.items():
            if isinstance(number, bool) or not isinstance(number, int):
                raise ContentError(f"shard index {number!r} is not an integer")
            if not 0 <= number < self.n:
                raise ContentError(f"shard index {number} is outside 0..{self.n - 1}")
            if len(shard) != shard_size:
                raise ContentError(
                    f"shard {number} is {len(shard)} bytes; {data_size} bytes of data "
                    f"make shards of {shard_size} bytes"
                )
        if len(shards) < self.k:
            raise ContentError(
                f"need {self.k} shards to decode, got {len(shards)}: {sorted(shards)}"
            )
        if shard_size == 0:
            return b""
        if all(number in shards for number in range(self.k)):
            # Fast path: the primaries are the data; nothing to compute.
            blocks = [shards[number] for number in range(self.k)]
        else:
            chosen = sorted(shards)[: self.k]
            blocks = self._decoder.decode([shards[number] for number in chosen], chosen)
        return self._join(blocks, data_size, shard_size)

    @staticmethod
    def _join(blocks: list[bytes], data_size: int, shard_size: int) -> bytes:
        # One copy: the padding is cut off by joining views, not by slicing the join.
        parts: list[bytes | memoryview] = []
        remaining = data_size
        for block in blocks:
            if remaining <= 0:
                break
            parts.append(block if remaining >= shard_size else memoryview(block)[:remaining])
            remaining -= shard_size
        return b"".join(parts)
