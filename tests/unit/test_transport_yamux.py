"""FastYamux over an in-memory secure connection: frames, flow control, stream ends.

No sockets: each end's "secure connection" is an in-memory pipe that keeps a
record of every message it was given, so the tests can check the frames on
the wire as well as what the streams return. A stock py-libp2p Yamux can sit
at either end to show the frames are the same protocol.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamEOF,
    MuxedStreamError,
    MuxedStreamReset,
)
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.transport.noise import MAX_PLAINTEXT_LENGTH
from protocols.transport.window import INITIAL_WINDOW
from protocols.transport.yamux import (
    FLAG_SYN,
    TYPE_DATA,
    TYPE_WINDOW_UPDATE,
    FastYamux,
    FastYamuxStream,
    frame_header,
)
from tests.unit.memory_stream import MemoryStream, memory_stream_pair

HEADER = struct.Struct("!BBHII")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class MemorySecureConn:
    """One end of an in-memory secure connection, recording each message sent."""

    def __init__(self, stream: MemoryStream, initiator: bool) -> None:
        self.stream = stream
        self.is_initiator = initiator
        self.messages: list[bytes] = []

    async def read(self, n: int | None = None) -> bytes:
        return await self.stream.read(n)

    async def write(self, data: bytes) -> None:
        self.messages.append(bytes(data))
        await self.stream.write(data)

    async def close(self) -> None:
        if not self.stream.closed:
            await self.stream.close()

    def get_remote_address(self) -> None:
        return None

    def frames(self) -> list[tuple[int, int, int, int]]:
        """(type, flags, stream id, length) of every frame sent, in order."""
        wire = b"".join(self.messages)
        frames, pos = [], 0
        while pos < len(wire):
            _, typ, flags, sid, length = HEADER.unpack_from(wire, pos)
            frames.append((typ, flags, sid, length))
            pos += 12 + (length if typ == TYPE_DATA else 0)
        return frames


class BatchingSecureConn(MemorySecureConn):
    """Like our Noise session: several messages in one send."""

    def __init__(self, stream: MemoryStream, initiator: bool) -> None:
        super().__init__(stream, initiator)
        self.sends = 0

    async def write_messages(self, messages: Sequence[bytes]) -> None:
        self.sends += 1
        self.messages.extend(bytes(m) for m in messages)
        await self.stream.write(b"".join(messages))


@asynccontextmanager
async def connected(
    dialer_cls: type[Yamux] = FastYamux,
    listener_cls: type[Yamux] = FastYamux,
    *,
    max_chunk: int | None = None,
) -> AsyncIterator[tuple[Any, Any, BatchingSecureConn, BatchingSecureConn]]:
    a, b = memory_stream_pair(max_chunk=max_chunk)
    conn_a, conn_b = BatchingSecureConn(a, True), BatchingSecureConn(b, False)
    peer = ID.from_pubkey(create_new_key_pair().public_key)
    dialer = dialer_cls(conn_a, peer, is_initiator=True)  # type: ignore[arg-type]
    listener = listener_cls(conn_b, peer, is_initiator=False)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dialer.start)
        nursery.start_soon(listener.start)
        await dialer.event_started.wait()
        await listener.event_started.wait()
        yield dialer, listener, conn_a, conn_b
        nursery.cancel_scope.cancel()


async def read_exactly(stream: Any, n: int) -> bytes:
    received = bytearray()
    while len(received) < n:
        received += await stream.read(n - len(received))
    return bytes(received)


async def read_all(stream: Any, size: int = 65536) -> bytes:
    received = bytearray()
    while True:
        try:
            received += await stream.read(size)
        except MuxedStreamEOF:
            return bytes(received)


async def test_data_frames_fit_one_noise_message_and_go_out_four_to_a_send() -> None:
    async with connected() as (dialer, listener, conn_a, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        conn_a.messages.clear()
        sends_before = conn_a.sends
        payload = os.urandom(INITIAL_WINDOW)  # exactly the credit a new stream has
        await stream.write(payload)
        sizes = [len(m) for m in conn_a.messages]
        assert max(sizes) == MAX_PLAINTEXT_LENGTH
        assert all(typ == TYPE_DATA for typ, *_ in conn_a.frames())
        assert sum(length for *_, length in conn_a.frames()) == INITIAL_WINDOW
        assert conn_a.sends - sends_before == 2  # 5 frames: 4 + 1
        assert await read_exactly(accepted, INITIAL_WINDOW) == payload


@pytest.mark.parametrize("max_chunk", [None, 1000, 7])
async def test_any_chunking_of_the_connection_delivers_the_same_bytes(
    max_chunk: int | None,
) -> None:
    async with connected(max_chunk=max_chunk) as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        payload = os.urandom(300_000 if max_chunk != 7 else 20_000)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    await stream.write(payload)
                    await stream.close()

                nursery.start_soon(send)
                assert await read_all(accepted, 4099) == payload


async def test_credit_returns_at_half_the_window_not_after_every_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (dialer, listener, _, conn_b):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        size = 8 * INITIAL_WINDOW
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.write(bytes(size))
                await stream.close()

            nursery.start_soon(send)
            received = 0
            while received < size:
                received += len(await accepted.read(4096))
                await trio.sleep(0.1)  # a slow reader: the window never grows
        updates = [
            length
            for typ, flags, _, length in conn_b.frames()
            if typ == TYPE_WINDOW_UPDATE and not flags
        ]
        # Half a window each, just the credit the sender needed (stock sends
        # one update per read: 512 here). None after the FIN.
        assert updates == [INITIAL_WINDOW // 2] * ((size - INITIAL_WINDOW) // (INITIAL_WINDOW // 2))


async def test_window_grows_only_by_what_updates_advertise() -> None:
    async with connected() as (dialer, listener, _, conn_b):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        size = 64 * INITIAL_WINDOW
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.write(bytes(size))
                await stream.close()

            nursery.start_soon(send)
            assert len(await read_all(accepted, 1 << 20)) == size
        granted = sum(length for typ, _, _, length in conn_b.frames() if typ == TYPE_WINDOW_UPDATE)
        # The sender never had more credit than the spec's first window plus
        # the updates, and it needed all the bytes it sent.
        assert INITIAL_WINDOW + granted >= size
        assert isinstance(accepted, FastYamuxStream)
        assert accepted.window.target > INITIAL_WINDOW  # a fast reader earns a larger window


async def test_a_reader_that_stalls_does_not_break_the_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        payload = os.urandom(4 * INITIAL_WINDOW)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.write(payload)  # blocks on credit while the reader sleeps
                await stream.close()

            nursery.start_soon(send)
            first = await accepted.read(1000)
            await trio.sleep(7)  # stock fails a writer after 5 s without credit
            rest = await read_all(accepted)
        assert first + rest == payload


async def test_writer_out_of_credit_can_be_cancelled_and_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        with trio.move_on_after(1):
            await stream.write(bytes(INITIAL_WINDOW) + b"x" * 10)
        assert stream.send_window == 0  # the first window went out, nothing more
        assert len(await read_exactly(accepted, INITIAL_WINDOW)) == INITIAL_WINDOW
        await stream.write(b"more")
        await stream.close()
        assert await read_all(accepted) == b"more"


async def test_end_of_stream_after_the_data_then_eof_again() -> None:
    async with connected() as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        await stream.write(b"hello")
        await stream.close()
        accepted = await listener.accept_stream()
        assert await accepted.read(2) == b"he"
        assert await accepted.read(-1) == b"llo"
        for _ in range(2):
            with pytest.raises(MuxedStreamEOF):
                await accepted.read(10)
        with pytest.raises(MuxedStreamError):
            await stream.write(b"after close")
        # Half-close: the other direction still works.
        await accepted.write(b"reply")
        await accepted.close()
        assert await read_all(stream) == b"reply"
        assert stream.stream_id not in dialer.streams  # both ends closed: forgotten


async def test_reset_mid_transfer_is_seen_by_reader_and_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        errors: dict[str, type[BaseException]] = {}
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                try:
                    while True:
                        await stream.write(bytes(100_000))
                except MuxedStreamError as error:
                    errors["writer"] = type(error)

            nursery.start_soon(send)
            await accepted.read(50_000)
            await accepted.reset()
            with pytest.raises(MuxedStreamReset):
                await accepted.read(10)
        assert errors["writer"] is MuxedStreamReset
        # As stock: read(n) of a stream the peer reset is the end of it,
        # reading everything raises the reset.
        with pytest.raises(MuxedStreamEOF):
            await stream.read(10)
        with pytest.raises(MuxedStreamReset):
            await stream.read()
        assert stream.stream_id not in dialer.streams
        assert accepted.stream_id not in listener.streams


async def test_data_beyond_the_granted_credit_resets_the_stream() -> None:
    async with connected() as (dialer, listener, conn_a, conn_b):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        # A peer that ignores flow control: one more byte than the first window.
        for _ in range(4):
            header = frame_header(TYPE_DATA, 0, stream.stream_id, INITIAL_WINDOW // 4)
            await conn_a.stream.write(header + bytes(INITIAL_WINDOW // 4))
        await conn_a.stream.write(frame_header(TYPE_DATA, 0, stream.stream_id, 1) + b"!")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(MuxedStreamReset):
            await accepted.read(10)
        assert (TYPE_WINDOW_UPDATE, 0x8, stream.stream_id, 0) in conn_b.frames()


async def test_a_syn_for_a_stream_in_use_is_answered_with_rst() -> None:
    async with connected() as (dialer, listener, conn_a, conn_b):
        stream = await dialer.open_stream()
        await listener.accept_stream()
        await conn_a.stream.write(frame_header(TYPE_WINDOW_UPDATE, FLAG_SYN, stream.stream_id, 0))
        await trio.testing.wait_all_tasks_blocked()
        assert (TYPE_WINDOW_UPDATE, 0x8, stream.stream_id, 0) in conn_b.frames()


async def test_fin_that_comes_with_ack_is_honoured() -> None:
    # Stock ignores FIN when it shares a frame with ACK; go-yamux may send it so.
    async with connected() as (dialer, _listener, conn_a, _):
        stream = await dialer.open_stream()
        ack_fin = 0x2 | 0x4
        await _peer_sends(conn_a, frame_header(TYPE_DATA, ack_fin, stream.stream_id, 2) + b"ok")
        assert await read_all(stream) == b"ok"


async def _peer_sends(conn: MemorySecureConn, data: bytes) -> None:
    """Bytes arriving at ``conn``'s own end, as if the peer had sent them."""
    conn.stream.feed(data)
    await trio.testing.wait_all_tasks_blocked()


async def test_closing_the_connection_wakes_parked_readers_and_writers() -> None:
    async with connected() as (dialer, listener, _, _):
        stream = await dialer.open_stream()
        accepted = await listener.accept_stream()
        await stream.write(bytes(INITIAL_WINDOW))  # now out of credit
        outcomes: dict[str, type[BaseException]] = {}

        async def blocked(name: str, operation: Any) -> None:
            try:
                await operation()
            except MuxedStreamError as error:
                outcomes[name] = type(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked, "writer", lambda: stream.write(b"x"))
            nursery.start_soon(blocked, "reader", lambda: stream.read(10))
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(5):
                await dialer.close()
        assert outcomes == {"writer": MuxedStreamError, "reader": MuxedStreamEOF}
        assert dialer.is_closed
        with trio.fail_after(5):
            await listener.event_closed.wait()  # the peer's GO_AWAY ended it there too
        with pytest.raises(MuxedStreamReset):
            await accepted.read(10)
        with pytest.raises(MuxedConnUnavailable):
            await listener.accept_stream()


async def test_keepalive_ping_is_answered() -> None:
    async with connected() as (_dialer, _, conn_a, _):
        await _peer_sends(conn_a, struct.pack("!BBHII", 0, 2, FLAG_SYN, 0, 77))
        # The dialer's own connection is where the pong goes out.
        assert (2, 0x2, 0, 77) in conn_a.frames()


@pytest.mark.parametrize(("dialer_cls", "listener_cls"), [(FastYamux, Yamux), (Yamux, FastYamux)])
async def test_stock_yamux_at_either_end(
    dialer_cls: type[Yamux], listener_cls: type[Yamux]
) -> None:
    async with connected(dialer_cls, listener_cls) as (dialer, listener, _, _):
        streams = []
        for _ in range(3):
            streams.append((await dialer.open_stream(), await listener.accept_stream()))
        payload = os.urandom(3 * INITIAL_WINDOW + 12_345)
        digest = hashlib.sha256(payload).hexdigest()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for sender, _ in streams:

                    async def send(sender: Any = sender) -> None:
                        await sender.write(payload)
                        await sender.close()

                    nursery.start_soon(send)
                for _, receiver in streams:
                    assert hashlib.sha256(await read_all(receiver)).hexdigest() == digest
            # And back, on the same streams.
            for sender, receiver in streams:
                await receiver.write(b"done")
                await receiver.close()
                assert await read_all(sender) == b"done"
