"""Fetching k of k+m shards: fastest holders first, liars and laggards skipped."""

from __future__ import annotations

from collections.abc import Sequence

import blake3
import pytest
import trio
import trio.testing

from node.files.segment_fetch import (
    HolderStats,
    NotHeld,
    SegmentUnavailable,
    fetch_segment,
)

SHARDS = [bytes([i]) * 100 for i in range(6)]
ADDRESSES = [blake3.blake3(s).digest() for s in SHARDS]
PEERS = [f"peer{i}".encode() for i in range(12)]


class Network:
    """Scripted holders: who holds what, how slow each is, who lies or fails."""

    def __init__(self) -> None:
        self.holders: dict[int, list[bytes]] = {i: [PEERS[i]] for i in range(6)}
        self.delay: dict[bytes, float] = {}
        self.liars: set[bytes] = set()
        self.down: set[bytes] = set()
        self.calls: list[tuple[bytes, int]] = []
        self.maybe: dict[int, list[bytes]] = {}

    async def locate(self, i: int) -> tuple[Sequence[bytes], Sequence[bytes]]:
        return self.holders[i], self.maybe.get(i, [])

    async def fetch(self, peer: bytes, i: int) -> bytes:
        self.calls.append((peer, i))
        await trio.sleep(self.delay.get(peer, 0.01))
        if peer in self.down:
            raise OSError("connection refused")
        if peer not in self.holders[i]:
            raise NotHeld("not here")
        if peer in self.liars:
            return b"not the shard"
        return SHARDS[i]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def run(net: Network, stats: HolderStats | None = None, k: int = 4):  # type: ignore[no-untyped-def]
    return await fetch_segment(
        addresses=ADDRESSES, k=k, locate=net.locate, fetch=net.fetch, stats=stats or HolderStats()
    )


async def test_healthy_holders_give_the_data_shards(clock: trio.testing.MockClock) -> None:
    net = Network()
    report = await run(net)
    assert report.shards == {i: SHARDS[i] for i in range(4)}
    assert report.attempts == 4 and report.failures == report.lies == 0


async def test_a_down_holder_is_replaced_by_a_parity_shard(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.down.add(PEERS[1])
    report = await run(net)
    assert set(report.shards) == {0, 2, 3, 4}
    assert report.failures == 1


async def test_a_lying_holder_is_skipped_and_remembered(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.holders[0] = [PEERS[0], PEERS[6]]
    net.liars.add(PEERS[0])
    stats = HolderStats(latency={PEERS[0]: 0.001, PEERS[6]: 0.5})
    report = await run(net, stats)
    assert report.shards[0] == SHARDS[0]
    assert report.lies == 1
    assert PEERS[0] in stats.liars
    assert PEERS[0] not in stats.rank([PEERS[0], PEERS[6]])


async def test_a_slow_holder_is_hedged_not_waited_on(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.delay[PEERS[2]] = 3600.0
    start = trio.current_time()
    report = await run(net)
    assert set(report.shards) == {0, 1, 3, 4}
    assert report.hedges >= 1
    assert trio.current_time() - start < 10


async def test_fastest_holder_is_asked_first(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.holders[0] = [PEERS[7], PEERS[8]]
    stats = HolderStats(latency={PEERS[7]: 0.9, PEERS[8]: 0.01})
    await run(net, stats)
    assert (PEERS[8], 0) in net.calls and (PEERS[7], 0) not in net.calls


async def test_too_few_working_holders_is_a_clear_error(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.down.update(PEERS[:3])
    with pytest.raises(SegmentUnavailable, match="only 3 of the 4 shards"):
        await run(net)


async def test_no_holders_at_all_is_unavailable(clock: trio.testing.MockClock) -> None:
    net = Network()
    net.holders = {i: [] for i in range(6)}
    with pytest.raises(SegmentUnavailable, match="only 0 of the 4"):
        await run(net)


async def test_k_must_fit_the_shard_count() -> None:
    with pytest.raises(ValueError):
        await run(Network(), k=7)


def test_rank_puts_unknown_peers_at_the_median() -> None:
    stats = HolderStats(latency={PEERS[0]: 0.1, PEERS[1]: 0.2, PEERS[2]: 0.3})
    # Known: 0.1, 0.2, 0.3, so an unknown peer ranks as 0.2: between them.
    ranked = stats.rank([PEERS[2], PEERS[9], PEERS[0]])
    assert ranked[0] == PEERS[0] and ranked[2] == PEERS[2]
    stats.record_failure(PEERS[0])
    assert stats.rank([PEERS[0], PEERS[2]]) == [PEERS[2], PEERS[0]]


async def test_announced_holders_are_asked_before_possible_ones(
    clock: trio.testing.MockClock,
) -> None:
    net = Network()
    # A fast peer that merely might hold shard 0 is asked only after the
    # announced holder, and not holding a shard is no mark against a peer.
    net.maybe[0] = [PEERS[9]]
    stats = HolderStats(latency={PEERS[9]: 0.001, PEERS[0]: 0.5})
    report = await run(net, stats)
    assert (PEERS[9], 0) not in net.calls
    assert report.failures == 0


async def test_a_peer_without_the_shard_is_passed_over_without_blame(
    clock: trio.testing.MockClock,
) -> None:
    net = Network()
    net.holders[0] = []
    net.maybe[0] = [PEERS[9], PEERS[0]]
    net.holders[0] = [PEERS[0]]
    net.maybe[0] = [PEERS[9]]
    net.down.add(PEERS[0])
    stats = HolderStats()
    report = await run(net, stats)
    assert report.not_held == 1 and report.failures == 1
    assert PEERS[9] not in stats.failures
