"""Multiaddrs received from peers: which bytes are a usable address."""

from __future__ import annotations

import functools

import multiaddr

# Longer than any address we or libp2p would ever advertise.
MAX_ADDR_BYTES = 256


def valid_multiaddr(raw: bytes) -> bool:
    """True for bytes that parse as a multiaddr and encode back to themselves."""
    if not raw or len(raw) > MAX_ADDR_BYTES:
        return False
    return _round_trips(raw)


# The same few addresses arrive in every lookup response and every pong, and
# parsing them was ~25% of a lookup's CPU; the answer for given bytes never
# changes, so it is cached.
@functools.lru_cache(maxsize=8192)
def _round_trips(raw: bytes) -> bool:
    # multiaddr 0.2.0 keeps bytes unparsed until printed, and prints some
    # truncated input anyway; only bytes that survive a round trip are valid.
    try:
        text = str(multiaddr.Multiaddr(raw))
        return bytes(multiaddr.Multiaddr(text).to_bytes()) == raw
    except Exception:  # the multiaddr package raises many unrelated types on junk
        return False
