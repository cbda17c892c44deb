"""The content stages one by one: segment, compress, encrypt, erasure, segment codec.

Round trips run over the sizes where off-by-one errors live (0, 1, exact
multiples, one past); every hostile input has its own test and must raise a
ContentError (or ValueError for a caller's mistake) that names what failed.
"""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import blake3
import lz4.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.content.compress import compress_segment, decompress_segment
from node.content.encrypt import (
    KEY_SIZE,
    TAG_SIZE,
    new_content_key,
    open_segment,
    seal_segment,
)
from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.segment import (
    MAX_SEGMENT_SIZE,
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    iter_segments,
    segment_size_for,
    validate_segment_size,
)
from node.content.segment_codec import EncodedSegment, decode_segment, encode_segment

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None, max_examples=40)

MIB = 1 << 20
GIB = 1 << 30
SEG = MIN_SEGMENT_SIZE
KEY = bytes(range(KEY_SIZE))
OTHER_KEY = bytes(range(1, KEY_SIZE + 1))


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def text_bytes(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"shard", b"segment", b"node"]
    return b" ".join(rng.choice(words) for _ in range(size // 4 + 1))[:size]


def sizes_around(unit: int, count: int = 3) -> st.SearchStrategy[int]:
    """0, 1, and every multiple of `unit` up to `count`, each -1 and +1; or any size."""
    edges = {0, 1, 2}
    for multiple in range(1, count + 1):
        edges.update({multiple * unit - 1, multiple * unit, multiple * unit + 1})
    return st.one_of(st.sampled_from(sorted(edges)), st.integers(0, count * unit + 1))


class TrickleReader(io.RawIOBase):
    """A source that returns at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = len(self._data)
        chunk = bytes(self._data[self._pos : self._pos + min(size, self._step)])
        self._pos += len(chunk)
        return chunk


# -- segment -------------------------------------------------------------------


@CHECK
@given(size=sizes_around(SEG), seed=st.integers(0, 3))
def test_iter_segments_round_trip(size: int, seed: int) -> None:
    data = random_bytes(size, seed)
    segments = list(iter_segments(io.BytesIO(data), SEG))
    assert b"".join(segments) == data
    assert len(segments) == -(-size // SEG)
    assert all(len(s) == SEG for s in segments[:-1])
    assert all(0 < len(s) <= SEG for s in segments)


def test_iter_segments_of_empty_source_yields_nothing() -> None:
    assert list(iter_segments(io.BytesIO(b""), SEG)) == []


@CHECK
@given(size=sizes_around(SEG), step=st.sampled_from([1000, 4096, SEG - 1, SEG + 7]))
def test_iter_segments_fills_segments_across_short_reads(size: int, step: int) -> None:
    data = random_bytes(size)
    segments = list(iter_segments(TrickleReader(data, step), SEG))  # type: ignore[arg-type]
    assert b"".join(segments) == data
    assert [len(s) for s in segments[:-1]] == [SEG] * (len(segments) - 1)


def test_iter_segments_rejects_a_bad_segment_size() -> None:
    with pytest.raises(ValueError, match="segment size"):
        list(iter_segments(io.BytesIO(b"abc"), 1024))


@pytest.mark.parametrize(
    "size", [MIN_SEGMENT_SIZE, MIB, MAX_SEGMENT_SIZE], ids=["min", "1MiB", "max"]
)
def test_validate_segment_size_accepts_the_bounds(size: int) -> None:
    assert validate_segment_size(size) == size


def test_validate_segment_size_rejects_one_below_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"outside 65536\.\.67108864"):
        validate_segment_size(MIN_SEGMENT_SIZE - 1)


def test_validate_segment_size_rejects_one_above_the_maximum() -> None:
    with pytest.raises(ValueError, match="outside"):
        validate_segment_size(MAX_SEGMENT_SIZE + 1)


def test_validate_segment_size_rejects_zero() -> None:
    with pytest.raises(ValueError, match="outside"):
        validate_segment_size(0)


def test_validate_segment_size_rejects_a_non_integer() -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        validate_segment_size(1.5 * MIB)  # type: ignore[arg-type]


def test_validate_segment_size_rejects_a_bool() -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        validate_segment_size(True)


def test_segment_size_for_unknown_size_is_the_default() -> None:
    assert segment_size_for(None, MIB) == MIB


@pytest.mark.parametrize("total", [0, 1, MIB, 4 * GIB])
def test_segment_size_for_files_up_to_4_gib_is_the_default(total: int) -> None:
    assert segment_size_for(total, MIB) == MIB


@pytest.mark.parametrize(
    ("total", "expected"),
    [(4 * GIB + 1, 2 * MIB), (8 * GIB, 2 * MIB), (100 * GIB, 32 * MIB), (256 * GIB, 64 * MIB)],
)
def test_segment_size_for_large_files_doubles_to_stay_under_the_segment_cap(
    total: int, expected: int
) -> None:
    assert segment_size_for(total, MIB) == expected


def test_segment_size_for_huge_files_stops_at_the_maximum() -> None:
    assert segment_size_for(4096 * GIB, MIB) == MAX_SEGMENT_SIZE


@CHECK
@given(total=st.integers(0, 256 * GIB), default=st.sampled_from([SEG, MIB, 3 * MIB]))
def test_segment_size_for_keeps_segments_under_the_cap(total: int, default: int) -> None:
    size = segment_size_for(total, default)
    assert -(-total // size) <= MAX_SEGMENTS
    assert default <= size <= MAX_SEGMENT_SIZE
    if size != default:
        assert size & (size - 1) == 0  # a power of two
        assert -(-total // (size // 2)) > MAX_SEGMENTS  # and the smallest that fits


def test_segment_size_for_rejects_a_negative_size() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        segment_size_for(-1, MIB)


def test_segment_size_for_rejects_a_bad_default() -> None:
    with pytest.raises(ValueError, match="segment size"):
        segment_size_for(MIB, 1000)


# -- compress ------------------------------------------------------------------


@CHECK
@given(size=sizes_around(SEG, 2), seed=st.integers(0, 3), text=st.booleans())
def test_compress_round_trip(size: int, seed: int, text: bool) -> None:
    data = text_bytes(size, seed) if text else random_bytes(size, seed)
    stored, compressed = compress_segment(data)
    if compressed:
        assert len(stored) < len(data)
        assert decompress_segment(stored, len(data)) == data
    else:
        assert stored is data


def test_compress_shrinks_text() -> None:
    data = text_bytes(MIB)
    stored, compressed = compress_segment(data)
    assert compressed
    assert len(stored) < len(data) // 2


def test_compress_keeps_random_data_as_is() -> None:
    data = random_bytes(MIB)
    assert compress_segment(data) == (data, False)


def test_compress_keeps_empty_data_as_is() -> None:
    assert compress_segment(b"") == (b"", False)


def test_decompress_rejects_a_bomb() -> None:
    bomb = lz4.frame.compress(bytes(16 * MIB))
    assert len(bomb) < 128 << 10  # a small frame ...
    with pytest.raises(ContentError, match="expands beyond the expected 65536 bytes"):
        decompress_segment(bomb, SEG)  # ... that would expand 256-fold


def test_decompress_rejects_output_shorter_than_expected() -> None:
    frame, _ = compress_segment(text_bytes(SEG))
    with pytest.raises(ContentError, match=f"holds {SEG} bytes, expected {SEG + 1}"):
        decompress_segment(frame, SEG + 1)


def test_decompress_rejects_output_longer_than_expected() -> None:
    frame, _ = compress_segment(text_bytes(SEG))
    with pytest.raises(ContentError, match="expands beyond"):
        decompress_segment(frame, SEG - 1)


def test_decompress_rejects_garbage() -> None:
    with pytest.raises(ContentError, match="corrupt lz4 frame"):
        decompress_segment(b"this is not an lz4 frame at all", 100)


def test_decompress_rejects_a_corrupt_header() -> None:
    frame, _ = compress_segment(text_bytes(SEG))
    corrupt = bytearray(frame)
    corrupt[4] ^= 0xFF  # the frame descriptor's flags byte
    with pytest.raises(ContentError, match="corrupt lz4 frame"):
        decompress_segment(bytes(corrupt), SEG)


def test_decompress_rejects_a_truncated_frame() -> None:
    frame, _ = compress_segment(text_bytes(SEG))
    with pytest.raises(ContentError, match="truncated"):
        decompress_segment(frame[:-4], SEG)  # no end mark


def test_decompress_rejects_trailing_bytes() -> None:
    frame, _ = compress_segment(text_bytes(SEG))
    with pytest.raises(ContentError, match="followed by 3 unexpected bytes"):
        decompress_segment(frame + b"xyz", SEG)


def test_decompress_refuses_an_expected_size_above_the_segment_limit() -> None:
    # The decompressor allocates the expected size up front: a lying manifest
    # must not get to ask for a terabyte.
    frame, _ = compress_segment(text_bytes(SEG))
    with pytest.raises(ValueError, match="outside"):
        decompress_segment(frame, 1 << 40)


# -- encrypt -------------------------------------------------------------------


def sealed(data: bytes = b"segment bytes", index: int = 7) -> bytes:
    return seal_segment(KEY, index, data, compressed=True, plain_size=1000)


@CHECK
@given(
    data=st.binary(max_size=2000),
    index=st.integers(0, (1 << 64) - 1),
    compressed=st.booleans(),
    plain_size=st.integers(0, (1 << 64) - 1),
)
def test_seal_open_round_trip(data: bytes, index: int, compressed: bool, plain_size: int) -> None:
    ciphertext = seal_segment(KEY, index, data, compressed=compressed, plain_size=plain_size)
    assert len(ciphertext) == len(data) + TAG_SIZE
    opened = open_segment(KEY, index, ciphertext, compressed=compressed, plain_size=plain_size)
    assert opened == data


def test_new_content_keys_are_fresh_32_byte_keys() -> None:
    keys = {new_content_key() for _ in range(16)}
    assert len(keys) == 16
    assert all(len(key) == KEY_SIZE for key in keys)


def test_each_segment_index_gets_its_own_nonce() -> None:
    data = bytes(64)
    first = seal_segment(KEY, 0, data, compressed=False, plain_size=64)
    second = seal_segment(KEY, 1, data, compressed=False, plain_size=64)
    assert first[:64] != second[:64]


def test_open_rejects_a_wrong_key() -> None:
    with pytest.raises(ContentError, match="segment 7: authentication failed") as caught:
        open_segment(OTHER_KEY, 7, sealed(), compressed=True, plain_size=1000)
    assert OTHER_KEY.hex() not in str(caught.value)
    assert repr(OTHER_KEY) not in str(caught.value)


def test_open_rejects_a_flipped_ciphertext_byte() -> None:
    tampered = bytearray(sealed())
    tampered[3] ^= 0x01
    with pytest.raises(ContentError, match="authentication failed"):
        open_segment(KEY, 7, bytes(tampered), compressed=True, plain_size=1000)


def test_open_rejects_a_flipped_tag_byte() -> None:
    tampered = bytearray(sealed())
    tampered[-1] ^= 0x80
    with pytest.raises(ContentError, match="authentication failed"):
        open_segment(KEY, 7, bytes(tampered), compressed=True, plain_size=1000)


def test_open_rejects_a_wrong_index() -> None:
    with pytest.raises(ContentError, match="segment 8: authentication failed"):
        open_segment(KEY, 8, sealed(), compressed=True, plain_size=1000)


def test_open_rejects_a_wrong_compressed_flag() -> None:
    with pytest.raises(ContentError, match="authentication failed"):
        open_segment(KEY, 7, sealed(), compressed=False, plain_size=1000)


def test_open_rejects_a_wrong_plain_size() -> None:
    with pytest.raises(ContentError, match="authentication failed"):
        open_segment(KEY, 7, sealed(), compressed=True, plain_size=1001)


def test_open_rejects_ciphertext_shorter_than_the_tag() -> None:
    with pytest.raises(ContentError, match="shorter than the 16-byte tag"):
        open_segment(KEY, 7, sealed()[: TAG_SIZE - 1], compressed=True, plain_size=1000)


def test_open_rejects_a_truncated_ciphertext() -> None:
    with pytest.raises(ContentError, match="authentication failed"):
        open_segment(KEY, 7, sealed()[1:], compressed=True, plain_size=1000)


def test_seal_rejects_a_short_key_without_showing_it() -> None:
    short = KEY[:-1]
    with pytest.raises(ValueError, match="content key must be 32 bytes") as caught:
        seal_segment(short, 0, b"x", compressed=False, plain_size=1)
    assert short.hex() not in str(caught.value)


def test_open_rejects_a_long_key() -> None:
    with pytest.raises(ValueError, match="content key must be 32 bytes"):
        open_segment(KEY + b"\x00", 7, sealed(), compressed=True, plain_size=1000)


def test_seal_rejects_a_key_that_is_not_bytes() -> None:
    with pytest.raises(ValueError, match="content key must be 32 bytes"):
        seal_segment(KEY.hex()[:32], 0, b"x", compressed=False, plain_size=1)  # type: ignore[arg-type]


def test_seal_rejects_a_negative_index() -> None:
    with pytest.raises(ValueError, match="segment index -1"):
        seal_segment(KEY, -1, b"x", compressed=False, plain_size=1)


def test_seal_rejects_an_index_past_64_bits() -> None:
    with pytest.raises(ValueError, match="segment index"):
        seal_segment(KEY, 1 << 64, b"x", compressed=False, plain_size=1)


# -- erasure -------------------------------------------------------------------


CODEC = ErasureCodec(4, 2)


@CHECK
@given(
    size=sizes_around(4, 4),
    k=st.integers(1, 6),
    m=st.integers(0, 3),
    data=st.data(),
)
def test_erasure_round_trip_from_any_k_shards(size: int, k: int, m: int, data: Any) -> None:
    codec = ErasureCodec(k, m)
    payload = random_bytes(size)
    shards = codec.encode(payload)
    assert len(shards) == k + m
    assert {len(s) for s in shards} == {codec.shard_size(size)}
    assert codec.shard_size(size) == -(-size // k)
    chosen = data.draw(st.permutations(range(k + m)))[:k]
    assert codec.decode({n: shards[n] for n in chosen}, size) == payload


@CHECK
@given(size=sizes_around(4, 4))
def test_erasure_primaries_are_the_data_padded_with_zeros(size: int) -> None:
    payload = random_bytes(size)
    shards = CODEC.encode(payload)
    padding = 4 * CODEC.shard_size(size) - size
    assert b"".join(shards[:4]) == payload + bytes(padding)


def test_erasure_of_empty_data_is_empty_shards() -> None:
    assert CODEC.encode(b"") == [b""] * 6
    assert CODEC.decode({1: b"", 2: b"", 4: b"", 5: b""}, 0) == b""


def test_erasure_decodes_from_more_than_k_shards() -> None:
    payload = random_bytes(1001)
    shards = CODEC.encode(payload)
    assert CODEC.decode(dict(enumerate(shards)), 1001) == payload
    assert CODEC.decode({n: shards[n] for n in (0, 2, 3, 4, 5)}, 1001) == payload


def test_erasure_fast_path_does_not_run_the_decoder() -> None:
    codec = ErasureCodec(4, 2)
    payload = random_bytes(1001)
    shards = codec.encode(payload)

    class NoDecoder:
        def decode(self, *args: object) -> None:
            raise AssertionError("zfec decoder called with all primaries present")

    codec._decoder = NoDecoder()
    assert codec.decode({n: shards[n] for n in (3, 0, 5, 2, 1)}, 1001) == payload


def test_erasure_decode_does_not_change_the_given_shards() -> None:
    shards = CODEC.encode(random_bytes(1001))
    given_shards = {5: shards[5], 4: shards[4], 1: shards[1], 0: shards[0]}
    before = list(given_shards.items())
    CODEC.decode(given_shards, 1001)
    assert list(given_shards.items()) == before


def test_erasure_codec_without_parity() -> None:
    codec = ErasureCodec(3, 0)
    shards = codec.encode(b"abcdefg")
    assert shards == [b"abc", b"def", b"g\x00\x00"]
    assert codec.decode(dict(enumerate(shards)), 7) == b"abcdefg"


def test_erasure_codec_allows_256_shards() -> None:
    codec = ErasureCodec(200, 56)
    shards = codec.encode(random_bytes(5000))
    assert codec.decode({n: shards[n] for n in range(56, 256)}, 5000) == random_bytes(5000)


def test_erasure_codec_rejects_k_zero() -> None:
    with pytest.raises(ValueError, match="erasure k is 0"):
        ErasureCodec(0, 2)


def test_erasure_codec_rejects_negative_m() -> None:
    with pytest.raises(ValueError, match="erasure m is -1"):
        ErasureCodec(4, -1)


def test_erasure_codec_rejects_more_than_256_shards() -> None:
    with pytest.raises(ValueError, match="k \\+ m = 257"):
        ErasureCodec(200, 57)


def test_erasure_codec_rejects_a_non_integer() -> None:
    with pytest.raises(ValueError, match="erasure k must be an integer"):
        ErasureCodec(4.0, 2)  # type: ignore[arg-type]


def test_erasure_decode_rejects_too_few_shards() -> None:
    shards = CODEC.encode(random_bytes(1000))
    with pytest.raises(ContentError, match=r"need 4 shards to decode, got 3: \[0, 2, 5\]"):
        CODEC.decode({n: shards[n] for n in (0, 2, 5)}, 1000)


def test_erasure_decode_rejects_an_index_past_the_last_shard() -> None:
    shards = CODEC.encode(random_bytes(1000))
    given_shards = {0: shards[0], 1: shards[1], 2: shards[2], 6: shards[3]}
    with pytest.raises(ContentError, match=r"shard index 6 is outside 0\.\.5"):
        CODEC.decode(given_shards, 1000)


def test_erasure_decode_rejects_a_negative_index() -> None:
    shards = CODEC.encode(random_bytes(1000))
    given_shards = {-1: shards[0], 1: shards[1], 2: shards[2], 3: shards[3]}
    with pytest.raises(ContentError, match="shard index -1 is outside"):
        CODEC.decode(given_shards, 1000)


def test_erasure_decode_rejects_unequal_shard_sizes() -> None:
    shards = CODEC.encode(random_bytes(1000))
    given_shards = {0: shards[0], 1: shards[1], 4: shards[4], 5: shards[5] + b"\x00"}
    with pytest.raises(ContentError, match="shard 5 is 251 bytes"):
        CODEC.decode(given_shards, 1000)


def test_erasure_decode_rejects_shards_too_small_for_the_data_size() -> None:
    shards = CODEC.encode(random_bytes(1000))
    with pytest.raises(ContentError, match="make shards of 251 bytes"):
        CODEC.decode(dict(enumerate(shards)), 1001)


def test_erasure_decode_rejects_a_negative_data_size() -> None:
    with pytest.raises(ContentError, match="data size"):
        CODEC.decode({}, -1)


# -- segment codec ---------------------------------------------------------------


def encoded(
    data: bytes, *, index: int = 3, key: bytes | None = KEY, compress: bool = True
) -> EncodedSegment:
    return encode_segment(index, data, key=key, codec=CODEC, compress=compress)


def decode_args(segment: EncodedSegment, key: bytes | None = KEY) -> dict[str, Any]:
    return {
        "index": segment.index,
        "plain_size": segment.plain_size,
        "stored_size": segment.stored_size,
        "compressed": segment.compressed,
        "key": key,
        "codec": CODEC,
        "addresses": segment.addresses,
    }


def some_shards(segment: EncodedSegment, numbers: tuple[int, ...]) -> Mapping[int, bytes]:
    return {n: segment.shards[n] for n in numbers}


TEXT = text_bytes(SEG)
RANDOM = random_bytes(SEG)


@CHECK
@given(
    size=sizes_around(SEG, 1),
    text=st.booleans(),
    encrypted=st.booleans(),
    compress=st.booleans(),
    index=st.integers(0, 1 << 40),
)
def test_segment_round_trip(
    size: int, text: bool, encrypted: bool, compress: bool, index: int
) -> None:
    data = text_bytes(size) if text else random_bytes(size)
    key = KEY if encrypted else None
    segment = encoded(data, index=index, key=key, compress=compress)
    assert segment.index == index
    assert segment.plain_size == size
    assert segment.compressed == (compress and len(compress_segment(data)[0]) < size)
    assert segment.shard_size == -(-segment.stored_size // 4)
    assert [len(s) for s in segment.shards] == [segment.shard_size] * 6
    assert segment.addresses == [blake3.blake3(s).digest() for s in segment.shards]
    for numbers in ((0, 1, 2, 3), (2, 3, 4, 5)):
        shards = some_shards(segment, numbers)
        assert decode_segment(shards, **decode_args(segment, key)) == data


def test_encrypted_uncompressed_segment_stores_plain_size_plus_tag() -> None:
    segment = encoded(RANDOM)
    assert not segment.compressed
    assert segment.stored_size == SEG + TAG_SIZE


def test_public_segment_stores_the_plain_bytes() -> None:
    segment = encoded(RANDOM, key=None)
    assert b"".join(segment.shards[:4])[:SEG] == RANDOM


def test_encrypted_shards_do_not_hold_the_plain_bytes() -> None:
    segment = encoded(RANDOM, compress=False)
    assert RANDOM[:64] not in b"".join(segment.shards)


def test_encoded_segment_repr_leaves_out_the_shards() -> None:
    text = repr(encoded(TEXT))
    assert "shards=6" in text
    assert len(text) < 200


@pytest.mark.parametrize("lost", list(itertools.combinations(range(6), 2)), ids=str)
def test_segment_decodes_after_losing_any_two_of_six_shards(lost: tuple[int, int]) -> None:
    for data in (TEXT, RANDOM):
        segment = encoded(data)
        kept = tuple(n for n in range(6) if n not in lost)
        assert decode_segment(some_shards(segment, kept), **decode_args(segment)) == data


def test_segment_decode_rejects_a_shard_that_does_not_match_its_address() -> None:
    segment = encoded(TEXT)
    shards = dict(some_shards(segment, (0, 1, 2, 5)))
    shards[2] = bytes([shards[2][0] ^ 1]) + shards[2][1:]
    with pytest.raises(ContentError, match="segment 3: shard 2 does not match its BLAKE3 address"):
        decode_segment(shards, **decode_args(segment))


def test_segment_decode_rejects_a_wrong_key() -> None:
    segment = encoded(TEXT)
    with pytest.raises(ContentError, match="segment 3: authentication failed"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **decode_args(segment, OTHER_KEY))


def test_segment_decode_rejects_a_flipped_ciphertext_byte() -> None:
    # Without addresses to check, the AES-GCM tag still catches the change.
    segment = encoded(TEXT)
    shards = dict(some_shards(segment, (0, 1, 2, 3)))
    shards[1] = shards[1][:10] + bytes([shards[1][10] ^ 0x40]) + shards[1][11:]
    with pytest.raises(ContentError, match="authentication failed"):
        decode_segment(shards, **(decode_args(segment) | {"addresses": None}))


def test_segment_decode_rejects_a_wrong_index() -> None:
    segment = encoded(TEXT)
    with pytest.raises(ContentError, match="segment 4: authentication failed"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **(decode_args(segment) | {"index": 4}))


def test_segment_decode_rejects_a_wrong_compressed_flag() -> None:
    segment = encoded(RANDOM)
    assert not segment.compressed
    # A plausible lie: the stored size is a possible frame size for this plain size.
    args = decode_args(segment) | {"compressed": True}
    with pytest.raises(ContentError, match="authentication failed"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_a_wrong_plain_size() -> None:
    segment = encoded(TEXT)
    assert segment.compressed
    args = decode_args(segment) | {"plain_size": SEG - 1}
    with pytest.raises(ContentError, match="authentication failed"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_public_segment_decode_rejects_a_wrong_plain_size() -> None:
    # No tag to bind the size: the lz4 frame itself must not fit the lie.
    segment = encoded(TEXT, key=None)
    args = decode_args(segment, None) | {"plain_size": SEG + 100}
    with pytest.raises(ContentError, match=f"segment 3: lz4 frame holds {SEG} bytes"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_a_stored_size_that_does_not_fit_an_uncompressed_segment() -> None:
    segment = encoded(RANDOM)
    args = decode_args(segment) | {"stored_size": segment.stored_size - 1}
    with pytest.raises(ContentError, match="does not fit an uncompressed segment"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_a_stored_size_that_does_not_fit_the_shards() -> None:
    segment = encoded(TEXT)
    args = decode_args(segment) | {"stored_size": segment.stored_size + 4}
    with pytest.raises(ContentError, match="segment 3: shard 0 is"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_a_plain_size_above_the_segment_limit() -> None:
    segment = encoded(TEXT)
    args = decode_args(segment) | {"plain_size": MAX_SEGMENT_SIZE + 1}
    with pytest.raises(ContentError, match="plain size 67108865 is outside"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_too_few_shards() -> None:
    segment = encoded(TEXT)
    with pytest.raises(ContentError, match="segment 3: need 4 shards to decode, got 3"):
        decode_segment(some_shards(segment, (0, 4, 5)), **decode_args(segment))


def test_segment_decode_rejects_unequal_shard_sizes() -> None:
    segment = encoded(TEXT)
    shards = dict(some_shards(segment, (0, 1, 2, 3)))
    shards[3] = shards[3][:-1]
    with pytest.raises(ContentError, match="segment 3: shard 3 is"):
        decode_segment(shards, **(decode_args(segment) | {"addresses": None}))


def test_segment_decode_rejects_a_shard_index_out_of_range() -> None:
    segment = encoded(TEXT)
    shards = dict(some_shards(segment, (0, 1, 2)))
    shards[6] = segment.shards[3]
    with pytest.raises(ContentError, match="segment 3: shard index 6 is outside"):
        decode_segment(shards, **decode_args(segment))


def test_segment_decode_rejects_the_wrong_number_of_addresses() -> None:
    segment = encoded(TEXT)
    args = decode_args(segment) | {"addresses": segment.addresses[:5]}
    with pytest.raises(ContentError, match="5 shard addresses given; k \\+ m is 6"):
        decode_segment(some_shards(segment, (0, 1, 2, 3)), **args)


def test_segment_decode_rejects_shards_from_another_segment() -> None:
    segment = encoded(TEXT)
    other = replace(segment, shards=encoded(text_bytes(SEG, seed=9)).shards)
    with pytest.raises(ContentError, match="shard 0 does not match"):
        decode_segment(some_shards(other, (0, 1, 2, 3)), **decode_args(segment))


def test_encode_segment_rejects_a_segment_above_the_limit() -> None:
    with pytest.raises(ValueError, match="the limit is"):
        encode_segment(0, bytes(MAX_SEGMENT_SIZE + 1), key=None, codec=CODEC)
