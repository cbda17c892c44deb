"""Which nodes hold which shard of a segment (pure; no I/O).

Each shard belongs with the nodes closest to its address in the Kademlia
keyspace, because that is where any reader (or a repairer, without the
owner) will look for it. Within one segment we also want every shard on a
different node, so that losing one node costs at most one shard of the
segment. The two goals conflict only in small networks: we take, for each
shard, the closest candidates not yet used by this segment, and fall back to
reusing a node only when the segment has more shard slots than candidates.
"""

from __future__ import annotations

from collections.abc import Sequence


def choose_holders(
    candidates: Sequence[Sequence[bytes]], holders_per_shard: int
) -> list[list[bytes]]:
    """For each shard, up to ``holders_per_shard`` distinct node IDs.

    ``candidates[i]`` lists node IDs for shard i, closest to its address
    first. Shards are served in order of how few fresh candidates they have,
    so a shard with one possible fresh node is not robbed of it by a shard
    with many.
    """
    if holders_per_shard < 1:
        raise ValueError("holders_per_shard must be at least 1")
    chosen: list[list[bytes]] = [[] for _ in candidates]
    used: set[bytes] = set()
    for _round in range(holders_per_shard):
        order = sorted(
            range(len(candidates)),
            key=lambda i: (sum(1 for c in candidates[i] if c not in used), i),
        )
        for i in order:
            fresh = next((c for c in candidates[i] if c not in used), None)
            if fresh is not None:
                chosen[i].append(fresh)
                used.add(fresh)
    # Not enough distinct nodes: reuse the closest nodes this shard does not
    # already have, so every shard still gets as many holders as possible.
    for i, mine in enumerate(chosen):
        for c in candidates[i]:
            if len(mine) >= holders_per_shard:
                break
            if c not in mine:
                mine.append(c)
    return chosen
