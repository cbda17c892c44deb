"""Per-peer record quotas (node/records/quota.py)."""

from __future__ import annotations

from node.records.quota import RecordQuota, RecordQuotaPolicy

HOUR = 3_600_000


def test_a_burst_is_allowed_then_refused_then_refilled() -> None:
    quota = RecordQuota(RecordQuotaPolicy(records_per_hour=60, burst_records=3))
    assert [quota.allow(b"p", 100, 0) for _ in range(4)] == [True, True, True, False]
    # One record per minute comes back.
    assert quota.allow(b"p", 100, 60_000) is True
    assert quota.allow(b"p", 100, 60_000) is False
    # Other peers have their own budget.
    assert quota.allow(b"q", 100, 60_000) is True


def test_bytes_are_budgeted_too() -> None:
    quota = RecordQuota(RecordQuotaPolicy(bytes_per_hour=1000, burst_bytes=1000))
    assert quota.allow(b"p", 800, 0) is True
    assert quota.allow(b"p", 800, 0) is False  # refused: takes nothing
    assert quota.allow(b"p", 200, 0) is True
    assert quota.allow(b"p", 800, HOUR) is True


def test_forgotten_peers_start_full_and_memory_is_bounded() -> None:
    quota = RecordQuota(RecordQuotaPolicy(burst_records=1, max_peers=2))
    assert quota.allow(b"a", 1, 0)
    assert not quota.allow(b"a", 1, 0)
    quota.allow(b"b", 1, 0)
    quota.allow(b"c", 1, 0)  # "a" is forgotten
    assert quota.allow(b"a", 1, 0)
    assert len(quota._buckets) == 2
