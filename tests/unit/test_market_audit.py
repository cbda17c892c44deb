"""Proof-of-storage audits: round trips, golden vectors, and every proof that must fail.

The tree is cross-checked against a small recursive reference written here
from the documented format (RFC 6962 shape: split at the largest power of two
below n), the same definition that made tests/vectors/audit/merkle.json.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.market.audit import (
    DEFAULT_LEAF_SIZE,
    MAX_CHALLENGE_LEAVES,
    MAX_LEAF_SIZE,
    MIN_LEAF_SIZE,
    NONCE_SIZE,
    AuditFailed,
    Challenge,
    Proof,
    ProofItem,
    leaf_count,
    make_challenge,
    merkle_root,
    proof_size_bytes,
    prove,
    verify_proof,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "audit" / "merkle.json"
MIB = 1 << 20
SMALL = 64  # the smallest leaf size, so small shards have many leaves


# --- an independent reference -------------------------------------------------


def _h(data: bytes) -> bytes:
    digest: bytes = blake3.blake3(data).digest()
    return digest


def ref_leaf_hash(index: int, leaf: bytes) -> bytes:
    return _h(b"\x00" + index.to_bytes(8, "big") + leaf)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _h(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:]))


def _ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return [*_ref_path(m, hashes[:k]), _mth(hashes[k:])]
    return [*_ref_path(m - k, hashes[k:]), _mth(hashes[:k])]


def ref_leaves(data: bytes, leaf_size: int) -> list[bytes]:
    return [data[i : i + leaf_size] for i in range(0, len(data), leaf_size)] or [b""]


def ref_hashes(data: bytes, leaf_size: int) -> list[bytes]:
    return [ref_leaf_hash(i, leaf) for i, leaf in enumerate(ref_leaves(data, leaf_size))]


def ref_root(data: bytes, leaf_size: int) -> bytes:
    header = b"\x02" + len(data).to_bytes(8, "big") + leaf_size.to_bytes(8, "big")
    return _h(header + _mth(ref_hashes(data, leaf_size)))


# --- helpers ------------------------------------------------------------------


def shard(size: int, seed: str = "test shard") -> bytes:
    """Deterministic bytes: the BLAKE3 extended output of ``seed``."""
    data: bytes = blake3.blake3(seed.encode()).digest(length=size) if size else b""
    return data


def nonce(label: str = "nonce") -> bytes:
    return _h(label.encode())


def all_leaves(size: int, leaf_size: int) -> Challenge:
    count = min(leaf_count(size, leaf_size), MAX_CHALLENGE_LEAVES)
    return Challenge(nonce=nonce(), leaf_indices=tuple(range(count)))


def audit(data: bytes, challenge: Challenge, proof: Proof, leaf_size: int = SMALL) -> None:
    verify_proof(merkle_root(data, leaf_size), len(data), leaf_size, challenge, proof)


def replace_item(proof: Proof, position: int, **changes: Any) -> Proof:
    items = list(proof.items)
    items[position] = replace(items[position], **changes)
    return replace(proof, items=tuple(items))


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.fixture
def honest() -> tuple[bytes, Challenge, Proof]:
    """Ten leaves of 64 bytes (the last short), four of them challenged."""
    data = shard(9 * SMALL + 10)
    challenge = Challenge(nonce=nonce(), leaf_indices=(1, 4, 8, 9))
    return data, challenge, prove(data, challenge, SMALL)


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize("leaf_size", [SMALL, DEFAULT_LEAF_SIZE])
@pytest.mark.parametrize(
    "size",
    [
        pytest.param(lambda ls: 0, id="empty"),
        pytest.param(lambda ls: 1, id="one-byte"),
        pytest.param(lambda ls: ls - 1, id="leaf-minus-one"),
        pytest.param(lambda ls: ls, id="one-leaf"),
        pytest.param(lambda ls: ls + 1, id="leaf-plus-one"),
        pytest.param(lambda ls: 3 * ls, id="three-leaves"),
        pytest.param(lambda ls: MIB, id="one-mebibyte"),
    ],
)
def test_round_trip(size: Any, leaf_size: int) -> None:
    data = shard(size(leaf_size))
    challenge = all_leaves(len(data), leaf_size)
    proof = prove(data, challenge, leaf_size)
    assert proof.nonce == challenge.nonce
    assert [item.index for item in proof.items] == list(challenge.leaf_indices)
    audit(data, challenge, proof, leaf_size)
    assert merkle_root(data, leaf_size) == ref_root(data, leaf_size)


def test_random_challenge_round_trip_on_one_mebibyte() -> None:
    data = shard(MIB)
    root = merkle_root(data)
    for count in (1, 16, MAX_CHALLENGE_LEAVES):
        challenge = make_challenge(len(data), DEFAULT_LEAF_SIZE, count)
        verify_proof(root, len(data), DEFAULT_LEAF_SIZE, challenge, prove(data, challenge))


@settings(max_examples=200)
@given(
    data=st.binary(max_size=40 * SMALL),
    leaf_size=st.sampled_from([64, 128, 256]),
    draw=st.data(),
)
def test_round_trip_property(data: bytes, leaf_size: int, draw: st.DataObject) -> None:
    leaves = leaf_count(len(data), leaf_size)
    indices = draw.draw(
        st.lists(
            st.integers(0, leaves - 1),
            min_size=1,
            max_size=min(leaves, MAX_CHALLENGE_LEAVES),
            unique=True,
        )
    )
    challenge = Challenge(
        nonce=draw.draw(st.binary(min_size=32, max_size=32)), leaf_indices=tuple(indices)
    )
    proof = prove(data, challenge, leaf_size)
    audit(data, challenge, proof, leaf_size)

    hashes = ref_hashes(data, leaf_size)
    assert merkle_root(data, leaf_size) == ref_root(data, leaf_size)
    for item in proof.items:
        assert item.leaf == ref_leaves(data, leaf_size)[item.index]
        assert list(item.path) == _ref_path(item.index, hashes)


@settings(max_examples=100)
@given(data=st.binary(min_size=1, max_size=12 * SMALL), draw=st.data())
def test_any_flipped_bit_fails(data: bytes, draw: st.DataObject) -> None:
    leaves = leaf_count(len(data), SMALL)
    challenge = Challenge(nonce=nonce(), leaf_indices=tuple(range(leaves)))
    proof = prove(data, challenge, SMALL)
    position = draw.draw(st.integers(0, leaves - 1))
    item = proof.items[position]
    targets = ["leaf"] + (["path"] if item.path else [])
    target = draw.draw(st.sampled_from(targets))
    bit = 1 << draw.draw(st.integers(0, 7))
    if target == "leaf":
        at = draw.draw(st.integers(0, len(item.leaf) - 1))
        leaf = item.leaf[:at] + bytes([item.leaf[at] ^ bit]) + item.leaf[at + 1 :]
        bad = replace_item(proof, position, leaf=leaf)
    else:
        node = draw.draw(st.integers(0, len(item.path) - 1))
        at = draw.draw(st.integers(0, 31))
        hashed = item.path[node]
        changed = hashed[:at] + bytes([hashed[at] ^ bit]) + hashed[at + 1 :]
        path = (*item.path[:node], changed, *item.path[node + 1 :])
        bad = replace_item(proof, position, path=path)
    with pytest.raises(AuditFailed, match="does not reach the root"):
        audit(data, challenge, bad)


# --- the tree format ----------------------------------------------------------


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_golden_vector(vector: dict[str, Any]) -> None:
    data = shard(vector["data_size"], vector["data_seed"])
    leaf_size = vector["leaf_size"]
    root = bytes.fromhex(vector["root"])
    assert merkle_root(data, leaf_size) == root
    assert leaf_count(len(data), leaf_size) == vector["leaf_count"]

    challenge = Challenge(
        nonce=bytes.fromhex(vector["challenge"]["nonce"]),
        leaf_indices=tuple(vector["challenge"]["leaf_indices"]),
    )
    proof = prove(data, challenge, leaf_size)
    assert len(proof.items) == len(vector["proof"])
    for item, expected in zip(proof.items, vector["proof"], strict=True):
        assert item.index == expected["index"]
        assert len(item.leaf) == expected["leaf_size"]
        assert ref_leaf_hash(item.index, item.leaf).hex() == expected["leaf_hash"]
        assert [node.hex() for node in item.path] == expected["path"]

    # The verifier accepts a proof assembled from the vector alone.
    from_vector = Proof(
        nonce=challenge.nonce,
        items=tuple(
            ProofItem(
                index=expected["index"],
                leaf=ref_leaves(data, leaf_size)[expected["index"]],
                path=tuple(bytes.fromhex(node) for node in expected["path"]),
            )
            for expected in vector["proof"]
        ),
    )
    verify_proof(root, len(data), leaf_size, challenge, from_vector)


def test_empty_shard_has_one_empty_leaf() -> None:
    assert leaf_count(0, SMALL) == 1
    proof = prove(b"", Challenge(nonce(), (0,)), SMALL)
    assert proof.items == (ProofItem(index=0, leaf=b"", path=()),)


def test_leaf_count() -> None:
    assert [leaf_count(size, SMALL) for size in (0, 1, 63, 64, 65, 128, 129)] == [
        1,
        1,
        1,
        1,
        2,
        2,
        3,
    ]
    assert leaf_count(MIB) == 256


def test_root_commits_to_size_and_leaf_size() -> None:
    data = shard(4 * SMALL)
    root = merkle_root(data, SMALL)
    assert merkle_root(data[:-1], SMALL) != root
    assert merkle_root(data + b"\x00", SMALL) != root
    assert merkle_root(data, 2 * SMALL) != root
    # Trailing zero bytes inside the last leaf are not padding.
    short = shard(3 * SMALL + 10)
    assert merkle_root(short, SMALL) != merkle_root(short + b"\x00" * 54, SMALL)


def test_wrong_shard_size_or_leaf_size_is_refused(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    root = merkle_root(data, SMALL)
    with pytest.raises(AuditFailed):
        verify_proof(root, len(data) - 1, SMALL, challenge, proof)
    with pytest.raises(AuditFailed):
        verify_proof(root, len(data), 2 * SMALL, Challenge(nonce(), (1, 4)), proof)


def test_inner_node_cannot_pose_as_a_leaf() -> None:
    """A 64-byte leaf is exactly two hashes; tagging and the fixed shape keep them apart."""
    data = shard(4 * SMALL)
    hashes = ref_hashes(data, SMALL)
    challenge = Challenge(nonce(), (0,))
    honest_path = prove(data, challenge, SMALL).items[0].path
    # Claim the level-1 node (hashes[0], hashes[1]) is leaf 0, with its one-hash path.
    forged = Proof(challenge.nonce, (ProofItem(0, hashes[0] + hashes[1], honest_path[1:]),))
    with pytest.raises(AuditFailed, match="must have 2 hashes"):
        audit(data, challenge, forged)
    # Even with a path of the expected length, the leaf tag differs from the node tag.
    padded = Proof(challenge.nonce, (ProofItem(0, hashes[0] + hashes[1], honest_path),))
    with pytest.raises(AuditFailed, match="does not reach the root"):
        audit(data, challenge, padded)


def test_promoted_node_cannot_be_given_a_made_up_sibling() -> None:
    """Leaf 2 of 3 is promoted at the first level, so its path has exactly one hash."""
    data = shard(3 * SMALL)
    challenge = Challenge(nonce(), (2,))
    proof = prove(data, challenge, SMALL)
    assert len(proof.items[0].path) == 1
    item = proof.items[0]
    for path in ((item.leaf[:32], *item.path), (item.path[0], item.path[0])):
        with pytest.raises(AuditFailed, match="must have 1 hashes"):
            audit(data, challenge, replace_item(proof, 0, path=path))


# --- proofs that must fail, one reason each ------------------------------------


def test_honest_fixture_passes(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    audit(data, challenge, proof)


def test_wrong_nonce(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    with pytest.raises(AuditFailed, match="nonce") as failure:
        audit(data, challenge, replace(proof, nonce=nonce("another")))
    assert failure.value.reason == "proof nonce does not match the challenge"


def test_proof_for_another_challenge(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    other = Challenge(nonce=nonce("another"), leaf_indices=challenge.leaf_indices)
    with pytest.raises(AuditFailed, match="nonce"):
        audit(data, other, proof)


def test_flipped_byte_in_leaf(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    bad = replace_item(proof, 1, leaf=flip(proof.items[1].leaf, 5))
    with pytest.raises(AuditFailed, match="path of leaf 4 does not reach the root"):
        audit(data, challenge, bad)


def test_flipped_byte_in_path_node(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    path = proof.items[0].path
    bad = replace_item(proof, 0, path=(path[0], flip(path[1], 31), *path[2:]))
    with pytest.raises(AuditFailed, match="path of leaf 1 does not reach the root"):
        audit(data, challenge, bad)


def test_truncated_path(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    bad = replace_item(proof, 0, path=proof.items[0].path[:-1])
    with pytest.raises(AuditFailed, match="path of leaf 1 must have 4 hashes, got 3"):
        audit(data, challenge, bad)


def test_extra_path_node(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    bad = replace_item(proof, 0, path=(*proof.items[0].path, bytes(32)))
    with pytest.raises(AuditFailed, match="must have 4 hashes, got 5"):
        audit(data, challenge, bad)


def test_path_node_of_wrong_size(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    path = proof.items[0].path
    bad = replace_item(proof, 0, path=(path[0][:31], *path[1:]))
    with pytest.raises(AuditFailed, match="not 32 bytes"):
        audit(data, challenge, bad)


def test_extra_item(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    extra = prove(data, Challenge(nonce(), (0,)), SMALL).items[0]
    bad = replace(proof, items=(*proof.items, extra))
    with pytest.raises(AuditFailed, match="5 items for 4 challenged leaves"):
        audit(data, challenge, bad)


def test_missing_item(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    bad = replace(proof, items=proof.items[:2] + proof.items[3:])
    with pytest.raises(AuditFailed, match=r"missing challenged leaves \[8\]"):
        audit(data, challenge, bad)


def test_no_items(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    with pytest.raises(AuditFailed, match="missing"):
        audit(data, challenge, replace(proof, items=()))


def test_swapped_items(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    items = proof.items
    bad = replace(proof, items=(items[1], items[0], *items[2:]))
    with pytest.raises(AuditFailed, match="not in challenge order"):
        audit(data, challenge, bad)


def test_swapped_index_keeps_data(honest: tuple[bytes, Challenge, Proof]) -> None:
    """Relabel the items' indices: each leaf now claims the other's position."""
    data, challenge, proof = honest
    first, second = proof.items[0], proof.items[1]
    bad = replace(
        proof,
        items=(
            replace(first, index=second.index),
            replace(second, index=first.index),
            *proof.items[2:],
        ),
    )
    with pytest.raises(AuditFailed, match="not in challenge order"):
        audit(data, challenge, bad)


def test_leaf_answered_under_another_index(honest: tuple[bytes, Challenge, Proof]) -> None:
    """Leaf 1's bytes and path offered as leaf 4, in the right order: the index is hashed in."""
    data, challenge, proof = honest
    bad = replace_item(proof, 1, leaf=proof.items[0].leaf, path=proof.items[0].path)
    with pytest.raises(AuditFailed, match="path of leaf 4 does not reach the root"):
        audit(data, challenge, bad)


def test_duplicated_item(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    items = proof.items
    bad = replace(proof, items=(items[0], items[0], *items[2:]))
    with pytest.raises(AuditFailed, match="answers leaf 1 twice"):
        audit(data, challenge, bad)


def test_unchallenged_index(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    other = prove(data, Challenge(nonce(), (0,)), SMALL).items[0]
    bad = replace(proof, items=(other, *proof.items[1:]))
    with pytest.raises(AuditFailed, match="leaf 0, which was not challenged"):
        audit(data, challenge, bad)


def test_wrong_leaf_length(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    with pytest.raises(AuditFailed, match="leaf 4 must be 64 bytes, got 63"):
        audit(data, challenge, replace_item(proof, 1, leaf=proof.items[1].leaf[:-1]))
    # The short last leaf may not be padded to a full leaf.
    padded = proof.items[3].leaf + bytes(SMALL - len(proof.items[3].leaf))
    with pytest.raises(AuditFailed, match="leaf 9 must be 10 bytes, got 64"):
        audit(data, challenge, replace_item(proof, 3, leaf=padded))


def test_malformed_items_are_refused(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    cases: list[Proof] = [
        replace(proof, nonce="not bytes"),  # type: ignore[arg-type]
        replace(proof, items=list(proof.items)),  # type: ignore[arg-type]
        replace(proof, items=("item", *proof.items[1:])),  # type: ignore[arg-type]
        replace_item(proof, 0, index="1"),
        replace_item(proof, 0, index=True),
        replace_item(proof, 0, leaf=bytearray(proof.items[0].leaf)),
        replace_item(proof, 0, path=list(proof.items[0].path)),
        replace_item(proof, 0, path=tuple(bytearray(n) for n in proof.items[0].path)),
    ]
    for bad in cases:
        with pytest.raises(AuditFailed):
            audit(data, challenge, bad)


def test_proof_from_a_different_shard(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, _ = honest
    other = shard(len(data), "another shard")
    with pytest.raises(AuditFailed, match="does not reach the root"):
        audit(data, challenge, prove(other, challenge, SMALL))


# --- damaged shards -----------------------------------------------------------

DAMAGED_LEAF_SIZE = DEFAULT_LEAF_SIZE
TENTH = MIB // 10


def test_truncated_shard_fails() -> None:
    """The holder lost the last 10 %: its honest answer over what is left fails."""
    data = shard(MIB)
    root = merkle_root(data)
    damaged = data[: MIB - TENTH]
    kept = leaf_count(len(damaged))
    assert kept == 231  # leaves 0..229 intact, 230 short, 231..255 gone
    # A challenge that includes a damaged leaf (the now-short one) ...
    challenge = Challenge(nonce(), (kept - 1,))
    with pytest.raises(AuditFailed, match="leaf 230 must be 4096 bytes, got 1639"):
        verify_proof(root, MIB, DAMAGED_LEAF_SIZE, challenge, prove(damaged, challenge))
    # ... and even one on intact leaves: each path commits to the whole shard.
    intact = Challenge(nonce(), (0, 1, 2))
    with pytest.raises(AuditFailed, match="does not reach the root"):
        verify_proof(root, MIB, DAMAGED_LEAF_SIZE, intact, prove(damaged, intact))
    # Leaves that no longer exist cannot be proven at all.
    with pytest.raises(ValueError, match="outside"):
        prove(damaged, Challenge(nonce(), (255,)))


def test_zeroed_shard_fails() -> None:
    """10 % of the bytes zeroed in the middle: the honest answer over them fails."""
    data = shard(MIB)
    root = merkle_root(data)
    start = 100 * DAMAGED_LEAF_SIZE
    damaged = data[:start] + bytes(TENTH) + data[start + TENTH :]
    challenge = Challenge(nonce(), (110,))
    with pytest.raises(AuditFailed, match="leaf 110 does not reach the root"):
        verify_proof(root, MIB, DAMAGED_LEAF_SIZE, challenge, prove(damaged, challenge))
    # Intact leaves fail too: their paths hash over the zeroed ones.
    intact = Challenge(nonce(), (5, 200))
    with pytest.raises(AuditFailed, match="leaf 5 does not reach the root"):
        verify_proof(root, MIB, DAMAGED_LEAF_SIZE, intact, prove(damaged, intact))


def cheat(data: bytes, damaged: bytes, challenge: Challenge) -> Proof:
    """A holder that kept every path (cheap) but only the damaged bytes."""
    proof = prove(data, challenge)
    items = []
    for item in proof.items:
        start = item.index * DAMAGED_LEAF_SIZE
        leaf = damaged[start : start + DAMAGED_LEAF_SIZE]
        items.append(replace(item, leaf=leaf + bytes(len(item.leaf) - len(leaf))))
    return replace(proof, items=tuple(items))


def test_holder_that_kept_the_tree_is_caught_on_a_damaged_leaf() -> None:
    data = shard(MIB)
    root = merkle_root(data)
    damaged = data[: MIB - TENTH]
    passes = Challenge(nonce(), tuple(range(0, 230, 8)))
    verify_proof(root, MIB, DAMAGED_LEAF_SIZE, passes, cheat(data, damaged, passes))
    caught = Challenge(nonce(), (*range(0, 230, 8), 240))
    with pytest.raises(AuditFailed, match="leaf 240 does not reach the root"):
        verify_proof(root, MIB, DAMAGED_LEAF_SIZE, caught, cheat(data, damaged, caught))


def test_detection_rate_with_32_random_leaves() -> None:
    """256 leaves, 26 of them damaged, 32 challenged: a miss has probability about 3 %.

    P(miss) = C(230, 32) / C(256, 32) <= (230/256) ** 32. Measured here with a
    seeded random source over 200 audits of the tree-keeping cheater.
    """
    leaves, damaged_leaves, count = 256, 26, 32
    p_miss = math.comb(leaves - damaged_leaves, count) / math.comb(leaves, count)
    assert p_miss < 0.035
    assert p_miss <= ((leaves - damaged_leaves) / leaves) ** count

    data = shard(MIB)
    root = merkle_root(data)
    damaged = data[: MIB - TENTH]
    rng = random.Random(20240601)
    caught = 0
    trials = 200
    for _ in range(trials):
        challenge = make_challenge(MIB, DAMAGED_LEAF_SIZE, count, rng=rng)
        try:
            verify_proof(root, MIB, DAMAGED_LEAF_SIZE, challenge, cheat(data, damaged, challenge))
        except AuditFailed:
            caught += 1
    assert caught >= 0.9 * trials


# --- challenges ---------------------------------------------------------------


def test_make_challenge_draws_distinct_sorted_leaves() -> None:
    challenge = make_challenge(MIB, DEFAULT_LEAF_SIZE, 32)
    assert len(challenge.nonce) == NONCE_SIZE
    assert len(set(challenge.leaf_indices)) == 32
    assert list(challenge.leaf_indices) == sorted(challenge.leaf_indices)
    assert all(0 <= i < 256 for i in challenge.leaf_indices)


def test_make_challenge_is_fresh_by_default() -> None:
    first = make_challenge(MIB, DEFAULT_LEAF_SIZE, 16)
    second = make_challenge(MIB, DEFAULT_LEAF_SIZE, 16)
    assert first.nonce != second.nonce
    assert first.leaf_indices != second.leaf_indices  # fails with probability ~1e-25


def test_make_challenge_with_injected_random_source() -> None:
    first = make_challenge(MIB, DEFAULT_LEAF_SIZE, 8, rng=random.Random(7))
    second = make_challenge(MIB, DEFAULT_LEAF_SIZE, 8, rng=random.Random(7))
    assert first == second


def test_make_challenge_clamps_to_leaf_count() -> None:
    assert make_challenge(3 * SMALL, SMALL, 64).leaf_indices == (0, 1, 2)
    assert make_challenge(0, SMALL, 10).leaf_indices == (0,)


def test_make_challenge_covers_every_leaf() -> None:
    rng = random.Random(1)
    seen: set[int] = set()
    for _ in range(200):
        seen.update(make_challenge(16 * SMALL, SMALL, 2, rng=rng).leaf_indices)
    assert seen == set(range(16))


@pytest.mark.parametrize("count", [0, -1, MAX_CHALLENGE_LEAVES + 1, True, 2.0])
def test_make_challenge_refuses_bad_count(count: Any) -> None:
    with pytest.raises(ValueError, match="count"):
        make_challenge(MIB, DEFAULT_LEAF_SIZE, count)


@pytest.mark.parametrize(
    ("nonce_", "indices", "match"),
    [
        (bytes(31), (0,), "nonce"),
        (bytearray(32), (0,), "nonce"),
        (bytes(32), (), "1 to 64"),
        (bytes(32), tuple(range(MAX_CHALLENGE_LEAVES + 1)), "1 to 64"),
        (bytes(32), [0, 1], "tuple"),
        (bytes(32), (0, 0), "distinct"),
        (bytes(32), (-1,), "non-negative"),
        (bytes(32), (True,), "non-negative"),
        (bytes(32), (1.0,), "non-negative"),
    ],
)
def test_challenge_refuses_bad_structure(nonce_: Any, indices: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Challenge(nonce=nonce_, leaf_indices=indices)


# --- caller bugs --------------------------------------------------------------


@pytest.mark.parametrize(
    "leaf_size", [0, 32, 100, MIN_LEAF_SIZE - 1, MAX_LEAF_SIZE * 2, 4096.0, True]
)
def test_bad_leaf_size(leaf_size: Any) -> None:
    for call in (
        lambda: merkle_root(b"abc", leaf_size),
        lambda: leaf_count(3, leaf_size),
        lambda: make_challenge(3, leaf_size, 1),
        lambda: prove(b"abc", Challenge(nonce(), (0,)), leaf_size),
        lambda: verify_proof(bytes(32), 3, leaf_size, Challenge(nonce(), (0,)), Proof(nonce(), ())),
    ):
        with pytest.raises(ValueError, match="leaf size"):
            call()


def test_leaf_size_bounds_are_accepted() -> None:
    for leaf_size in (MIN_LEAF_SIZE, MAX_LEAF_SIZE):
        data = shard(leaf_size * 2 + 1)
        challenge = Challenge(nonce(), (0, 2))
        audit(data, challenge, prove(data, challenge, leaf_size), leaf_size)


def test_bad_shard_size() -> None:
    with pytest.raises(ValueError, match="shard size"):
        leaf_count(-1, SMALL)
    with pytest.raises(ValueError, match="2\\*\\*40"):
        leaf_count((1 << 40) * SMALL + 1, SMALL)
    assert leaf_count((1 << 40) * SMALL, SMALL) == 1 << 40


def test_verify_refuses_our_own_bad_inputs(honest: tuple[bytes, Challenge, Proof]) -> None:
    data, challenge, proof = honest
    root = merkle_root(data, SMALL)
    with pytest.raises(ValueError, match="root"):
        verify_proof(root[:31], len(data), SMALL, challenge, proof)
    with pytest.raises(ValueError, match="outside"):
        verify_proof(root, len(data), SMALL, Challenge(nonce(), (10,)), proof)
    with pytest.raises(ValueError, match="Challenge"):
        verify_proof(root, len(data), SMALL, "challenge", proof)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Proof"):
        verify_proof(root, len(data), SMALL, challenge, "proof")  # type: ignore[arg-type]


def test_prove_refuses_out_of_range_index() -> None:
    with pytest.raises(ValueError, match="outside a shard of 2 leaves"):
        prove(shard(SMALL + 1), Challenge(nonce(), (2,)), SMALL)


def test_verifier_work_is_bounded_on_a_huge_shard() -> None:
    """A 2**40-leaf contract: paths are 40 hashes, and the verifier only hashes what it checks."""
    size = (1 << 40) * SMALL
    challenge = Challenge(nonce(), (0, (1 << 40) - 1))
    fake = Proof(
        challenge.nonce,
        tuple(ProofItem(i, bytes(SMALL), (bytes(32),) * 40) for i in challenge.leaf_indices),
    )
    with pytest.raises(AuditFailed, match="leaf 0 does not reach the root"):
        verify_proof(bytes(32), size, SMALL, challenge, fake)


# --- sizes --------------------------------------------------------------------


def test_proof_size_bytes(honest: tuple[bytes, Challenge, Proof]) -> None:
    _, _, proof = honest
    expected = 32 + sum(8 + len(i.leaf) + 32 * len(i.path) for i in proof.items)
    assert proof_size_bytes(proof) == expected
    assert proof_size_bytes(Proof(nonce(), ())) == 32


def test_item_repr_leaves_out_the_leaf() -> None:
    item = ProofItem(3, b"secret-looking leaf bytes", (bytes(32),))
    assert "secret" not in repr(item)
    assert "index=3" in repr(item)
