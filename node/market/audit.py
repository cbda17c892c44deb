"""Proof-of-storage audits: a BLAKE3 Merkle tree over a shard, challenges, proofs.

Theory of operation
-------------------

When a contract is made, the client computes ``merkle_root(shard)`` and writes
the root, the shard size and the leaf size into the contract. Later the
challenger (the client, or anyone holding the contract) asks the provider for
a few leaves picked at random; the provider answers with each leaf's bytes and
its Merkle path; the challenger checks them against the root without holding
the shard itself::

    challenger                                     holder of the shard
    make_challenge(size, leaf_size, k) ──Challenge──▶ prove(shard, challenge)
    verify_proof(root, size, leaf_size,  ◀──Proof───┘
                 challenge, proof)       -> None, or raises AuditFailed

This module is pure: no I/O, no clock, no networking. Timeouts and the one
retry belong to the service that runs audits (SPEC section 6).

Tree format (version 1)
-----------------------

* The shard is cut into leaves of ``leaf_size`` bytes, a power of two between
  ``MIN_LEAF_SIZE`` and ``MAX_LEAF_SIZE`` (default ``DEFAULT_LEAF_SIZE``,
  4096). The last leaf may be short. A 0-byte shard has exactly one leaf,
  the empty one, so every shard has at least one leaf and a well-defined root.
* Leaf hash ``i``:   ``BLAKE3(0x00 || i as u64 big-endian || leaf bytes)``.
* Inner node:        ``BLAKE3(0x01 || left || right)``.
* Levels are built pairwise from left to right. An unpaired node at the end
  of a level is *promoted* unchanged to the next level (it is not
  duplicated), so no two shapes share a hash and there is no
  "duplicate-the-last-leaf" ambiguity (the CVE-2012-2459 kind).
* Root: ``BLAKE3(0x02 || shard size as u64 BE || leaf size as u64 BE ||
  tree root)``, where the tree root is the single node left at the top.

Pairing left to right with promotion gives the same shape as RFC 6962's
Merkle tree hash (split at the largest power of two below the leaf count);
the golden vectors in tests/vectors/audit/ were made with that recursive
definition, not with this module.

The tag bytes keep leaves, inner nodes and the final root in separate
domains, so a leaf can never be passed off as an inner node and vice versa
(second-preimage safety). The leaf index in every leaf hash ties each leaf to
its position. Because the root commits to the shard size and the leaf size,
the verifier knows the exact shape of the tree: how many leaves there are,
how long each leaf is, and for every index which levels have a sibling and
which promote. A path must have exactly that length, so a truncated shard, or
a path built for another shape, cannot reach the root.

Freshness and unpredictability
------------------------------

The challenger draws a fresh 32-byte nonce and ``k`` distinct leaf indices
uniformly at random from a cryptographic source (``secrets.SystemRandom``).
The proof must echo the nonce, which binds an answer to its request: a proof
made for another challenge is refused. What makes an audit meaningful is that
the holder cannot know in advance which leaves will be asked, so it cannot
precompute answers and throw the data away: every answer carries whole leaf
bytes, which hash to the committed root only if the holder really has them.
The challenger must therefore never reuse a nonce and never let the holder
influence the indices.

A holder that kept the tree's inner hashes (about 2 x 32 bytes per leaf) but
deleted a fraction ``f`` of the leaves passes a ``k``-leaf challenge only if
no deleted leaf is drawn: with ``n`` leaves and ``d = f * n`` deleted, the
probability is ``C(n - d, k) / C(n, k) <= (1 - f) ** k``. For a 1 MiB shard
(256 leaves of 4 KiB) with 10 % deleted and ``k = 32`` that is about 3 %, so
each audit catches it with about 97 % probability; a few audits make a miss
negligible. A holder that recomputes the tree from damaged data fails every
challenge, since each path commits to the whole shard.

Bad input
---------

``ValueError`` is a caller bug or a malformed local value (bad leaf size,
challenge index out of range, wrong root length). ``AuditFailed`` is a bad
proof from a peer and names what was wrong. The verifier bounds its own work:
at most ``MAX_CHALLENGE_LEAVES`` items, each at most one leaf and
``MAX_PATH_LENGTH`` hashes, every length checked before any hashing, and it
trusts nothing in the proof beyond what it checks: the indices, their order
and each leaf's length come from the challenge and the contract.
"""

from __future__ import annotations

import hmac
import random
import secrets
import struct
from dataclasses import dataclass, field

import blake3

__all__ = [
    "DEFAULT_LEAF_SIZE",
    "DIGEST_SIZE",
    "MAX_CHALLENGE_LEAVES",
    "MAX_LEAF_SIZE",
    "MAX_PATH_LENGTH",
    "MIN_LEAF_SIZE",
    "NONCE_SIZE",
    "AuditFailed",
    "Challenge",
    "Proof",
    "ProofItem",
    "leaf_count",
    "make_challenge",
    "merkle_root",
    "proof_size_bytes",
    "prove",
    "verify_proof",
]

DIGEST_SIZE = 32
NONCE_SIZE = 32
DEFAULT_LEAF_SIZE = 4096
MIN_LEAF_SIZE = 64
MAX_LEAF_SIZE = 1 << 16
MAX_CHALLENGE_LEAVES = 64
# A path has at most one sibling per level, so this also caps the leaf count
# at 2**40 (64 TiB of 64-byte leaves, far more with the default size).
MAX_PATH_LENGTH = 40
_MAX_LEAVES = 1 << MAX_PATH_LENGTH

_LEAF_TAG = 0x00
_NODE_TAG = b"\x01"
_ROOT_HEADER = struct.Struct(">BQQ")
_LEAF_HEADER = struct.Struct(">BQ")
_ROOT_TAG = 0x02

# Bytes per item counted by proof_size_bytes besides the leaf and the path:
# the index as a u64.
_ITEM_OVERHEAD = 8


class AuditFailed(Exception):
    """A proof that does not answer its challenge; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Challenge:
    """A fresh nonce and the distinct leaf indices the holder must produce, in order.

    The constructor checks the structure (nonce size, index count, distinct
    non-negative ints); whether the indices fit a shard is checked by
    `prove` and `verify_proof`, which know its size.
    """

    nonce: bytes
    leaf_indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"challenge nonce must be {NONCE_SIZE} bytes")
        if not isinstance(self.leaf_indices, tuple):
            raise ValueError("challenge leaf indices must be a tuple")
        if not 1 <= len(self.leaf_indices) <= MAX_CHALLENGE_LEAVES:
            raise ValueError(
                f"a challenge names 1 to {MAX_CHALLENGE_LEAVES} leaves, "
                f"not {len(self.leaf_indices)}"
            )
        for index in self.leaf_indices:
            if not _is_int(index) or index < 0:
                raise ValueError(f"challenge leaf index {index!r} is not a non-negative int")
        if len(set(self.leaf_indices)) != len(self.leaf_indices):
            raise ValueError("challenge leaf indices must be distinct")


@dataclass(frozen=True, slots=True)
class ProofItem:
    """One challenged leaf: its index, its bytes and its sibling hashes, leaf to root."""

    index: int
    leaf: bytes = field(repr=False)
    path: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Proof:
    """The holder's answer: the challenge nonce echoed and one item per challenged leaf."""

    nonce: bytes
    items: tuple[ProofItem, ...]


def leaf_count(shard_size: int, leaf_size: int = DEFAULT_LEAF_SIZE) -> int:
    """Number of leaves of a shard: ``ceil(size / leaf_size)``, and 1 for an empty shard."""
    _check_leaf_size(leaf_size)
    return _leaf_count(shard_size, leaf_size)


def merkle_root(data: bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> bytes:
    """The 32-byte audit root of a shard, committing to its bytes, size and leaf size."""
    _check_leaf_size(leaf_size)
    levels = _levels(data, leaf_size)
    return _final_root(len(data), leaf_size, levels[-1][0])


def make_challenge(
    shard_size: int,
    leaf_size: int,
    count: int,
    rng: random.Random | None = None,
) -> Challenge:
    """A fresh challenge: a random nonce and ``count`` distinct random leaves, sorted.

    ``count`` is clamped to the shard's leaf count. ``rng`` defaults to
    ``secrets.SystemRandom()`` (the operating system's CSPRNG); tests may
    pass a seeded ``random.Random``, which must never be done in production.
    """
    _check_leaf_size(leaf_size)
    leaves = _leaf_count(shard_size, leaf_size)
    if not _is_int(count) or not 1 <= count <= MAX_CHALLENGE_LEAVES:
        raise ValueError(f"challenge count must be 1 to {MAX_CHALLENGE_LEAVES}, not {count!r}")
    source = secrets.SystemRandom() if rng is None else rng
    nonce = source.randbytes(NONCE_SIZE)
    indices = source.sample(range(leaves), min(count, leaves))
    return Challenge(nonce=nonce, leaf_indices=tuple(sorted(indices)))


def prove(data: bytes, challenge: Challenge, leaf_size: int = DEFAULT_LEAF_SIZE) -> Proof:
    """The holder's answer to ``challenge`` over ``data``: builds the tree once.

    Raises ValueError if a challenged index is outside the shard.
    """
    _check_leaf_size(leaf_size)
    leaves = _leaf_count(len(data), leaf_size)
    _check_indices(challenge, leaves)
    levels = _levels(data, leaf_size)
    view = memoryview(data)
    items = []
    for index in challenge.leaf_indices:
        start = index * leaf_size
        leaf = bytes(view[start : start + leaf_size])
        items.append(ProofItem(index=index, leaf=leaf, path=_path(levels, index)))
    return Proof(nonce=challenge.nonce, items=tuple(items))


def verify_proof(
    root: bytes,
    shard_size: int,
    leaf_size: int,
    challenge: Challenge,
    proof: Proof,
) -> None:
    """Check ``proof`` against the contract's root, size and leaf size, and ``challenge``.

    Returns None if every challenged leaf is present, in order, of the right
    length, and its path leads to ``root``; raises AuditFailed otherwise.
    Raises ValueError for a bad root, size, leaf size or challenge (ours).
    """
    if not isinstance(root, bytes) or len(root) != DIGEST_SIZE:
        raise ValueError(f"root must be {DIGEST_SIZE} bytes")
    _check_leaf_size(leaf_size)
    leaves = _leaf_count(shard_size, leaf_size)
    if not isinstance(challenge, Challenge):
        raise ValueError("challenge must be a Challenge")
    _check_indices(challenge, leaves)
    if not isinstance(proof, Proof):
        raise ValueError("proof must be a Proof")

    if not isinstance(proof.nonce, bytes) or not hmac.compare_digest(proof.nonce, challenge.nonce):
        raise AuditFailed("proof nonce does not match the challenge")
    _check_item_indices(challenge.leaf_indices, proof.items)

    for index, item in zip(challenge.leaf_indices, proof.items, strict=True):
        leaf, path = item.leaf, item.path
        expected_length = min(leaf_size, shard_size - index * leaf_size)
        if not isinstance(leaf, bytes) or len(leaf) != expected_length:
            got = len(leaf) if isinstance(leaf, bytes) else type(leaf).__name__
            raise AuditFailed(f"leaf {index} must be {expected_length} bytes, got {got}")
        if not isinstance(path, tuple):
            raise AuditFailed(f"path of leaf {index} is not a tuple")
        expected_path = _path_length(index, leaves)
        if len(path) != expected_path:
            raise AuditFailed(
                f"path of leaf {index} must have {expected_path} hashes, got {len(path)}"
            )
        for node in path:
            if not isinstance(node, bytes) or len(node) != DIGEST_SIZE:
                raise AuditFailed(f"path of leaf {index} holds a hash that is not 32 bytes")
        top = _fold(_leaf_hash(index, leaf), index, leaves, path)
        if not hmac.compare_digest(_final_root(shard_size, leaf_size, top), root):
            raise AuditFailed(f"path of leaf {index} does not reach the root")


def proof_size_bytes(proof: Proof) -> int:
    """Payload bytes of a proof: nonce, and per item an 8-byte index, the leaf, the path.

    The protobuf encoding adds a few bytes of tags and lengths per field.
    """
    return NONCE_SIZE + sum(
        _ITEM_OVERHEAD + len(item.leaf) + DIGEST_SIZE * len(item.path) for item in proof.items
    )


# --- internals ---------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_leaf_size(leaf_size: int) -> None:
    if (
        not _is_int(leaf_size)
        or not MIN_LEAF_SIZE <= leaf_size <= MAX_LEAF_SIZE
        or leaf_size & (leaf_size - 1)
    ):
        raise ValueError(
            f"leaf size must be a power of two from {MIN_LEAF_SIZE} to {MAX_LEAF_SIZE}, "
            f"not {leaf_size!r}"
        )


def _leaf_count(shard_size: int, leaf_size: int) -> int:
    if not _is_int(shard_size) or shard_size < 0:
        raise ValueError(f"shard size must be a non-negative int, not {shard_size!r}")
    leaves = max(1, -(-shard_size // leaf_size))
    if leaves > _MAX_LEAVES:
        raise ValueError(f"a shard of {shard_size} bytes has more than 2**{MAX_PATH_LENGTH} leaves")
    return leaves


def _check_indices(challenge: Challenge, leaves: int) -> None:
    for index in challenge.leaf_indices:
        if index >= leaves:
            raise ValueError(f"challenged leaf {index} is outside a shard of {leaves} leaves")


def _check_item_indices(expected: tuple[int, ...], items: object) -> None:
    """Refuse a proof whose items are not exactly the challenged indices, in order."""
    if not isinstance(items, tuple):
        raise AuditFailed("proof items are not a tuple")
    if len(items) > len(expected):
        raise AuditFailed(f"proof has {len(items)} items for {len(expected)} challenged leaves")
    got = []
    for item in items:
        if not isinstance(item, ProofItem) or not _is_int(item.index):
            raise AuditFailed("proof holds a malformed item")
        got.append(item.index)
    seen: set[int] = set()
    for index in got:
        if index in seen:
            raise AuditFailed(f"proof answers leaf {index} twice")
        seen.add(index)
    wanted = set(expected)
    for index in got:
        if index not in wanted:
            raise AuditFailed(f"proof answers leaf {index}, which was not challenged")
    if len(got) < len(expected):
        missing = sorted(wanted - seen)
        raise AuditFailed(f"proof is missing challenged leaves {missing}")
    if tuple(got) != expected:
        raise AuditFailed("proof items are not in challenge order")


def _leaf_hash(index: int, leaf: bytes | memoryview) -> bytes:
    hasher = blake3.blake3(_LEAF_HEADER.pack(_LEAF_TAG, index))
    hasher.update(leaf)
    digest: bytes = hasher.digest()
    return digest


def _node_hash(left: bytes, right: bytes) -> bytes:
    digest: bytes = blake3.blake3(_NODE_TAG + left + right).digest()
    return digest


def _final_root(shard_size: int, leaf_size: int, tree_root: bytes) -> bytes:
    header = _ROOT_HEADER.pack(_ROOT_TAG, shard_size, leaf_size)
    digest: bytes = blake3.blake3(header + tree_root).digest()
    return digest


def _levels(data: bytes, leaf_size: int) -> list[list[bytes]]:
    """Every level of the tree, leaf hashes first, the single tree root last."""
    leaves = _leaf_count(len(data), leaf_size)
    view = memoryview(data)
    level = [
        _leaf_hash(index, view[index * leaf_size : (index + 1) * leaf_size])
        for index in range(leaves)
    ]
    levels = [level]
    while len(level) > 1:
        paired = len(level) - len(level) % 2
        upper = [_node_hash(level[i], level[i + 1]) for i in range(0, paired, 2)]
        if paired != len(level):
            upper.append(level[-1])  # the unpaired node is promoted, not duplicated
        level = upper
        levels.append(level)
    return levels


def _path(levels: list[list[bytes]], index: int) -> tuple[bytes, ...]:
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return tuple(path)


def _path_length(index: int, leaves: int) -> int:
    """Siblings on the way from leaf ``index`` to the top of a tree of ``leaves`` leaves."""
    length = 0
    width = leaves
    while width > 1:
        if index ^ 1 < width:
            length += 1
        index //= 2
        width = (width + 1) // 2
    return length


def _fold(node: bytes, index: int, leaves: int, path: tuple[bytes, ...]) -> bytes:
    """Climb from a leaf hash to the tree root; the path length is already checked."""
    siblings = iter(path)
    width = leaves
    while width > 1:
        if index ^ 1 < width:
            sibling = next(siblings)
            node = _node_hash(node, sibling) if index % 2 == 0 else _node_hash(sibling, node)
        index //= 2
        width = (width + 1) // 2
    return node
