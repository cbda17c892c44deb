"""Fetch any k of a segment's k+m shards, from the fastest holders, skipping bad ones.

Theory of operation. A segment can be rebuilt from any k of its shards, so a
reader never needs every holder to cooperate. We start k attempts, one per
shard, data shards first (decoding is cheapest from them), each at the
fastest known holder of that shard. Whenever an attempt fails — the holder
is unreachable, refuses, or serves bytes that do not hash to the shard's
address — the next holder of that shard is tried, or another shard is started
once a shard has no holders left. An attempt that is still running after the
hedge delay gets a backup: one more shard is started elsewhere, and whichever
k shards verify first win; the rest are cancelled. So a slow holder costs at
most one hedge delay and a lying one costs one wasted transfer, and both are
remembered (``HolderStats``) so the next segment avoids them.

No networking here: the caller supplies ``locate`` (who holds this shard)
and ``fetch`` (get these bytes from that peer); this module decides who to
ask, when, and when to give up.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import blake3
import trio

# Exceptions a fetch may raise that mean "this holder did not deliver".
# (Our own bugs, say a ValueError, are not on this list: they must surface,
# not be blamed on a holder and retried elsewhere.)
FetchFailure = (OSError, trio.TooSlowError, EOFError)

# Latency weight of the newest sample in a holder's moving average.
EWMA_WEIGHT = 0.3


class SegmentUnavailable(Exception):
    """Fewer than k shards of a segment could be fetched and verified."""


class ShardHashMismatch(Exception):
    """A holder served bytes that do not hash to the shard's address."""


class NotHeld(Exception):
    """The peer asked does not hold the shard: try the next, without blame."""


@dataclass
class HolderStats:
    """What this reader has learnt about holders: speed, failures, lies."""

    latency: dict[bytes, float] = field(default_factory=dict)
    failures: dict[bytes, int] = field(default_factory=dict)
    liars: set[bytes] = field(default_factory=set)

    def record_success(self, peer: bytes, seconds: float) -> None:
        old = self.latency.get(peer)
        self.latency[peer] = seconds if old is None else old + EWMA_WEIGHT * (seconds - old)

    def record_failure(self, peer: bytes) -> None:
        self.failures[peer] = self.failures.get(peer, 0) + 1

    def record_lie(self, peer: bytes) -> None:
        self.liars.add(peer)

    def rank(self, peers: Sequence[bytes]) -> list[bytes]:
        """Usable peers, most promising first: fewest failures, then fastest.

        A peer we have no measurement for ranks at the median of the known
        ones, so new holders get tried without displacing proven fast ones.
        """
        known = sorted(self.latency.values())
        typical = known[len(known) // 2] if known else 0.0
        usable = [p for p in dict.fromkeys(peers) if p not in self.liars]
        return sorted(usable, key=lambda p: (self.failures.get(p, 0), self.latency.get(p, typical)))

    def hedge_delay(self, floor: float) -> float:
        """How long to let an attempt run before starting a backup."""
        known = sorted(self.latency.values())
        if not known:
            return floor * 4
        p90 = known[min(len(known) - 1, math.ceil(0.9 * len(known)) - 1)]
        return max(floor, 3 * p90)


# locate(i) -> (peers that announced shard i, peers that may hold it): the
# announced ones are asked first.
Locate = Callable[[int], Awaitable[tuple[Sequence[bytes], Sequence[bytes]]]]
Fetch = Callable[[bytes, int], Awaitable[bytes]]


@dataclass
class SegmentFetchReport:
    shards: dict[int, bytes]
    attempts: int
    failures: int
    lies: int
    hedges: int
    not_held: int = 0


async def fetch_segment(
    *,
    addresses: Sequence[bytes],
    k: int,
    locate: Locate,
    fetch: Fetch,
    stats: HolderStats,
    hedge_floor: float = 0.25,
    clock: Callable[[], float] = trio.current_time,
) -> SegmentFetchReport:
    """Return k verified shards of one segment (index → bytes).

    ``locate(i)`` lists peers that announced shard i and peers that may hold
    it; ``fetch(peer, i)`` returns the bytes that peer serves for shard i, or
    raises NotHeld (no blame), ShardHashMismatch (a lie) or a FetchFailure.
    Raises SegmentUnavailable when every holder of enough shards has failed.
    """
    n = len(addresses)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= {n} shards, got k={k}")
    got: dict[int, bytes] = {}
    tried: dict[int, set[bytes]] = {i: set() for i in range(n)}
    exhausted: set[int] = set()
    running: set[int] = set()
    counts = {"attempts": 0, "failures": 0, "lies": 0, "hedges": 0, "not_held": 0}
    next_shard = 0
    # Bumped whenever an attempt ends; the supervisor waits only while it is
    # unchanged, so an attempt that ends while it is busy is never missed.
    generation = 0
    progress = trio.Event()
    done = trio.Event()

    def pick_shard() -> int | None:
        nonlocal next_shard
        while next_shard < n:
            i = next_shard
            next_shard += 1
            return i
        return None

    async def attempt_shard(i: int) -> None:
        """Try holders of shard i in rank order until one delivers or none are left."""
        nonlocal generation
        running.add(i)
        try:
            try:
                announced, possible = await locate(i)
            except FetchFailure:
                announced, possible = [], []
            ranked = stats.rank(announced)
            ranked += [p for p in stats.rank(possible) if p not in ranked]
            while not done.is_set():
                order = [p for p in ranked if p not in tried[i]]
                if not order:
                    exhausted.add(i)
                    return
                peer = order[0]
                tried[i].add(peer)
                counts["attempts"] += 1
                started = clock()
                try:
                    data = await fetch(peer, i)
                    if blake3.blake3(data).digest() != addresses[i]:
                        raise ShardHashMismatch(
                            f"shard {i} from a holder does not hash to its address"
                        )
                except ShardHashMismatch:
                    counts["lies"] += 1
                    stats.record_lie(peer)
                    continue
                except NotHeld:
                    counts["not_held"] += 1
                    continue
                except FetchFailure:
                    counts["failures"] += 1
                    stats.record_failure(peer)
                    continue
                stats.record_success(peer, clock() - started)
                got[i] = data
                if len(got) >= k:
                    done.set()
                return
        finally:
            generation += 1
            running.discard(i)
            progress.set()

    async with trio.open_nursery() as nursery:
        for _ in range(k):
            i = pick_shard()
            if i is not None:
                nursery.start_soon(attempt_shard, i)
        seen = generation
        while not done.is_set():
            with trio.move_on_after(stats.hedge_delay(hedge_floor)) as hedge_timer:
                if generation == seen:
                    progress = trio.Event()
                    await progress.wait()
            seen = generation
            if done.is_set():
                break
            needed = k - len(got)
            # Keep as many shards in flight as are still needed; after a
            # quiet hedge delay, add one more as a backup for the slow ones.
            want = needed + (1 if hedge_timer.cancelled_caught and running else 0)
            started_any = False
            while len(running) < want:
                i = pick_shard()
                if i is None:
                    break
                if hedge_timer.cancelled_caught and len(running) >= needed:
                    counts["hedges"] += 1
                nursery.start_soon(attempt_shard, i)
                running.add(i)
                started_any = True
            if not running and not started_any:
                break
        nursery.cancel_scope.cancel()
    if len(got) < k:
        raise SegmentUnavailable(
            f"only {len(got)} of the {k} shards needed could be fetched and verified "
            f"({len(exhausted)} shards had no working holder, {counts['lies']} bad copies)"
        )
    # Keep exactly k: the decoder needs no more, and extras waste memory.
    chosen = dict(sorted(got.items())[:k])
    return SegmentFetchReport(
        chosen,
        counts["attempts"],
        counts["failures"],
        counts["lies"],
        counts["hedges"],
        counts["not_held"],
    )
