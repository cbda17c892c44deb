"""The Kademlia keyspace: 256-bit ids and XOR distance, as in the libp2p spec.

A kad id is SHA-256 of the raw key (a PeerID's multihash bytes, or a record
key), so a stock libp2p node computes the same distances we do.
"""

from __future__ import annotations

import hashlib
import random

KEY_BYTES = 32
KEY_BITS = 256

_ALL_ONES = (1 << KEY_BITS) - 1


def kad_id(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def _as_int(key: bytes) -> int:
    if len(key) != KEY_BYTES:
        raise ValueError(f"kad id must be {KEY_BYTES} bytes, got {len(key)}")
    return int.from_bytes(key, "big")


def distance(a: bytes, b: bytes) -> int:
    return _as_int(a) ^ _as_int(b)


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Leading bits ``a`` and ``b`` share; ``KEY_BITS`` when they are equal."""
    return KEY_BITS - distance(a, b).bit_length()


def random_id_at_prefix(local: bytes, prefix_len: int, rng: random.Random) -> bytes:
    """A random kad id sharing exactly ``prefix_len`` leading bits with ``local``.

    Such an id falls in bucket ``prefix_len`` of ``local``'s routing table,
    which is what a bucket refresh looks up.
    """
    if not 0 <= prefix_len < KEY_BITS:
        raise ValueError(f"prefix_len must be in [0, {KEY_BITS}), got {prefix_len}")
    local_int = _as_int(local)
    flip = 1 << (KEY_BITS - 1 - prefix_len)
    low = flip - 1
    high = _ALL_ONES & ~(flip | low)
    value = (local_int & high) | (~local_int & flip) | (rng.getrandbits(KEY_BITS) & low)
    return value.to_bytes(KEY_BYTES, "big")


def random_key_at_prefix(
    local: bytes, prefix_len: int, rng: random.Random, *, max_attempts: int = 1 << 17
) -> bytes | None:
    """A random raw key whose kad id shares exactly ``prefix_len`` bits with ``local``.

    FIND_NODE carries a raw key that the remote hashes, so a bucket refresh
    sent over the wire needs a preimage, not the id from
    ``random_id_at_prefix``. Finding one takes about ``2 ** (prefix_len + 1)``
    hashes, hence the bound; None when it is exhausted. libp2p only refreshes
    the first 16 buckets for the same reason.
    """
    if not 0 <= prefix_len < KEY_BITS:
        raise ValueError(f"prefix_len must be in [0, {KEY_BITS}), got {prefix_len}")
    local_int = _as_int(local)
    for _ in range(max_attempts):
        raw = rng.getrandbits(KEY_BITS).to_bytes(KEY_BYTES, "big")
        found = int.from_bytes(kad_id(raw), "big") ^ local_int
        if KEY_BITS - found.bit_length() == prefix_len:
            return raw
    return None
