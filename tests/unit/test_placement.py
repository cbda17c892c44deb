"""Shard placement: closest nodes first, one shard per node while nodes last."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.files.placement import choose_holders

NODES = [bytes([i]) for i in range(40)]


def test_each_shard_gets_its_closest_unused_node() -> None:
    candidates = [[NODES[0], NODES[1]], [NODES[0], NODES[2]], [NODES[3]]]
    assert choose_holders(candidates, 1) == [[NODES[0]], [NODES[2]], [NODES[3]]]


def test_a_shard_with_one_fresh_candidate_keeps_it() -> None:
    # Shard 1 can only go to node 0; shard 0 has alternatives.
    candidates = [[NODES[0], NODES[1], NODES[2]], [NODES[0]]]
    assert choose_holders(candidates, 1) == [[NODES[1]], [NODES[0]]]


def test_small_network_reuses_nodes_rather_than_leaving_shards_homeless() -> None:
    candidates = [[NODES[0], NODES[1]] for _ in range(6)]
    chosen = choose_holders(candidates, 1)
    assert all(len(h) == 1 for h in chosen)
    assert {h[0] for h in chosen} == {NODES[0], NODES[1]}


def test_two_holders_per_shard_are_distinct() -> None:
    candidates = [NODES[i : i + 5] for i in range(6)]
    for holders in choose_holders(candidates, 2):
        assert len(holders) == 2 and holders[0] != holders[1]


def test_no_candidates_means_no_holders() -> None:
    assert choose_holders([[], []], 2) == [[], []]


def test_holders_per_shard_must_be_positive() -> None:
    with pytest.raises(ValueError):
        choose_holders([[NODES[0]]], 0)


@given(
    st.lists(st.lists(st.sampled_from(NODES), unique=True, max_size=10), min_size=1, max_size=16),
    st.integers(1, 3),
)
def test_placement_invariants(candidates: list[list[bytes]], per_shard: int) -> None:
    chosen = choose_holders(candidates, per_shard)
    assert len(chosen) == len(candidates)
    distinct = {c for cands in candidates for c in cands}
    for cands, holders in zip(candidates, chosen, strict=True):
        # Only candidates of that shard, no duplicates, as many as possible.
        assert set(holders) <= set(cands)
        assert len(holders) == len(set(holders)) == min(per_shard, len(cands))
    # While there are enough distinct nodes, no node holds two shards.
    if len(distinct) >= len(candidates) * per_shard and all(
        len(c) >= len(candidates) * per_shard for c in candidates
    ):
        flat = [h for holders in chosen for h in holders]
        assert len(flat) == len(set(flat))
