"""The framing loop: varints, frame caps, serve_stream's close/reset discipline, StreamGate,
exchange/send_one_way and the client-side StreamPool.

Everything runs on in-memory streams; timers run on the autojump MockClock, so
the idle and stall timeouts cost no real time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import (
    MAX_VARINT_BYTES,
    ByteStream,
    Counters,
    FrameReader,
    StreamGate,
    StreamPool,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
    exchange,
    send_one_way,
    serve_stream,
)
from protocols.ids import WireLimits
from tests.unit.memory_stream import EofStyle, MemoryStream, loaded_stream, memory_stream_pair

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None)
LIMITS = WireLimits(max_frame=64, idle_timeout=10.0, max_streams_per_peer=2)
PEER_A = b"peer-a"
PEER_B = b"peer-b"
EOF_STYLES: list[EofStyle] = ["empty", "error"]

# -- varints -----------------------------------------------------------------


@CHECK
@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert 1 <= len(encoded) <= MAX_VARINT_BYTES
    assert decode_uvarint(encoded) == (value, len(encoded))
    # Decoding at an offset, with trailing bytes, reads exactly the varint.
    assert decode_uvarint(b"\xaa" + encoded + b"\x01\x02", 1) == (value, 1 + len(encoded))


@CHECK
@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_varint_prefix_is_incomplete(value: int) -> None:
    encoded = encode_uvarint(value)
    for cut in range(len(encoded)):
        assert decode_uvarint(encoded[:cut]) is None


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16384, b"\x80\x80\x01"),
        ((1 << 63) - 1, b"\xff" * 8 + b"\x7f"),
    ],
)
def test_varint_known_encodings(value: int, encoded: bytes) -> None:
    # From the multiformats unsigned-varint spec's examples.
    assert encode_uvarint(value) == encoded
    assert decode_uvarint(encoded) == (value, len(encoded))


def test_varint_max_is_nine_bytes() -> None:
    assert MAX_VARINT_BYTES == 9
    assert len(encode_uvarint((1 << 63) - 1)) == 9
    for bad in (-1, 1 << 63, 1 << 70):
        with pytest.raises(LocalProtocolError) as info:
            encode_uvarint(bad)
        assert info.value.reason == "varint_range"


@pytest.mark.parametrize("length", [9, 10, 11, 64])
def test_endless_varint_is_rejected(length: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_uvarint(b"\xff" * length + b"\x01")
    assert info.value.reason == "varint_too_long"


@pytest.mark.parametrize(
    "encoded", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00", b"\x80" * 8 + b"\x00"]
)
def test_non_minimal_varint_is_rejected(encoded: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_uvarint(encoded)
    assert info.value.reason == "varint_not_minimal"


def test_encode_frame_respects_cap() -> None:
    assert encode_frame(b"x" * 64, 64) == b"\x40" + b"x" * 64
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(b"x" * 65, 64)
    assert info.value.reason == "frame_too_large"


# -- FrameReader -------------------------------------------------------------


def _read_all(stream: MemoryStream, max_frame: int) -> list[bytes]:
    async def main() -> list[bytes]:
        reader = FrameReader(stream, max_frame)
        frames = []
        while (frame := await reader.read_frame()) is not None:
            frames.append(frame)
        return frames

    return trio.run(main)


@CHECK
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    max_chunk=st.one_of(st.none(), st.integers(min_value=1, max_value=17)),
    eof=st.sampled_from(EOF_STYLES),
)
def test_frame_reader_round_trip_any_chunking(
    payloads: list[bytes], max_chunk: int | None, eof: EofStyle
) -> None:
    data = b"".join(encode_frame(p, 300) for p in payloads)
    stream = loaded_stream(data, eof=eof, max_chunk=max_chunk)
    assert _read_all(stream, 300) == payloads
    assert stream.unread == 0


@pytest.mark.parametrize("eof", EOF_STYLES)
async def test_clean_eof_returns_none(eof: EofStyle) -> None:
    reader = FrameReader(loaded_stream(b"", eof=eof), 64)
    assert await reader.read_frame() is None
    assert not reader.mid_frame


@pytest.mark.parametrize("eof", EOF_STYLES)
async def test_empty_frame_then_eof(eof: EofStyle) -> None:
    reader = FrameReader(loaded_stream(b"\x00", eof=eof), 64)
    assert await reader.read_frame() == b""
    assert await reader.read_frame() is None


@pytest.mark.parametrize("eof", EOF_STYLES)
async def test_frame_exactly_at_cap(eof: EofStyle) -> None:
    payload = bytes(range(64))
    reader = FrameReader(loaded_stream(encode_frame(payload, 64), eof=eof, max_chunk=5), 64)
    assert await reader.read_frame() == payload
    assert await reader.read_frame() is None


async def test_frame_over_cap_rejected_before_body_is_read() -> None:
    body = b"b" * 65
    # One byte per read: the reader must stop right after the length.
    stream = loaded_stream(encode_uvarint(65) + body, max_chunk=1)
    reader = FrameReader(stream, 64)
    with pytest.raises(RemoteProtocolError) as info:
        await reader.read_frame()
    assert info.value.reason == "frame_too_large"
    assert stream.delivered == 1
    assert stream.unread == len(body)


async def test_frame_over_cap_rejected_without_waiting_for_body() -> None:
    # A huge announced length and no body at all: rejected at once, not after
    # waiting for (and buffering) megabytes.
    stream = loaded_stream(encode_uvarint(1 << 40), end=False)
    reader = FrameReader(stream, 2 * 1024 * 1024)
    with trio.fail_after(1), pytest.raises(RemoteProtocolError) as info:
        await reader.read_frame()
    assert info.value.reason == "frame_too_large"


@pytest.mark.parametrize("eof", EOF_STYLES)
@pytest.mark.parametrize(
    "data",
    [
        b"\x05abc",  # body cut short
        b"\x05",  # length only
        b"\x80",  # stream ends inside the length
        b"\x02ab\x03a",  # second frame cut short
    ],
)
async def test_truncated_frame(eof: EofStyle, data: bytes) -> None:
    reader = FrameReader(loaded_stream(data, eof=eof, max_chunk=2), 64)
    with pytest.raises(RemoteProtocolError) as info:
        while await reader.read_frame() is not None:
            pass
    assert info.value.reason == "truncated_frame"


async def test_endless_varint_on_stream() -> None:
    # The reader gives up after nine continuation bytes, without waiting for more.
    stream = loaded_stream(b"\xff" * 9, end=False, max_chunk=1)
    with trio.fail_after(1), pytest.raises(RemoteProtocolError) as info:
        await FrameReader(stream, 64).read_frame()
    assert info.value.reason == "varint_too_long"


async def test_non_minimal_length_on_stream() -> None:
    stream = loaded_stream(b"\x81\x00" + b"x")
    with pytest.raises(RemoteProtocolError) as info:
        await FrameReader(stream, 64).read_frame()
    assert info.value.reason == "varint_not_minimal"


async def test_mid_frame_tracks_partial_frames(autojump_clock: trio.testing.MockClock) -> None:
    stream, _ = memory_stream_pair()
    reader = FrameReader(stream, 64)
    stream.feed(b"\x02a")
    with trio.move_on_after(1):
        await reader.read_frame()
    assert reader.mid_frame
    stream.feed(b"b")
    assert await reader.read_frame() == b"ab"
    assert not reader.mid_frame


# -- serve_stream ------------------------------------------------------------


def decode_request(frame: bytes) -> bytes:
    if not frame.startswith(b"req:"):
        raise RemoteProtocolError("garbage", "not a request")
    return frame[4:]


def encode_response(response: bytes) -> bytes:
    return b"resp:" + response


class EchoHandler:
    """Echoes requests; ``bad`` is refused, ``quiet`` gets no response."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    async def __call__(self, peer: bytes, request: bytes) -> bytes | None:
        self.calls.append((peer, request))
        if request == b"bad":
            raise RemoteProtocolError("invalid_request", "refused")
        if request == b"quiet":
            return None
        if request == b"huge":
            return b"x" * 200
        return request


Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]


def serve(
    stream: MemoryStream,
    peer: bytes,
    handler: Handler,
    counters: Counters,
    gate: StreamGate | None = None,
    limits: WireLimits = LIMITS,
) -> Callable[[], Awaitable[None]]:
    return partial(
        serve_stream,
        stream,
        peer,
        limits=limits,
        decode=decode_request,
        encode=encode_response,
        handler=handler,
        counters=counters,
        gate=gate,
    )


async def send(stream: MemoryStream, payload: bytes) -> None:
    await stream.write(encode_frame(payload, 1024))


@pytest.mark.parametrize("eof", EOF_STYLES)
async def test_serve_request_response_loop_then_clean_close(eof: EofStyle) -> None:
    client, server = memory_stream_pair(eof=eof, max_chunk=3)
    handler = EchoHandler()
    counters = Counters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, handler, counters))
        reader = FrameReader(client, 1024)
        for word in (b"one", b"two", b"", b"three"):
            await send(client, b"req:" + word)
            assert await reader.read_frame() == b"resp:" + word
        # Several frames written back to back are answered in order.
        await client.write(encode_frame(b"req:x", 64) + encode_frame(b"req:y", 64))
        assert await reader.read_frame() == b"resp:x"
        assert await reader.read_frame() == b"resp:y"
        await client.close()
        assert await reader.read_frame() is None
    assert handler.calls == [(PEER_A, w) for w in (b"one", b"two", b"", b"three", b"x", b"y")]
    assert server.close_calls == 1
    assert not server.was_reset
    assert counters.snapshot() == {"served": 6}


async def test_serve_garbage_resets_and_counts_without_calling_handler() -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    await send(client, b"this is not a request")
    await serve(server, PEER_A, handler, counters)()
    assert server.was_reset
    assert not server.closed
    assert handler.calls == []
    assert counters.snapshot() == {"garbage": 1}
    assert server.written == b""
    with pytest.raises(trio.BrokenResourceError):
        await client.read(10)


async def test_serve_garbage_after_good_frames() -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    await send(client, b"req:ok")
    await send(client, b"nonsense")
    await send(client, b"req:never")
    await serve(server, PEER_A, handler, counters)()
    assert handler.calls == [(PEER_A, b"ok")]
    assert server.was_reset
    assert counters.snapshot() == {"served": 1, "garbage": 1}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode_uvarint(65) + b"x" * 65, "frame_too_large"),
        (b"\xff" * 12, "varint_too_long"),
        (b"\x80\x00", "varint_not_minimal"),
        (b"\x10req:", "truncated_frame"),
    ],
)
async def test_serve_bad_framing_resets_and_counts(data: bytes, reason: str) -> None:
    stream = loaded_stream(data)
    handler = EchoHandler()
    counters = Counters()
    await serve(stream, PEER_A, handler, counters)()
    assert stream.was_reset
    assert not stream.closed
    assert handler.calls == []
    assert counters.snapshot() == {reason: 1}


async def test_serve_frame_at_cap_is_served() -> None:
    payload = b"req:" + b"z" * (LIMITS.max_frame - 4)
    stream = loaded_stream(encode_frame(payload, LIMITS.max_frame))
    calls: list[bytes] = []

    async def handler(peer: bytes, request: bytes) -> bytes:
        calls.append(request)
        return b"ok"

    counters = Counters()
    await serve(stream, PEER_A, handler, counters)()
    assert calls == [b"z" * (LIMITS.max_frame - 4)]
    assert stream.written == encode_frame(b"resp:ok", 64)
    assert stream.closed and not stream.was_reset


async def test_serve_handler_remote_error_resets_and_counts() -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    await send(client, b"req:bad")
    await send(client, b"req:after")
    await serve(server, PEER_A, handler, counters)()
    assert server.was_reset
    assert not server.closed
    assert server.written == b""
    assert handler.calls == [(PEER_A, b"bad")]
    assert counters.snapshot() == {"invalid_request": 1}


async def test_serve_handler_returning_none_writes_nothing() -> None:
    stream = loaded_stream(encode_frame(b"req:quiet", 64) + encode_frame(b"req:hi", 64))
    handler = EchoHandler()
    counters = Counters()
    await serve(stream, PEER_A, handler, counters)()
    assert stream.written == encode_frame(b"resp:hi", 64)
    assert stream.closed and not stream.was_reset
    assert counters.snapshot() == {"served": 2}


async def test_serve_broken_stream_resets_and_counts() -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, handler, counters))
        await send(client, b"req:partial")
        await trio.testing.wait_all_tasks_blocked()
        await client.reset()
    assert server.was_reset
    assert counters.get("stream_broken") == 1


async def test_serve_local_error_propagates_and_resets() -> None:
    stream = loaded_stream(encode_frame(b"req:huge", 64))
    handler = EchoHandler()
    counters = Counters()
    with pytest.raises(LocalProtocolError):
        await serve(stream, PEER_A, handler, counters)()
    assert stream.was_reset


async def test_serve_handler_bug_propagates_and_resets() -> None:
    # Our own bug is not swallowed or counted as the peer's fault, but the
    # peer still gets a reset rather than a stream left hanging.
    async def buggy(peer: bytes, request: bytes) -> bytes:
        raise KeyError("bug")

    gate = StreamGate(1)
    stream = loaded_stream(encode_frame(b"req:x", 64))
    counters = Counters()
    with pytest.raises(KeyError):
        await serve(stream, PEER_A, buggy, counters, gate)()
    assert stream.was_reset
    assert counters.snapshot() == {}
    assert gate.open_streams(PEER_A) == 0


async def test_serve_cancelled_ends_the_stream_and_releases_the_gate() -> None:
    _client, server = memory_stream_pair()
    gate = StreamGate(1)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve(server, PEER_A, EchoHandler(), Counters(), gate))
            await trio.testing.wait_all_tasks_blocked()
            assert gate.open_streams(PEER_A) == 1
            scope.cancel()
    # Shutting down may close or reset, but must not leave the stream open.
    assert server.closed or server.was_reset
    assert gate.open_streams(PEER_A) == 0


async def test_serve_idle_timeout_between_frames_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    reader = FrameReader(client, 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, handler, counters))
        await send(client, b"req:one")
        assert await reader.read_frame() == b"resp:one"
        answered_at = trio.current_time()
        # Then silence: the server gives up after idle_timeout and closes cleanly.
        assert await reader.read_frame() is None
        assert trio.current_time() - answered_at == pytest.approx(LIMITS.idle_timeout)
    assert server.closed and not server.was_reset
    assert counters.snapshot() == {"served": 1, "idle_close": 1}


async def test_serve_idle_timeout_before_first_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _client, server = memory_stream_pair()
    counters = Counters()
    await serve(server, PEER_A, EchoHandler(), counters)()
    assert trio.current_time() == pytest.approx(LIMITS.idle_timeout)
    assert server.closed and not server.was_reset
    assert counters.snapshot() == {"idle_close": 1}


async def test_serve_frames_within_idle_timeout_keep_stream_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = memory_stream_pair()
    counters = Counters()
    reader = FrameReader(client, 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, EchoHandler(), counters))
        for _ in range(5):
            await trio.sleep(LIMITS.idle_timeout * 0.9)
            await send(client, b"req:tick")
            assert await reader.read_frame() == b"resp:tick"
        await client.close()
    assert counters.snapshot() == {"served": 5}
    assert server.closed and not server.was_reset


@pytest.mark.parametrize("partial_frame", [b"\x05re", b"\x05", b"\x80"])
async def test_serve_stall_mid_frame_resets(
    autojump_clock: trio.testing.MockClock, partial_frame: bytes
) -> None:
    client, server = memory_stream_pair()
    handler = EchoHandler()
    counters = Counters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, handler, counters))
        await client.write(partial_frame)
        with pytest.raises(trio.BrokenResourceError):
            await client.read(10)
    assert trio.current_time() == pytest.approx(LIMITS.idle_timeout)
    assert server.was_reset and not server.closed
    assert handler.calls == []
    assert counters.snapshot() == {"stalled_frame": 1}


# -- StreamGate --------------------------------------------------------------


def test_stream_gate_counts_per_peer() -> None:
    gate = StreamGate(2)
    assert gate.try_enter(PEER_A)
    assert gate.try_enter(PEER_A)
    assert not gate.try_enter(PEER_A)
    assert gate.try_enter(PEER_B)
    assert gate.open_streams(PEER_A) == 2
    gate.leave(PEER_A)
    assert gate.open_streams(PEER_A) == 1
    assert gate.try_enter(PEER_A)
    for _ in range(2):
        gate.leave(PEER_A)
    assert gate.open_streams(PEER_A) == 0
    assert gate.open_streams(PEER_B) == 1


async def test_stream_gate_limits_concurrent_streams_per_peer() -> None:
    gate = StreamGate(LIMITS.max_streams_per_peer)
    counters = Counters()
    handler = EchoHandler()
    pairs: dict[bytes, list[tuple[MemoryStream, MemoryStream]]] = {PEER_A: [], PEER_B: []}
    async with trio.open_nursery() as nursery:
        # Peer A opens four streams at once; peer B two.
        for peer, count in ((PEER_A, 4), (PEER_B, 2)):
            for _ in range(count):
                client, server = memory_stream_pair()
                pairs[peer].append((client, server))
                nursery.start_soon(serve(server, peer, handler, counters, gate))
        await trio.testing.wait_all_tasks_blocked()
        # Which two of A's streams lose depends on scheduling order; that two do does not.
        assert counters.get("too_many_streams") == 2
        admitted = {peer: [c for c, s in pairs[peer] if not s.was_reset] for peer in pairs}
        assert len(admitted[PEER_A]) == 2
        assert len(admitted[PEER_B]) == 2
        for client, server in pairs[PEER_A]:
            if server.was_reset:
                assert not server.closed
                assert server.written == b""
                with pytest.raises(trio.BrokenResourceError):
                    await client.read(10)
        assert gate.open_streams(PEER_A) == 2
        assert gate.open_streams(PEER_B) == 2
        # The admitted streams, and peer B's, work normally.
        for peer, clients in admitted.items():
            for client in clients:
                await send(client, b"req:" + peer)
                assert await FrameReader(client, 1024).read_frame() == b"resp:" + peer
        # When one of A's streams ends, A may open another.
        await admitted[PEER_A][0].close()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.open_streams(PEER_A) == 1
        client, server = memory_stream_pair()
        nursery.start_soon(serve(server, PEER_A, handler, counters, gate))
        await trio.testing.wait_all_tasks_blocked()
        assert not server.was_reset
        assert gate.open_streams(PEER_A) == 2
        for clients in admitted.values():
            for open_client in clients:
                await open_client.close()
        await client.close()
    assert counters.snapshot() == {"too_many_streams": 2, "served": 4}
    assert gate.open_streams(PEER_A) == 0
    assert gate.open_streams(PEER_B) == 0
    assert sorted(handler.calls) == sorted(
        [(PEER_A, PEER_A), (PEER_A, PEER_A), (PEER_B, PEER_B), (PEER_B, PEER_B)]
    )


async def test_stream_gate_released_after_errors() -> None:
    gate = StreamGate(1)
    counters = Counters()
    for data in (b"\x03bad", b"\xff" * 10, encode_frame(b"req:bad", 64)):
        stream = loaded_stream(data)
        await serve(stream, PEER_A, EchoHandler(), counters, gate)()
        assert stream.was_reset
        assert gate.open_streams(PEER_A) == 0
    assert counters.get("too_many_streams") == 0


# -- exchange / send_one_way ------------------------------------------------


async def test_exchange_closes_on_success() -> None:
    client, server = memory_stream_pair(max_chunk=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve(server, PEER_A, EchoHandler(), Counters()))
        response = await exchange(client, b"req:hello", max_frame=64)
    assert response == b"resp:hello"
    assert client.closed and not client.was_reset
    assert server.closed and not server.was_reset


@pytest.mark.parametrize("eof", EOF_STYLES)
async def test_exchange_resets_when_no_response(eof: EofStyle) -> None:
    client, server = memory_stream_pair(eof=eof)
    await server.close()
    with pytest.raises(RemoteProtocolError) as info:
        await exchange(client, b"req", max_frame=64)
    assert info.value.reason == "refused"
    assert client.was_reset and not client.closed


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (encode_uvarint(65) + b"x" * 65, "frame_too_large"),
        (b"\x05ab", "truncated_frame"),
        (b"\xff" * 10, "varint_too_long"),
    ],
)
async def test_exchange_resets_on_bad_response(reply: bytes, reason: str) -> None:
    client, server = memory_stream_pair()
    await server.write(reply)
    await server.close()
    with pytest.raises(RemoteProtocolError) as info:
        await exchange(client, b"req", max_frame=64)
    assert info.value.reason == reason
    assert client.was_reset and not client.closed


async def test_exchange_resets_on_transport_failure() -> None:
    client, server = memory_stream_pair()
    await server.reset()
    with pytest.raises(trio.BrokenResourceError):
        await exchange(client, b"req", max_frame=64)
    assert client.was_reset


async def test_exchange_resets_when_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    client, _server = memory_stream_pair()
    with pytest.raises(trio.TooSlowError), trio.fail_after(3):
        await exchange(client, b"req", max_frame=64)
    assert client.was_reset and not client.closed


async def test_exchange_refuses_oversized_request() -> None:
    client, _server = memory_stream_pair()
    with pytest.raises(LocalProtocolError):
        await exchange(client, b"x" * 65, max_frame=64)
    assert client.was_reset
    assert client.written == b""


async def test_send_one_way_writes_one_frame_and_closes() -> None:
    client, server = memory_stream_pair()
    await send_one_way(client, b"note", max_frame=64)
    assert client.closed and not client.was_reset
    reader = FrameReader(server, 64)
    assert await reader.read_frame() == b"note"
    assert await reader.read_frame() is None


async def test_send_one_way_resets_on_failure() -> None:
    client, server = memory_stream_pair()
    await server.reset()
    with pytest.raises(trio.BrokenResourceError):
        await send_one_way(client, b"note", max_frame=64)
    assert client.was_reset and not client.closed


def test_counters() -> None:
    counters = Counters()
    assert counters.get("x") == 0
    counters.inc("x")
    counters.inc("x", 2)
    counters.inc("y")
    assert counters.get("x") == 3
    snapshot = counters.snapshot()
    assert snapshot == {"x": 3, "y": 1}
    snapshot["x"] = 99
    assert counters.get("x") == 3


# -- StreamPool --------------------------------------------------------------

PROTO = "/test/1.0.0"
POOL_IDLE = 3.0


class EchoNetwork:
    """A StreamOpener whose streams are served by serve_stream + EchoHandler."""

    def __init__(
        self, nursery: trio.Nursery, limits: WireLimits = LIMITS, handler: Handler | None = None
    ) -> None:
        self.nursery = nursery
        self.limits = limits
        self.handler = handler or EchoHandler()
        self.counters = Counters()
        self.opened: list[tuple[bytes, str, MemoryStream, MemoryStream]] = []

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        client, server = memory_stream_pair()
        self.opened.append((peer_id, protocol, client, server))
        self.nursery.start_soon(
            serve(server, peer_id, self.handler, self.counters, limits=self.limits)
        )
        return client

    def clients(self) -> list[MemoryStream]:
        return [client for _, _, client, _ in self.opened]


def pool_for(net: EchoNetwork, **kwargs: int) -> StreamPool:
    return StreamPool(net.open, max_frame=1024, idle_seconds=POOL_IDLE, **kwargs)


async def test_pool_reuses_a_stream_per_peer_and_protocol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery)
        pool = pool_for(net)
        for word in (b"a", b"b", b"c"):
            assert await pool.request(PEER_A, (), PROTO, b"req:" + word) == b"resp:" + word
        assert len(net.opened) == 1
        assert pool.idle_streams == 1
        await pool.request(PEER_B, (), PROTO, b"req:x")
        await pool.request(PEER_A, (), "/other/1.0.0", b"req:y")
        assert [(peer, proto) for peer, proto, _, _ in net.opened] == [
            (PEER_A, PROTO),
            (PEER_B, PROTO),
            (PEER_A, "/other/1.0.0"),
        ]
        assert pool.idle_streams == 3
        assert not any(c.closed or c.was_reset for c in net.clients())
        nursery.cancel_scope.cancel()
    assert net.counters.snapshot() == {"served": 5}


async def test_pool_opens_a_fresh_stream_after_idle_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery)
        pool = pool_for(net)
        await pool.request(PEER_A, (), PROTO, b"req:1")
        await trio.sleep(POOL_IDLE * 0.9)
        await pool.request(PEER_A, (), PROTO, b"req:2")
        assert len(net.opened) == 1
        await trio.sleep(POOL_IDLE * 1.1)
        assert await pool.request(PEER_A, (), PROTO, b"req:3") == b"resp:3"
        assert len(net.opened) == 2
        assert pool.idle_streams == 1
        nursery.cancel_scope.cancel()


async def test_pool_closes_streams_it_expires(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery)
        pool = pool_for(net)
        await pool.request(PEER_A, (), PROTO, b"req:1")
        await trio.sleep(POOL_IDLE * 1.1)
        await pool.request(PEER_A, (), PROTO, b"req:2")
        stale = net.clients()[0]
        nursery.cancel_scope.cancel()
    assert stale.closed or stale.was_reset


async def test_pool_expired_entries_do_not_block_new_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery)
        pool = pool_for(net, max_idle_total=2)
        await pool.request(PEER_A, (), PROTO, b"req:a")
        await pool.request(PEER_B, (), PROTO, b"req:b")
        await trio.sleep(POOL_IDLE * 1.1)
        peer_c = b"peer-c"
        await pool.request(peer_c, (), PROTO, b"req:c1")
        await pool.request(peer_c, (), PROTO, b"req:c2")
        nursery.cancel_scope.cancel()
    # Both requests to C should share one stream: A's and B's entries have expired.
    assert [peer for peer, _, _, _ in net.opened].count(peer_c) == 1


async def test_pool_retries_on_a_fresh_stream_when_the_kept_one_died(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server's idle timeout is shorter than the pool's: the kept stream is
    # closed under us, and the request must quietly move to a new stream.
    short = WireLimits(max_frame=64, idle_timeout=POOL_IDLE / 2, max_streams_per_peer=2)
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery, limits=short)
        pool = pool_for(net)
        await pool.request(PEER_A, (), PROTO, b"req:1")
        await trio.sleep(POOL_IDLE * 0.9)
        assert await pool.request(PEER_A, (), PROTO, b"req:2") == b"resp:2"
        first, second = net.clients()
        assert first.was_reset
        assert not second.was_reset and not second.closed
        assert pool.idle_streams == 1
        nursery.cancel_scope.cancel()
    assert net.counters.snapshot() == {"served": 2, "idle_close": 1}


async def test_pool_does_not_retry_a_fresh_stream() -> None:
    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery)
        pool = pool_for(net)
        with pytest.raises(trio.BrokenResourceError):
            await pool.request(PEER_A, (), PROTO, b"req:bad")
        [client] = net.clients()
        assert client.was_reset
        assert pool.idle_streams == 0
    assert net.counters.snapshot() == {"invalid_request": 1}


async def test_pool_resets_on_bad_response_and_forgets_the_stream() -> None:
    async def liar(peer: bytes, request: bytes) -> bytes:
        return b"x" * 100  # over the pool's max_frame of 64

    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery, limits=WireLimits(200, 10.0, 2), handler=liar)
        pool = StreamPool(net.open, max_frame=64, idle_seconds=POOL_IDLE)
        with pytest.raises(RemoteProtocolError) as info:
            await pool.request(PEER_A, (), PROTO, b"req:1")
        assert info.value.reason == "frame_too_large"
        assert net.clients()[0].was_reset
        assert pool.idle_streams == 0


async def test_pool_resets_when_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(peer: bytes, request: bytes) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery, handler=silent)
        pool = pool_for(net)
        with trio.move_on_after(1):
            await pool.request(PEER_A, (), PROTO, b"req:1")
        [client] = net.clients()
        assert client.was_reset and not client.closed
        assert pool.idle_streams == 0
        nursery.cancel_scope.cancel()


async def test_pool_caps_idle_streams_per_peer() -> None:
    release = trio.Event()

    async def slow_echo(peer: bytes, request: bytes) -> bytes:
        await release.wait()
        return request

    async with trio.open_nursery() as nursery:
        net = EchoNetwork(nursery, handler=slow_echo)
        pool = pool_for(net, max_idle_per_peer=2)
        async with trio.open_nursery() as requests:
            for _ in range(3):
                requests.start_soon(pool.request, PEER_A, (), PROTO, b"req:r")
            await trio.testing.wait_all_tasks_blocked()
            assert len(net.opened) == 3
            release.set()
        assert pool.idle_streams == 2
        assert sum(c.closed for c in net.clients()) == 1
        assert not any(c.was_reset for c in net.clients())
        nursery.cancel_scope.cancel()
