"""/zhtp/ping/1.0.0: message round-trips, golden vectors, hostile input, handler and client.

The golden bytes in tests/vectors/ping_messages.json were assembled by hand
from proto/ping.proto's field numbers; the small protobuf writer below builds
hostile inputs the same way, so none of these bytes come from our encoder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import ByteStream, Counters, encode_uvarint, serve_stream
from protocols.ping.messages import (
    MAX_LISTEN_ADDRS,
    MAX_NONCE,
    MAX_VERSION_CHARS,
    MIN_NONCE,
    NodeStatus,
    Ping,
    Pong,
    Tier,
    decode_ping,
    decode_pong,
    encode_ping,
    encode_pong,
)
from protocols.ping.service import PingHandler, PingResult, ping
from tests.unit.memory_stream import MemoryStream, memory_stream_pair

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ping_messages.json"
ADDR = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes()
NONCE = bytes(range(16))
UINT64 = st.integers(min_value=0, max_value=(1 << 64) - 1)

# -- a tiny protobuf writer for hand-built inputs -------------------------------


def field_varint(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(data)) + data


def status_bytes(
    *,
    version: bytes = b"",
    addrs: Sequence[bytes] = (),
    free: int = 0,
    packed_tiers: Sequence[int] = (),
) -> bytes:
    out = field_bytes(1, version) if version else b""
    out += b"".join(field_bytes(2, a) for a in addrs)
    out += field_varint(3, free) if free else b""
    if packed_tiers:
        out += field_bytes(4, b"".join(encode_uvarint(t) for t in packed_tiers))
    return out


def pong_bytes(nonce: bytes = NONCE, status: bytes = b"") -> bytes:
    return field_bytes(1, nonce) + field_varint(2, 5) + field_varint(3, 6) + field_bytes(4, status)


def remote_reason(decode: Any, data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    reason: str = info.value.reason
    return reason


# -- round trips ---------------------------------------------------------------

nonces = st.binary(min_size=MIN_NONCE, max_size=MAX_NONCE)
statuses = st.builds(
    NodeStatus,
    version=st.text(max_size=MAX_VERSION_CHARS),
    listen_addrs=st.lists(
        st.sampled_from([ADDR, multiaddr.Multiaddr("/ip6/::1/tcp/4001").to_bytes()]),
        max_size=MAX_LISTEN_ADDRS,
    ).map(tuple),
    free_storage_bytes=UINT64,
    tiers=st.lists(st.sampled_from(Tier), max_size=6).map(tuple),
)
pings = st.builds(Ping, nonce=nonces, sent_at_ms=UINT64)
pongs = st.builds(Pong, nonce=nonces, sent_at_ms=UINT64, received_at_ms=UINT64, status=statuses)


@CHECK
@given(pings)
def test_ping_round_trip(message: Ping) -> None:
    assert decode_ping(encode_ping(message)) == message


@CHECK
@given(pongs)
def test_pong_round_trip(message: Pong) -> None:
    encoded = encode_pong(message)
    decoded = decode_pong(encoded)
    assert decoded == message
    assert encode_pong(decoded) == encoded  # one encoding per message


def test_pong_at_every_limit_round_trips() -> None:
    pong = Pong(
        nonce=b"n" * MAX_NONCE,
        sent_at_ms=(1 << 64) - 1,
        received_at_ms=(1 << 64) - 1,
        status=NodeStatus(
            version="é" * MAX_VERSION_CHARS,  # the cap is in characters, not bytes
            listen_addrs=(ADDR,) * MAX_LISTEN_ADDRS,
            free_storage_bytes=(1 << 64) - 1,
            tiers=tuple(Tier),
        ),
    )
    assert decode_pong(encode_pong(pong)) == pong


# -- golden vectors ------------------------------------------------------------


def _load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


def message_from_json(vector: dict[str, Any]) -> Ping | Pong:
    m = vector["message"]
    if vector["kind"] == "ping":
        return Ping(bytes.fromhex(m["nonce"]), m["sent_at_ms"])
    s = m["status"]
    status = NodeStatus(
        version=s["version"],
        listen_addrs=tuple(bytes.fromhex(a["hex"]) for a in s["listen_addrs"]),
        free_storage_bytes=s["free_storage_bytes"],
        tiers=tuple(Tier[t] for t in s["tiers"]),
    )
    return Pong(bytes.fromhex(m["nonce"]), m["sent_at_ms"], m["received_at_ms"], status)


VECTOR_NAMES = [v["name"] for v in _load_vectors()]


def test_vector_file_covers_both_messages() -> None:
    assert {v["kind"] for v in _load_vectors()} == {"ping", "pong"}
    assert len(set(VECTOR_NAMES)) == len(VECTOR_NAMES)


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_encode(vector: dict[str, Any]) -> None:
    message = message_from_json(vector)
    encoded = encode_ping(message) if isinstance(message, Ping) else encode_pong(message)
    assert encoded.hex() == vector["encoded"]


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_decode(vector: dict[str, Any]) -> None:
    decode = decode_ping if vector["kind"] == "ping" else decode_pong
    assert decode(bytes.fromhex(vector["encoded"])) == message_from_json(vector)


def test_golden_vector_addrs_are_the_multiaddrs_they_name() -> None:
    for vector in _load_vectors():
        for addr in vector["message"].get("status", {}).get("listen_addrs", []):
            assert multiaddr.Multiaddr(addr["text"]).to_bytes().hex() == addr["hex"]


def test_ping_vector_matches_hand_assembly() -> None:
    vector = next(v for v in _load_vectors() if v["name"] == "ping")
    expected = b"\x0a\x10" + bytes(range(16)) + b"\x10" + encode_uvarint(1_700_000_000_000)
    assert bytes.fromhex(vector["encoded"]) == expected


# -- nonce limits --------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, MIN_NONCE - 1, MAX_NONCE + 1, 1000])
def test_bad_nonce_length_rejected(length: int) -> None:
    nonce = b"n" * length
    assert remote_reason(decode_ping, field_bytes(1, nonce)) == "bad_nonce"
    assert remote_reason(decode_pong, pong_bytes(nonce=nonce)) == "bad_nonce"


@pytest.mark.parametrize("length", [MIN_NONCE, 16, MAX_NONCE])
def test_nonce_length_limits_are_inclusive(length: int) -> None:
    nonce = b"n" * length
    assert decode_ping(field_bytes(1, nonce)) == Ping(nonce, 0)
    assert decode_pong(pong_bytes(nonce=nonce)).nonce == nonce


def test_missing_nonce_rejected() -> None:
    assert remote_reason(decode_ping, b"") == "bad_nonce"
    assert remote_reason(decode_ping, field_varint(2, 123)) == "bad_nonce"


# -- tiers ---------------------------------------------------------------------


def test_unknown_tiers_are_ignored() -> None:
    # 0 is TIER_UNSPECIFIED; 9 and 200 are tiers a newer peer might serve.
    data = pong_bytes(status=status_bytes(packed_tiers=[1, 9, 0, 3, 200, 4]))
    assert decode_pong(data).status.tiers == (Tier.HOT, Tier.COLD, Tier.ARCHIVE)


def test_unpacked_tiers_are_read_too() -> None:
    # proto3 parsers must accept repeated enums unpacked as well as packed.
    status = b"".join(field_varint(4, t) for t in (2, 7, 1))
    assert decode_pong(pong_bytes(status=status)).status.tiers == (Tier.WARM, Tier.HOT)


# -- hostile input -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\x0a",  # nonce field without a length
        b"\x0a\x10abc",  # nonce shorter than its length
        b"\x0a\x08nonce123\x22\x05\x0a",  # status cut short
        b"garbage!garbage!",
    ],
)
def test_garbage(data: bytes) -> None:
    assert remote_reason(decode_ping, data) == "garbage"
    assert remote_reason(decode_pong, data) == "garbage"


def test_version_not_utf8_is_garbage() -> None:
    data = pong_bytes(status=status_bytes(version=b"\xff\xfe"))
    assert remote_reason(decode_pong, data) == "garbage"


def test_version_too_long() -> None:
    long_version = ("v" * (MAX_VERSION_CHARS + 1)).encode()
    assert remote_reason(decode_pong, pong_bytes(status=status_bytes(version=long_version))) == (
        "bad_status"
    )


def test_too_many_listen_addrs() -> None:
    data = pong_bytes(status=status_bytes(addrs=[ADDR] * (MAX_LISTEN_ADDRS + 1)))
    assert remote_reason(decode_pong, data) == "bad_status"


def test_pong_without_status_decodes_to_empty_status() -> None:
    data = field_bytes(1, NONCE) + field_varint(3, 9)
    assert decode_pong(data) == Pong(NONCE, 0, 9, NodeStatus("", (), 0, ()))


def test_unknown_fields_are_ignored() -> None:
    data = (
        field_bytes(1, NONCE)
        + field_varint(2, 3)
        + field_bytes(15, b"future")
        + field_varint(99, 1)
    )
    assert decode_ping(data) == Ping(NONCE, 3)


@settings(CHECK, max_examples=300)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    for decode in (decode_ping, decode_pong):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


# -- handler and client --------------------------------------------------------

STATUS = NodeStatus("zhtp/test", (ADDR,), 1234, (Tier.HOT, Tier.WARM))
LOCAL_PEER = b"\x00\x01L"


class PingNetwork:
    """Opens in-memory streams to a ping server run by ``serve_stream``."""

    def __init__(self, nursery: trio.Nursery, handler: Any) -> None:
        self.nursery = nursery
        self.handler = handler
        self.counters = Counters()
        self.streams: list[tuple[MemoryStream, MemoryStream]] = []

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        assert protocol == ids.PING
        client, server = memory_stream_pair()
        self.streams.append((client, server))
        self.nursery.start_soon(
            partial(
                serve_stream,
                server,
                LOCAL_PEER,
                limits=ids.PING_LIMITS,
                decode=decode_ping,
                encode=encode_pong,
                handler=self.handler,
                counters=self.counters,
            )
        )
        return client


async def test_ping_handler_echoes_nonce_and_reports_status() -> None:
    handler = PingHandler(lambda: STATUS, clock_ms=lambda: 42)
    pong = await handler.handle(b"peer", Ping(NONCE, 7))
    assert pong == Pong(NONCE, 7, 42, STATUS)


async def test_ping_end_to_end(autojump_clock: trio.testing.MockClock) -> None:
    handler = PingHandler(lambda: STATUS, clock_ms=lambda: 42)
    async with trio.open_nursery() as nursery:
        network = PingNetwork(nursery, handler.handle)
        result = await ping(network.open, b"\x00\x01R", (ADDR,))
    assert result == PingResult(rtt_seconds=0.0, status=STATUS)
    [(client, server)] = network.streams
    assert client.closed and not client.was_reset
    assert server.closed and not server.was_reset
    assert network.counters.snapshot() == {"served": 1}


async def test_ping_wrong_nonce_is_remote_error() -> None:
    async def impostor(peer: bytes, request: Ping) -> Pong:
        return Pong(bytes(reversed(request.nonce)), request.sent_at_ms, 0, STATUS)

    async with trio.open_nursery() as nursery:
        network = PingNetwork(nursery, impostor)
        with pytest.raises(RemoteProtocolError) as info:
            await ping(network.open, b"\x00\x01R")
    assert info.value.reason == "wrong_nonce"


async def test_ping_malformed_pong_is_remote_error() -> None:
    async def oversharer(peer: bytes, request: Ping) -> Pong:
        status = NodeStatus("v" * (MAX_VERSION_CHARS + 1), (), 0, ())
        return Pong(request.nonce, request.sent_at_ms, 0, status)

    async with trio.open_nursery() as nursery:
        network = PingNetwork(nursery, oversharer)
        with pytest.raises(RemoteProtocolError) as info:
            await ping(network.open, b"\x00\x01R")
    assert info.value.reason == "bad_status"


def test_junk_listen_addresses_are_dropped() -> None:
    pong = Pong(
        nonce=b"n" * MIN_NONCE,
        sent_at_ms=1,
        received_at_ms=2,
        status=NodeStatus(
            version="v",
            listen_addrs=(ADDR, b"\x04\x7f", b"", b"\xff" * 300),
            free_storage_bytes=0,
            tiers=(),
        ),
    )
    assert decode_pong(encode_pong(pong)).status.listen_addrs == (ADDR,)
