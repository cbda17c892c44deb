"""/zhtp/store/1.0.0 messages: round-trips, golden vectors, bitmaps, hostile input.

The golden bytes in tests/vectors/store/messages.json were assembled by hand
from proto/store.proto's field numbers; the small protobuf writer below builds
hostile inputs the same way, so none of these bytes come from our encoder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import encode_uvarint
from protocols.store.messages import (
    ADDRESS_BYTES,
    CONTRACT_ID_BYTES,
    MAX_CHUNK,
    MAX_DETAIL_CHARS,
    MAX_HAS_ADDRESSES,
    MAX_UINT64,
    Ack,
    Chunk,
    Fetch,
    FetchHeader,
    Has,
    HasResult,
    NotFound,
    Refused,
    RefuseReason,
    StoreBegin,
    Stored,
    StoreMessage,
    StoreReady,
    decode_message,
    encode_message,
    pack_bitmap,
    unpack_bitmap,
)

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "store" / "messages.json"
ADDRESS = bytes(range(32))
CONTRACT = bytes.fromhex("c0ffee00" * 8)

# oneof field numbers of StoreMessage.body
BEGIN, READY, CHUNK, ACK, STORED, REFUSED, FETCH, HEADER, NOT_FOUND, HAS, HAS_RESULT = range(1, 12)

# -- a tiny protobuf writer for hand-built inputs -------------------------------


def field_varint(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(data)) + data


def body(number: int, inner: bytes = b"") -> bytes:
    """A StoreMessage whose oneof member ``number`` holds ``inner``."""
    return field_bytes(number, inner)


def reason_of(data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(data)
    reason: str = info.value.reason
    return reason


def local_reason_of(message: Any) -> str:
    with pytest.raises(LocalProtocolError) as info:
        encode_message(message)
    reason: str = info.value.reason
    return reason


# -- round trips ---------------------------------------------------------------

UINT64 = st.integers(min_value=0, max_value=MAX_UINT64)
addresses = st.binary(min_size=ADDRESS_BYTES, max_size=ADDRESS_BYTES)
messages: st.SearchStrategy[StoreMessage] = st.one_of(
    st.builds(
        StoreBegin,
        address=addresses,
        size=st.integers(min_value=1, max_value=MAX_UINT64),
        contract_id=st.just(b"")
        | st.binary(min_size=CONTRACT_ID_BYTES, max_size=CONTRACT_ID_BYTES),
    ),
    st.builds(StoreReady, window=st.integers(min_value=1, max_value=MAX_UINT64)),
    st.builds(Chunk, data=st.binary(min_size=1, max_size=2048)),
    st.builds(Ack, received=UINT64),
    st.builds(Stored, address=addresses, already_held=st.booleans()),
    st.builds(
        Refused, reason=st.sampled_from(RefuseReason), detail=st.text(max_size=MAX_DETAIL_CHARS)
    ),
    st.builds(
        Fetch,
        address=addresses,
        offset=UINT64,
        length=st.none() | st.integers(min_value=1, max_value=MAX_UINT64),
    ),
    UINT64.flatmap(
        lambda total: st.integers(0, total).flatmap(
            lambda offset: st.integers(0, total - offset).map(
                lambda length: FetchHeader(total, offset, length)
            )
        )
    ),
    st.just(NotFound()),
    st.builds(Has, addresses=st.lists(addresses, max_size=40).map(tuple)),
    st.builds(HasResult, held=st.lists(st.booleans(), max_size=100).map(tuple)),
)


@CHECK
@given(messages)
def test_round_trip(message: StoreMessage) -> None:
    encoded = encode_message(message)
    decoded = decode_message(encoded)
    assert decoded == message
    assert encode_message(decoded) == encoded  # one encoding per message


@CHECK
@given(st.lists(st.booleans(), max_size=MAX_HAS_ADDRESSES).map(tuple))
def test_bitmap_round_trip(bits: tuple[bool, ...]) -> None:
    packed = pack_bitmap(bits)
    assert len(packed) == (len(bits) + 7) // 8
    assert unpack_bitmap(packed, len(bits)) == bits


def test_bitmap_is_least_significant_bit_first() -> None:
    assert pack_bitmap((True,)) == b"\x01"
    assert pack_bitmap((False,) * 7 + (True,)) == b"\x80"
    assert pack_bitmap((False,) * 8 + (True,)) == b"\x00\x01"


def test_messages_at_every_limit_round_trip() -> None:
    for message in (
        Chunk(b"c" * MAX_CHUNK),
        Chunk(b"c"),
        Has((ADDRESS,) * MAX_HAS_ADDRESSES),
        HasResult((True,) * MAX_HAS_ADDRESSES),
        Refused(RefuseReason.CORRUPT, "é" * MAX_DETAIL_CHARS),  # characters, not bytes
        StoreBegin(ADDRESS, MAX_UINT64, b"c" * CONTRACT_ID_BYTES),
        Fetch(ADDRESS, MAX_UINT64, MAX_UINT64),
        FetchHeader(MAX_UINT64, 0, MAX_UINT64),
    ):
        assert decode_message(encode_message(message)) == message


# -- golden vectors ------------------------------------------------------------


def _load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


def message_from_json(vector: dict[str, Any]) -> StoreMessage:
    m = vector["message"]
    match vector["kind"]:
        case "begin":
            return StoreBegin(
                bytes.fromhex(m["address"]), m["size"], bytes.fromhex(m["contract_id"])
            )
        case "ready":
            return StoreReady(m["window"])
        case "chunk":
            return Chunk(bytes.fromhex(m["data"]))
        case "ack":
            return Ack(m["received"])
        case "stored":
            return Stored(bytes.fromhex(m["address"]), m["already_held"])
        case "refused":
            return Refused(RefuseReason[m["reason"]], m["detail"])
        case "fetch":
            return Fetch(bytes.fromhex(m["address"]), m["offset"], m["length"])
        case "fetch_header":
            return FetchHeader(m["total_size"], m["offset"], m["length"])
        case "not_found":
            return NotFound()
        case "has":
            return Has(tuple(bytes.fromhex(a) for a in m["addresses"]))
        case "has_result":
            return HasResult(tuple(m["held"]))
    raise AssertionError(f"unknown vector kind {vector['kind']}")


VECTOR_NAMES = [v["name"] for v in _load_vectors()]


def test_vector_file_covers_every_message() -> None:
    kinds = {v["kind"] for v in _load_vectors()}
    assert kinds == {
        "begin",
        "ready",
        "chunk",
        "ack",
        "stored",
        "refused",
        "fetch",
        "fetch_header",
        "not_found",
        "has",
        "has_result",
    }
    assert len(set(VECTOR_NAMES)) == len(VECTOR_NAMES)


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_encode(vector: dict[str, Any]) -> None:
    assert encode_message(message_from_json(vector)).hex() == vector["encoded"]


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_decode(vector: dict[str, Any]) -> None:
    assert decode_message(bytes.fromhex(vector["encoded"])) == message_from_json(vector)


def test_begin_vector_matches_hand_assembly() -> None:
    vector = next(v for v in _load_vectors() if v["name"] == "begin")
    inner = b"\x0a\x20" + ADDRESS + b"\x10" + encode_uvarint(4 * 1024 * 1024)
    assert bytes.fromhex(vector["encoded"]) == b"\x0a" + bytes([len(inner)]) + inner


def test_begin_with_contract_vector_matches_hand_assembly() -> None:
    vector = next(v for v in _load_vectors() if v["name"] == "begin_with_contract")
    inner = b"\x0a\x20" + b"\xaa" * 32 + b"\x10\x01" + b"\x1a\x20" + CONTRACT
    assert bytes.fromhex(vector["encoded"]) == b"\x0a" + bytes([len(inner)]) + inner
    assert message_from_json(vector) == StoreBegin(b"\xaa" * 32, 1, CONTRACT)


def test_refused_no_contract_vector_matches_hand_assembly() -> None:
    vector = next(v for v in _load_vectors() if v["name"] == "refused_no_contract")
    detail = b"no active contract covers this shard"
    inner = b"\x08\x08" + b"\x12" + bytes([len(detail)]) + detail
    assert bytes.fromhex(vector["encoded"]) == b"\x32" + bytes([len(inner)]) + inner
    assert message_from_json(vector) == Refused(RefuseReason.NO_CONTRACT, detail.decode())


def test_has_result_vector_matches_hand_assembly() -> None:
    vector = next(v for v in _load_vectors() if v["name"] == "has_result")
    # count 9; bitmap 0b00001101, 0b00000001: entries 0, 2, 3 and 8 held.
    assert bytes.fromhex(vector["encoded"]) == b"\x5a\x06\x08\x09\x12\x02\x0d\x01"


# -- hostile input: framing of the oneof ---------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\x0a",  # begin without a length
        b"\x0a\x10abc",  # begin shorter than its length
        b"\x1a\x05\x0a\x09ab",  # chunk data cut short
        b"garbage!garbage!",
    ],
)
def test_garbage(data: bytes) -> None:
    assert reason_of(data) == "garbage"


def test_refusal_detail_not_utf8_is_garbage() -> None:
    assert reason_of(body(REFUSED, field_bytes(2, b"\xff\xfe"))) == "garbage"


def test_empty_message_is_unknown() -> None:
    assert reason_of(b"") == "unknown_message"


def test_unknown_oneof_member_is_unknown() -> None:
    # Field 12 is no member of the oneof today: a newer peer's message type.
    assert reason_of(body(12, field_varint(1, 7))) == "unknown_message"


def test_unknown_fields_inside_a_message_are_ignored() -> None:
    data = body(ACK, field_varint(1, 5) + field_bytes(15, b"future"))
    assert decode_message(data) == Ack(5)


def test_last_oneof_member_wins() -> None:
    # Protobuf semantics: a later member of a oneof replaces an earlier one.
    data = body(ACK, field_varint(1, 5)) + body(NOT_FOUND)
    assert decode_message(data) == NotFound()


@settings(CHECK, max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_message(data)


# -- hostile input: one test per rule ------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
@pytest.mark.parametrize("number", [BEGIN, STORED, FETCH], ids=["begin", "stored", "fetch"])
def test_address_of_wrong_length(number: int, length: int) -> None:
    inner = field_bytes(1, b"a" * length) + field_varint(2, 1)
    assert reason_of(body(number, inner)) == "bad_address"


def test_has_address_of_wrong_length() -> None:
    data = body(HAS, field_bytes(1, ADDRESS) + field_bytes(1, b"short"))
    assert reason_of(data) == "bad_address"


def test_begin_with_size_zero() -> None:
    assert reason_of(body(BEGIN, field_bytes(1, ADDRESS))) == "empty_shard"


@pytest.mark.parametrize("length", [1, 3, 31, 33, 64])
def test_begin_with_contract_id_of_wrong_length(length: int) -> None:
    inner = field_bytes(1, ADDRESS) + field_varint(2, 10) + field_bytes(3, b"c" * length)
    assert reason_of(body(BEGIN, inner)) == "bad_contract_id"


def test_begin_with_empty_or_32_byte_contract_id() -> None:
    inner = field_bytes(1, ADDRESS) + field_varint(2, 10)
    assert decode_message(body(BEGIN, inner)) == StoreBegin(ADDRESS, 10)
    with_contract = body(BEGIN, inner + field_bytes(3, CONTRACT))
    assert decode_message(with_contract) == StoreBegin(ADDRESS, 10, CONTRACT)


def test_ready_with_window_zero() -> None:
    assert reason_of(body(READY)) == "bad_window"


def test_empty_chunk() -> None:
    assert reason_of(body(CHUNK)) == "empty_chunk"


def test_chunk_too_large() -> None:
    assert reason_of(body(CHUNK, field_bytes(1, b"x" * (MAX_CHUNK + 1)))) == "chunk_too_large"


def test_refusal_detail_too_long() -> None:
    detail = ("d" * (MAX_DETAIL_CHARS + 1)).encode()
    assert reason_of(body(REFUSED, field_varint(1, 1) + field_bytes(2, detail))) == (
        "detail_too_long"
    )


def test_unknown_refusal_reason_decodes_to_unspecified() -> None:
    data = body(REFUSED, field_varint(1, 99) + field_bytes(2, b"new"))
    assert decode_message(data) == Refused(RefuseReason.UNSPECIFIED, "new")
    # The first number after NO_CONTRACT is unknown too.
    assert decode_message(body(REFUSED, field_varint(1, 9))) == Refused(RefuseReason.UNSPECIFIED)


def test_refusal_reason_no_contract_is_8() -> None:
    assert int(RefuseReason.NO_CONTRACT) == 8
    assert decode_message(body(REFUSED, field_varint(1, 8))) == Refused(RefuseReason.NO_CONTRACT)


def test_fetch_header_range_beyond_total() -> None:
    inner = field_varint(1, 100) + field_varint(2, 60) + field_varint(3, 41)
    assert reason_of(body(HEADER, inner)) == "bad_fetch_header"


def test_fetch_with_length_zero_means_to_the_end() -> None:
    data = body(FETCH, field_bytes(1, ADDRESS) + field_varint(2, 7))
    assert decode_message(data) == Fetch(ADDRESS, 7, None)


def test_has_with_too_many_addresses() -> None:
    data = body(HAS, field_bytes(1, ADDRESS) * (MAX_HAS_ADDRESSES + 1))
    assert reason_of(data) == "too_many_addresses"


def test_has_result_count_too_large() -> None:
    count = MAX_HAS_ADDRESSES + 8
    inner = field_varint(1, count) + field_bytes(2, b"\x00" * (count // 8))
    assert reason_of(body(HAS_RESULT, inner)) == "too_many_addresses"


@pytest.mark.parametrize(("count", "bitmap"), [(9, b"\x01"), (8, b"\x01\x00"), (0, b"\x00")])
def test_has_result_bitmap_of_wrong_length(count: int, bitmap: bytes) -> None:
    inner = field_varint(1, count) + field_bytes(2, bitmap)
    assert reason_of(body(HAS_RESULT, inner)) == "bad_bitmap"


def test_has_result_padding_bits_set() -> None:
    inner = field_varint(1, 3) + field_bytes(2, b"\x08")
    assert reason_of(body(HAS_RESULT, inner)) == "bad_bitmap"


# -- encoding refuses what decoding would reject ---------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (StoreBegin(b"short", 1), "bad_address"),
        (StoreBegin(ADDRESS, 0), "empty_shard"),
        (StoreBegin(ADDRESS, MAX_UINT64 + 1), "uint64_range"),
        (StoreBegin(ADDRESS, 1, b"c" * (CONTRACT_ID_BYTES + 1)), "bad_contract_id"),
        (StoreBegin(ADDRESS, 1, b"c" * (CONTRACT_ID_BYTES - 1)), "bad_contract_id"),
        (StoreBegin(ADDRESS, 1, b"c"), "bad_contract_id"),
        (StoreReady(0), "bad_window"),
        (Chunk(b""), "bad_chunk"),
        (Chunk(b"x" * (MAX_CHUNK + 1)), "bad_chunk"),
        (Ack(-1), "uint64_range"),
        (Stored(b""), "bad_address"),
        (Refused(RefuseReason.FULL, "d" * (MAX_DETAIL_CHARS + 1)), "detail_too_long"),
        (Fetch(ADDRESS, 0, 0), "bad_length"),
        (Fetch(ADDRESS, -1), "uint64_range"),
        (FetchHeader(10, 5, 6), "bad_fetch_header"),
        (Has((ADDRESS,) * (MAX_HAS_ADDRESSES + 1)), "too_many_addresses"),
        (Has((ADDRESS, b"x")), "bad_address"),
        (HasResult((True,) * (MAX_HAS_ADDRESSES + 1)), "too_many_addresses"),
        ("not a message", "unknown_message"),
    ],
)
def test_encode_refuses_invalid_messages(message: Any, reason: str) -> None:
    assert local_reason_of(message) == reason
