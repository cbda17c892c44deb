"""Versioned protocol IDs and their wire limits. A breaking change gets a new ID."""

from __future__ import annotations

from dataclasses import dataclass

PING = "/zhtp/ping/1.0.0"
KAD = "/zhtp/kad/1.0.0"
STORE = "/zhtp/store/1.0.0"
MARKET = "/zhtp/market/1.0.0"

# Served by py-libp2p itself so stock libp2p tools work against a node.
IPFS_PING = "/ipfs/ping/1.0.0"
IDENTIFY = "/ipfs/id/1.0.0"


@dataclass(frozen=True)
class WireLimits:
    """Per-protocol framing limits (see protocols/framing.py)."""

    max_frame: int
    idle_timeout: float
    max_streams_per_peer: int


PING_LIMITS = WireLimits(max_frame=4 * 1024, idle_timeout=10.0, max_streams_per_peer=8)
# A Kademlia frame must carry the largest record plus its envelope and up to
# k closer peers with their addresses; 1 MiB records are the default maximum.
KAD_LIMITS = WireLimits(max_frame=2 * 1024 * 1024, idle_timeout=30.0, max_streams_per_peer=32)
# Shards travel in chunks of at most 256 KiB; the frame cap leaves room for
# the envelope. Transfers are flow-controlled by acknowledgements, so an idle
# stream is a dead peer, not a slow disk.
STORE_LIMITS = WireLimits(max_frame=256 * 1024 + 1024, idle_timeout=30.0, max_streams_per_peer=16)
# One request and one response per stream. The largest messages are contract
# records (the terms and up to 4096 transitions: at most 1 MiB, like the
# node's own record, plus a few bytes of envelope per transition) and audit
# proofs (at most 1 MiB of leaves plus 64 paths of 40 hashes, about 86 KiB);
# 1.25 MiB leaves room for either.
MARKET_LIMITS = WireLimits(max_frame=1_310_720, idle_timeout=30.0, max_streams_per_peer=8)
