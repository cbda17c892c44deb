import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.kad.keyspace import (
    KEY_BITS,
    KEY_BYTES,
    common_prefix_len,
    distance,
    kad_id,
    random_id_at_prefix,
    random_key_at_prefix,
)

ids = st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES)
prefixes = st.integers(min_value=0, max_value=KEY_BITS - 1)


def test_kad_id_is_sha256_of_the_raw_key() -> None:
    # The libp2p keyspace: a stock node must compute the same ids.
    raw = bytes.fromhex("0020") + b"\x01" * 32
    assert kad_id(raw) == hashlib.sha256(raw).digest()
    assert len(kad_id(b"")) == KEY_BYTES


@given(ids, ids)
def test_distance_is_symmetric(a: bytes, b: bytes) -> None:
    assert distance(a, b) == distance(b, a)


@given(ids, ids)
def test_distance_is_zero_only_to_itself(a: bytes, b: bytes) -> None:
    assert distance(a, a) == 0
    assert (distance(a, b) == 0) == (a == b)


@given(ids, ids, ids)
def test_distance_composes_by_xor(a: bytes, b: bytes, c: bytes) -> None:
    assert distance(a, c) == distance(a, b) ^ distance(b, c)
    # The XOR metric satisfies the triangle inequality.
    assert distance(a, c) <= distance(a, b) + distance(b, c)


@given(ids, ids)
def test_common_prefix_len_matches_bits(a: bytes, b: bytes) -> None:
    bits_a = format(int.from_bytes(a, "big"), f"0{KEY_BITS}b")
    bits_b = format(int.from_bytes(b, "big"), f"0{KEY_BITS}b")
    expected = next((i for i in range(KEY_BITS) if bits_a[i] != bits_b[i]), KEY_BITS)
    assert common_prefix_len(a, b) == expected


def test_common_prefix_len_edges() -> None:
    zero = bytes(KEY_BYTES)
    assert common_prefix_len(zero, zero) == KEY_BITS
    assert common_prefix_len(zero, b"\x80" + bytes(KEY_BYTES - 1)) == 0
    assert common_prefix_len(zero, bytes(KEY_BYTES - 1) + b"\x01") == KEY_BITS - 1


def test_wrong_length_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        distance(b"short", bytes(KEY_BYTES))
    with pytest.raises(ValueError):
        common_prefix_len(bytes(KEY_BYTES + 1), bytes(KEY_BYTES))


@given(ids, prefixes, st.integers(min_value=0, max_value=2**32))
def test_random_id_at_prefix_shares_exactly_that_prefix(
    local: bytes, prefix_len: int, seed: int
) -> None:
    made = random_id_at_prefix(local, prefix_len, random.Random(seed))
    assert len(made) == KEY_BYTES
    assert common_prefix_len(local, made) == prefix_len


def test_random_id_at_prefix_is_random_below_the_prefix() -> None:
    rng = random.Random(7)
    local = bytes(KEY_BYTES)
    made = {random_id_at_prefix(local, 3, rng) for _ in range(50)}
    assert len(made) == 50


@pytest.mark.parametrize("prefix_len", [-1, KEY_BITS])
def test_random_id_at_prefix_rejects_out_of_range(prefix_len: int) -> None:
    with pytest.raises(ValueError):
        random_id_at_prefix(bytes(KEY_BYTES), prefix_len, random.Random(0))


@pytest.mark.parametrize("prefix_len", [0, 1, 5, 9])
def test_random_key_at_prefix_hashes_into_the_bucket(prefix_len: int) -> None:
    local = kad_id(b"local")
    raw = random_key_at_prefix(local, prefix_len, random.Random(prefix_len))
    assert raw is not None
    assert common_prefix_len(local, kad_id(raw)) == prefix_len


def test_random_key_at_prefix_gives_up_when_out_of_attempts() -> None:
    assert random_key_at_prefix(kad_id(b"x"), 200, random.Random(0), max_attempts=10) is None
