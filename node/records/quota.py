"""Per-peer quotas on the records other nodes ask us to keep.

Small DHT records are free: no contract, no payment. What stops one peer
from filling a node's record store (or its CPU, with records that are costly
to validate) is a budget per sending peer: a token bucket of record bytes
and one of record count, refilled continuously. A PUT_VALUE over budget is
refused before it is validated or stored, and counted.

Pure: the caller passes the time. Bounded: at most `max_peers` buckets are
kept; the least recently used is forgotten (it starts full again, which only
favours a peer we have not heard from for a while).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RecordQuota", "RecordQuotaPolicy"]


@dataclass(frozen=True)
class RecordQuotaPolicy:
    # Sized for honest traffic: a neighbour republishing a few thousand
    # records every interval (testnets republish every minute) stays well
    # inside it; a peer pushing records as fast as it can does not.
    records_per_hour: int = 36_000
    bytes_per_hour: int = 256 << 20
    burst_records: int = 5_000
    burst_bytes: int = 64 << 20
    max_peers: int = 4_096

    def __post_init__(self) -> None:
        if min(self.records_per_hour, self.bytes_per_hour, self.burst_records) <= 0:
            raise ValueError("record quotas must be positive")
        if self.burst_bytes <= 0 or self.max_peers <= 0:
            raise ValueError("record quotas must be positive")


@dataclass
class _Bucket:
    records: float
    bytes: float
    at_ms: int


class RecordQuota:
    def __init__(self, policy: RecordQuotaPolicy = RecordQuotaPolicy()) -> None:
        self.policy = policy
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def allow(self, peer: bytes, size: int, now_ms: int) -> bool:
        """Take one record of `size` bytes from `peer`'s budget; False if over it."""
        p = self.policy
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = _Bucket(float(p.burst_records), float(p.burst_bytes), now_ms)
        elapsed_h = max(0, now_ms - bucket.at_ms) / 3_600_000
        bucket.records = min(p.burst_records, bucket.records + elapsed_h * p.records_per_hour)
        bucket.bytes = min(p.burst_bytes, bucket.bytes + elapsed_h * p.bytes_per_hour)
        bucket.at_ms = now_ms
        self._buckets[peer] = bucket
        while len(self._buckets) > p.max_peers:
            self._buckets.popitem(last=False)
        if bucket.records < 1 or bucket.bytes < size:
            return False
        bucket.records -= 1
        bucket.bytes -= size
        return True
