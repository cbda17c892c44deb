"""/zhtp/store/1.0.0 end to end on in-memory streams: session, handlers and client.

The server side is the real ``serve_store_stream`` + ``StoreHandlers``; the
only test double is :class:`MemoryHolder`, a dict standing in for the node's
shard storage. Hostile clients are scripted frame by frame against the real
session (:func:`converse`); hostile servers are scripted against the real
client (:class:`ScriptedNetwork`). Every rejected input must leave the holder
with nothing stored and no reservation outstanding.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest
import trio
import trio.testing

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import (
    TRANSPORT_ERRORS,
    ByteStream,
    Counters,
    FrameReader,
    StreamGate,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
)
from protocols.ids import WireLimits
from protocols.store import ShardCorrupt, ShardMismatch, ShardNotFound, StoreRefused
from protocols.store.client import StoreClient, StoreOutcome, StoreStatus
from protocols.store.handlers import DEFAULT_WINDOW, ShardSlice, StoreHandlers, Upload
from protocols.store.messages import (
    MAX_HAS_ADDRESSES,
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
)
from protocols.store.session import serve_store_stream
from tests.unit.memory_stream import MemoryStream, loaded_stream, memory_stream_pair

CLIENT_PEER = b"\x00\x01C"
SERVER_PEER = b"\x00\x01S"
MAX_FRAME = ids.STORE_LIMITS.max_frame


def make_shard(size: int, seed: int = 0) -> tuple[bytes, bytes]:
    """(BLAKE3 address, data) of ``size`` pseudo-random bytes."""
    data = random.Random(seed).randbytes(size)
    return blake3.blake3(data).digest(), data


# -- the test double: shard storage in a dict ------------------------------------


@dataclass(eq=False)
class Reservation:
    address: bytes
    size: int


class MemoryHolder:
    """A ShardHolder in memory that records every call the protocol makes."""

    def __init__(self, *, capacity: int = 1 << 30, max_shard: int = 8 << 20) -> None:
        self.capacity = capacity
        self.max_shard = max_shard
        self.shards: dict[bytes, bytes] = {}
        self.reservations: list[Reservation] = []
        self.released: list[Reservation] = []
        self.corrupt: set[bytes] = set()
        self.commits = 0
        self.contracts: list[bytes] = []  # the contract_id of every reserve

    def used(self) -> int:
        return sum(map(len, self.shards.values())) + sum(r.size for r in self.reservations)

    def max_shard_size(self) -> int:
        return self.max_shard

    async def has(self, addresses: Sequence[bytes]) -> list[bool]:
        await trio.lowlevel.checkpoint()
        return [a in self.shards for a in addresses]

    async def reserve(self, address: bytes, size: int, contract_id: bytes) -> Reservation | Refused:
        await trio.lowlevel.checkpoint()
        self.contracts.append(contract_id)
        if self.used() + size > self.capacity:
            return Refused(RefuseReason.FULL, f"{self.capacity - self.used()} bytes free")
        reservation = Reservation(address, size)
        self.reservations.append(reservation)
        return reservation

    async def commit(self, reservation: Reservation, data: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        assert reservation in self.reservations, "commit of a reservation not outstanding"
        assert len(data) == reservation.size
        if blake3.blake3(data).digest() != reservation.address:
            raise ShardMismatch(reservation.address)
        self.reservations.remove(reservation)
        self.commits += 1
        if reservation.address in self.shards:
            return False
        self.shards[reservation.address] = data
        return True

    async def release(self, reservation: Reservation) -> None:
        await trio.lowlevel.checkpoint()
        self.reservations.remove(reservation)
        self.released.append(reservation)

    async def read(self, address: bytes, offset: int, length: int | None) -> ShardSlice | None:
        await trio.lowlevel.checkpoint()
        if address in self.corrupt:
            raise ShardCorrupt(address, "test")
        data = self.shards.get(address)
        if data is None:
            return None
        end = None if length is None else offset + length
        return ShardSlice(data[offset:end], len(data))


class Server:
    def __init__(self, holder: MemoryHolder | None = None, **options: int) -> None:
        self.holder = holder or MemoryHolder()
        self.handlers = StoreHandlers(self.holder, **options)
        self.counters = Counters()

    def assert_nothing_stored(self) -> None:
        assert self.holder.shards == {}
        assert self.holder.reservations == []
        assert self.handlers.uploads_in_progress == 0


def frames_of(data: bytes | bytearray) -> list[StoreMessage]:
    """Every complete frame in ``data``, decoded."""
    out: list[StoreMessage] = []
    pos = 0
    while (header := decode_uvarint(data, pos)) is not None:
        length, start = header
        if len(data) < start + length:
            break
        out.append(decode_message(bytes(data[start : start + length])))
        pos = start + length
    return out


def frame(message: StoreMessage) -> bytes:
    return encode_frame(encode_message(message), MAX_FRAME)


# -- hostile clients: scripted frame by frame against the real session ----------


class RawClient:
    """The client end of one stream to a running session, driven by a test script."""

    def __init__(self, stream: MemoryStream, server_end: MemoryStream) -> None:
        self.stream = stream
        self.server_end = server_end
        self.reader = FrameReader(stream, MAX_FRAME)
        self.session_over = trio.Event()
        self.broken = False

    async def send(self, message: StoreMessage) -> None:
        await self.stream.write(frame(message))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.write(data)

    async def receive(self) -> StoreMessage | None:
        raw = await self.reader.read_frame()
        return None if raw is None else decode_message(raw)

    async def begin(self, request: StoreBegin) -> StoreMessage | None:
        await self.send(request)
        return await self.receive()

    async def run(self, script: Callable[[RawClient], Awaitable[None]]) -> None:
        try:
            await script(self)
        except TRANSPORT_ERRORS:
            self.broken = True  # the session reset the stream under us


async def converse(
    server: Server,
    script: Callable[[RawClient], Awaitable[None]],
    *,
    limits: WireLimits = ids.STORE_LIMITS,
    gate: StreamGate | None = None,
) -> RawClient:
    """Serve one stream with the real session while ``script`` plays the client.

    The session runs in this task, so its own exceptions reach the test as
    they are. A script that waits for the session to end waits on
    ``session_over``.
    """
    client_end, server_end = memory_stream_pair()
    client = RawClient(client_end, server_end)
    escaped: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, script)
        try:
            await serve_store_stream(
                server_end, CLIENT_PEER, server.handlers, server.counters, gate, limits
            )
        except Exception as error:  # re-raised below, outside the nursery's group
            escaped = error
        finally:
            client.session_over.set()
    if escaped is not None:
        raise escaped
    return client


def assert_reset(client: RawClient) -> None:
    assert client.server_end.was_reset
    assert not client.server_end.closed


def assert_closed(client: RawClient) -> None:
    assert client.server_end.closed
    assert not client.server_end.was_reset


# -- hostile servers: scripted against the real client ---------------------------


class ScriptedPeer:
    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream
        self.reader = FrameReader(stream, MAX_FRAME)

    async def receive(self) -> StoreMessage | None:
        raw = await self.reader.read_frame()
        return None if raw is None else decode_message(raw)

    async def send(self, *messages: StoreMessage) -> None:
        for message in messages:
            await self.stream.write(frame(message))


Script = Callable[[ScriptedPeer], Awaitable[None]]


class ScriptedNetwork:
    """A StoreOpener whose every stream is answered by ``script``."""

    def __init__(self, nursery: trio.Nursery, script: Script) -> None:
        self.nursery = nursery
        self.script = script
        self.clients: list[MemoryStream] = []

    async def _run(self, peer: ScriptedPeer) -> None:
        # The client resetting the stream is what many tests expect.
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self.script(peer)

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        assert protocol == ids.STORE
        client, server = memory_stream_pair()
        self.clients.append(client)
        self.nursery.start_soon(self._run, ScriptedPeer(server))
        return client


async def scripted_failure(
    script: Script, operation: Callable[[StoreClient], Awaitable[object]], **client_options: float
) -> tuple[BaseException, ScriptedNetwork]:
    """Run ``operation`` against ``script``; the exception it raised."""
    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        client = StoreClient(net.open, **client_options)  # type: ignore[arg-type]
        with pytest.raises(Exception) as info:
            await operation(client)
        nursery.cancel_scope.cancel()  # the script may still be waiting
    [stream] = net.clients
    assert stream.was_reset, "the client must reset a stream it gives up on"
    return info.value, net


def remote_reason(error: BaseException) -> str:
    assert isinstance(error, RemoteProtocolError), repr(error)
    return error.reason


# -- the well-behaved client against the real session ----------------------------


class StoreNetwork:
    """A StreamOpener whose every stream is served by ``serve_store_stream``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        server: Server,
        *,
        wrap: Callable[[MemoryStream], ByteStream] | None = None,
    ) -> None:
        self.nursery = nursery
        self.server = server
        self.wrap = wrap
        self.streams: list[tuple[MemoryStream, MemoryStream]] = []

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        assert (peer_id, protocol) == (SERVER_PEER, ids.STORE)
        client, server_end = memory_stream_pair()
        self.streams.append((client, server_end))
        self.nursery.start_soon(
            serve_store_stream,
            server_end,
            CLIENT_PEER,
            self.server.handlers,
            self.server.counters,
        )
        return client if self.wrap is None else self.wrap(client)

    def assert_all_closed_cleanly(self) -> None:
        for client, server_end in self.streams:
            assert client.closed and not client.was_reset
            assert server_end.closed and not server_end.was_reset


@asynccontextmanager
async def network(
    server: Server, wrap: Callable[[MemoryStream], ByteStream] | None = None
) -> AsyncIterator[StoreNetwork]:
    async with trio.open_nursery() as nursery:
        yield StoreNetwork(nursery, server, wrap=wrap)


# == StoreShard: success paths ====================================================


async def test_store_then_fetch_whole_shard() -> None:
    server = Server()
    address, data = make_shard(1_000_000)
    async with network(server) as net:
        client = StoreClient(net.open)
        outcome = await client.store_shard(
            SERVER_PEER, (), address, data, contract_id=bytes(range(32))
        )
        fetched = await client.fetch_shard(SERVER_PEER, (), address)
    assert outcome == StoreOutcome(StoreStatus.STORED)
    assert outcome.held
    assert fetched == data
    assert server.holder.shards == {address: data}
    assert server.holder.reservations == []
    assert server.counters.snapshot() == {"stored": 1, "fetched": 1}
    net.assert_all_closed_cleanly()


async def test_store_one_byte_shard() -> None:
    server = Server()
    address, data = make_shard(1)
    async with network(server) as net:
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.STORED
    assert server.holder.shards == {address: data}


async def test_store_already_held_sends_no_data() -> None:
    server = Server()
    address, data = make_shard(300_000)
    server.holder.shards[address] = data
    async with network(server) as net:
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data)
    assert outcome == StoreOutcome(StoreStatus.ALREADY_HELD)
    [(client_end, _)] = net.streams
    assert frames_of(client_end.written) == [StoreBegin(address, len(data))]
    assert server.holder.reservations == []
    assert server.counters.snapshot() == {"already_held": 1}
    net.assert_all_closed_cleanly()


async def test_store_racing_another_upload_reports_already_held() -> None:
    # The shard lands between our reservation and our commit: commit says
    # False, and the client hears "already held" after sending its data.
    server = Server()
    address, data = make_shard(5000)

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        server.holder.shards[address] = data
        await client.send(Chunk(data))
        assert await client.receive() == Stored(address, already_held=True)

    client = await converse(server, script)
    assert_closed(client)
    assert server.holder.reservations == []
    assert server.counters.snapshot() == {"already_held": 1}


async def test_store_contract_id_reaches_the_upload() -> None:
    server = Server()
    address, data = make_shard(10)
    seen: list[bytes] = []
    finish = server.handlers.finish_store

    async def spy_finish(upload: Upload[Reservation]) -> Stored | Refused:
        seen.append(upload.contract_id)
        return await finish(upload)

    server.handlers.finish_store = spy_finish  # type: ignore[method-assign]
    async with network(server) as net:
        await StoreClient(net.open).store_shard(
            SERVER_PEER, (), address, data, contract_id=b"\x07" * 32
        )
    assert seen == [b"\x07" * 32]
    assert server.holder.contracts == [b"\x07" * 32]


# == StoreShard: refusals ========================================================


async def test_store_refused_too_large() -> None:
    server = Server(MemoryHolder(max_shard=1000))
    address, data = make_shard(1001)
    async with network(server) as net:
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.REFUSED
    assert outcome.reason is RefuseReason.TOO_LARGE
    assert not outcome.held
    server.assert_nothing_stored()
    assert server.counters.snapshot() == {"refused_too_large": 1}
    net.assert_all_closed_cleanly()


async def test_store_refused_when_full() -> None:
    server = Server(MemoryHolder(capacity=4096))
    address, data = make_shard(4097)
    async with network(server) as net:
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data)
    assert (outcome.status, outcome.reason) == (StoreStatus.REFUSED, RefuseReason.FULL)
    assert outcome.detail == "4096 bytes free"
    server.assert_nothing_stored()
    assert server.counters.snapshot() == {"refused_full": 1}


async def test_store_with_wrong_hash_is_refused_and_nothing_is_kept() -> None:
    server = Server()
    address, data = make_shard(200_000)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    async with network(server) as net:
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, tampered)
    assert (outcome.status, outcome.reason) == (StoreStatus.REFUSED, RefuseReason.HASH_MISMATCH)
    server.assert_nothing_stored()
    assert [r.address for r in server.holder.released] == [address]
    assert server.holder.commits == 0
    assert server.counters.snapshot() == {"refused_hash_mismatch": 1}
    net.assert_all_closed_cleanly()


async def test_store_refused_busy_when_too_many_uploads() -> None:
    server = Server(max_uploads=1)
    first_address, first = make_shard(100, seed=1)
    address, data = make_shard(100, seed=2)
    outcomes: list[StoreOutcome] = []

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(first_address, 100)) == StoreReady(DEFAULT_WINDOW)
        # While this upload is open, another one is turned away.
        async with network(server) as net:
            outcomes.append(await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data))
        await client.send(Chunk(first))
        assert await client.receive() == Stored(first_address)

    await converse(server, script)
    assert outcomes == [
        StoreOutcome(StoreStatus.REFUSED, RefuseReason.BUSY, "1 uploads in progress")
    ]
    assert server.holder.shards == {first_address: first}
    assert server.counters.snapshot() == {"refused_busy": 1, "stored": 1}


# == StoreShard: flow control ====================================================


class WindowSpy:
    """Wraps the client's stream and tracks shard bytes sent but not yet acknowledged."""

    def __init__(self, inner: MemoryStream) -> None:
        self.inner = inner
        self.sent = 0
        self.acked = 0
        self.max_unacked = 0
        self.acks = 0
        self._out = bytearray()
        self._in = bytearray()

    @staticmethod
    def _take(buf: bytearray) -> list[StoreMessage]:
        messages = frames_of(buf)
        consumed = sum(len(frame(m)) for m in messages)
        del buf[:consumed]
        return messages

    async def write(self, data: bytes) -> None:
        self._out += data
        for message in self._take(self._out):
            if isinstance(message, Chunk):
                self.sent += len(message.data)
                self.max_unacked = max(self.max_unacked, self.sent - self.acked)
        await self.inner.write(data)

    async def read(self, n: int | None = None) -> bytes:
        data = await self.inner.read(n)
        self._in += data
        for message in self._take(self._in):
            if isinstance(message, Ack):
                self.acked = message.received
                self.acks += 1
        return data

    async def close(self) -> None:
        await self.inner.close()

    async def reset(self) -> None:
        await self.inner.reset()


async def test_client_never_has_more_than_window_unacknowledged() -> None:
    window = 48 * 1024
    server = Server(window=window)
    address, data = make_shard(1 << 20)
    spies: list[WindowSpy] = []

    def spy(stream: MemoryStream) -> ByteStream:
        spies.append(WindowSpy(stream))
        return spies[-1]

    async with network(server, wrap=spy) as net:
        client = StoreClient(net.open, chunk_size=16 * 1024)
        outcome = await client.store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.STORED
    [tap] = spies
    assert tap.sent == len(data)
    assert tap.max_unacked <= window
    # ... and it does use the window: three 16 KiB chunks in flight.
    assert tap.max_unacked == window
    # An ack once half the window is consumed (every second 16 KiB chunk),
    # none for the last bytes: Stored answers those.
    assert tap.acks == len(data) // (32 * 1024) - 1


async def test_client_waits_for_acks_at_the_window() -> None:
    # A server that acknowledges by hand: the client must stop at the window
    # and resume by exactly what each ack frees.
    address, data = make_shard(20_000)
    seen: list[int] = []

    async def script(peer: ScriptedPeer) -> None:
        assert await peer.receive() == StoreBegin(address, 20_000)
        await peer.send(StoreReady(10_000))

        async def drain() -> None:
            await trio.testing.wait_all_tasks_blocked()
            while peer.stream.unread or peer.reader.mid_frame:
                message = await peer.receive()
                assert isinstance(message, Chunk)
                seen.append(len(message.data))
                await trio.testing.wait_all_tasks_blocked()

        await drain()
        assert seen == [4096, 4096]  # a third would make 12288 > 10000 unacked
        await peer.send(Ack(4096))
        await drain()
        assert seen == [4096] * 3
        await peer.send(Ack(12288))
        await drain()
        assert seen == [4096] * 4 + [3616]
        await peer.send(Stored(address))

    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        client = StoreClient(net.open, chunk_size=4096)
        outcome = await client.store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.STORED


async def test_client_chunks_shrink_to_a_small_window() -> None:
    address, data = make_shard(2500)
    seen: list[int] = []

    async def script(peer: ScriptedPeer) -> None:
        assert isinstance(await peer.receive(), StoreBegin)
        await peer.send(StoreReady(1000))
        received = 0
        while received < 2500:
            message = await peer.receive()
            assert isinstance(message, Chunk)
            seen.append(len(message.data))
            received += len(message.data)
            if received < 2500:
                await peer.send(Ack(received))
        await peer.send(Stored(address))

    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        outcome = await StoreClient(net.open, chunk_size=4096).store_shard(
            SERVER_PEER, (), address, data
        )
    assert outcome.status is StoreStatus.STORED
    assert seen == [1000, 1000, 500]


async def test_default_chunks_are_half_the_window() -> None:
    address, data = make_shard(20_000)
    seen: list[int] = []

    async def script(peer: ScriptedPeer) -> None:
        assert isinstance(await peer.receive(), StoreBegin)
        await peer.send(StoreReady(10_000))
        received = 0
        while received < 20_000:
            message = await peer.receive()
            assert isinstance(message, Chunk)
            seen.append(len(message.data))
            received += len(message.data)
            if received < 20_000:
                await peer.send(Ack(received))
        await peer.send(Stored(address))

    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        outcome = await StoreClient(net.open).store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.STORED
    assert seen == [5000] * 4


async def test_slow_commit_still_completes(autojump_clock: trio.testing.MockClock) -> None:
    # A commit far longer than the idle timeout: the server is not reading
    # then, so no timer of its own may fire, and the client just waits.
    holder = MemoryHolder()
    commit = holder.commit

    async def slow_commit(reservation: Reservation, data: bytes) -> bool:
        await trio.sleep(4 * ids.STORE_LIMITS.idle_timeout)
        return await commit(reservation, data)

    holder.commit = slow_commit  # type: ignore[method-assign]
    server = Server(holder)
    address, data = make_shard(100_000)
    async with network(server) as net:
        client = StoreClient(net.open, timeout=10 * ids.STORE_LIMITS.idle_timeout)
        outcome = await client.store_shard(SERVER_PEER, (), address, data)
    assert outcome.status is StoreStatus.STORED
    assert trio.current_time() >= 4 * ids.STORE_LIMITS.idle_timeout
    assert server.counters.snapshot() == {"stored": 1}


# == StoreShard: hostile clients =================================================

LIMITS = ids.STORE_LIMITS
SMALL = make_shard(1000)


async def test_oversized_frame_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(encode_uvarint(LIMITS.max_frame + 1) + b"x" * 64)
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"frame_too_large": 1}
    server.assert_nothing_stored()


async def test_garbage_protobuf_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(encode_frame(b"\xff\xfe\xfd not protobuf", MAX_FRAME))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"garbage": 1}


async def test_unknown_oneof_member_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(encode_frame(b"\x62\x02\x08\x01", MAX_FRAME))  # field 12
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"unknown_message": 1}


async def test_chunk_as_first_message_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send(Chunk(b"data"))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"chunk_before_ready": 1}


async def test_chunk_sent_before_ready_is_reset_and_released() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        # Begin and data in one write: the data arrives before our Ready.
        await client.send_raw(frame(StoreBegin(address, len(data))) + frame(Chunk(data)))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"chunk_before_ready": 1}
    server.assert_nothing_stored()
    assert [r.address for r in server.holder.released] == [address]


async def test_server_message_as_request_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send(Ack(5))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"unexpected_message": 1}


async def test_bytes_beyond_size_are_reset_and_nothing_is_stored() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data + b"!"))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"beyond_size": 1}
    server.assert_nothing_stored()
    assert server.holder.commits == 0
    assert [r.address for r in server.holder.released] == [address]


async def test_bytes_beyond_size_in_a_later_chunk_are_reset() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data[:-1]))
        await client.send(Chunk(data[-1:] + b"!"))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"beyond_size": 1}
    server.assert_nothing_stored()


async def test_empty_chunk_is_reset() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send_raw(encode_frame(b"\x1a\x00", MAX_FRAME))  # Chunk{}
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"empty_chunk": 1}
    server.assert_nothing_stored()


async def test_wrong_message_mid_upload_is_reset() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data[:10]))
        await client.send(Has((address,)))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"unexpected_message": 1}
    server.assert_nothing_stored()


async def test_second_begin_mid_upload_is_reset() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(StoreBegin(address, len(data)))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"unexpected_message": 1}
    server.assert_nothing_stored()


async def test_ignoring_the_window_is_reset() -> None:
    server = Server(window=1000)
    address, data = make_shard(5000)

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(1000)
        await client.send(Chunk(data[:1001]))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"window_exceeded": 1}
    server.assert_nothing_stored()


async def test_window_is_enforced_across_acks() -> None:
    server = Server(window=1000)
    address, data = make_shard(5000)

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(1000)
        await client.send(Chunk(data[:600]))
        assert await client.receive() == Ack(600)
        await client.send(Chunk(data[600:1600]))  # 1000 unacked: allowed
        assert await client.receive() == Ack(1600)
        await client.send(Chunk(data[1600:2601]))  # 1001 unacked
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"window_exceeded": 1}
    server.assert_nothing_stored()


async def test_client_ending_mid_transfer_is_reset_and_released() -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data[:500]))
        await client.stream.close()
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"truncated_upload": 1}
    server.assert_nothing_stored()
    assert [r.address for r in server.holder.released] == [address]


async def test_client_stopping_mid_transfer_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data[:500]))
        await client.session_over.wait()  # and never another byte

    started = trio.current_time()
    client = await converse(server, script)
    assert trio.current_time() - started == LIMITS.idle_timeout
    assert_reset(client)
    assert server.counters.snapshot() == {"transfer_stalled": 1}
    server.assert_nothing_stored()
    assert [r.address for r in server.holder.released] == [address]


async def test_client_stalling_inside_a_chunk_frame_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send_raw(frame(Chunk(data))[:100])
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"transfer_stalled": 1}
    server.assert_nothing_stored()


async def test_silent_client_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.session_over.wait()

    client = await converse(server, script)
    assert_closed(client)
    assert server.counters.snapshot() == {"idle_close": 1}


async def test_client_stalling_inside_the_first_frame_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(frame(StoreBegin(SMALL[0], 1000))[:10])
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"stalled_frame": 1}


class StuckWrites:
    """A stream whose peer never reads: every write waits forever."""

    def __init__(self, inner: MemoryStream) -> None:
        self.inner = inner

    async def read(self, n: int | None = None) -> bytes:
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        await trio.sleep_forever()

    async def close(self) -> None:
        await self.inner.close()

    async def reset(self) -> None:
        await self.inner.reset()


async def test_client_not_reading_the_answer_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    stream = loaded_stream(frame(Has((SMALL[0],))), end=False)
    await serve_store_stream(StuckWrites(stream), CLIENT_PEER, server.handlers, server.counters)
    assert stream.was_reset
    assert server.counters.snapshot() == {"write_stalled": 1}


async def test_empty_stream_is_closed_quietly() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.stream.close()

    client = await converse(server, script)
    assert_closed(client)
    assert server.counters.snapshot() == {}


async def test_too_many_streams_from_one_peer_are_reset() -> None:
    server = Server()
    gate = StreamGate(max_per_peer=1)
    assert gate.try_enter(CLIENT_PEER)  # one stream already open

    async def script(client: RawClient) -> None:
        await client.session_over.wait()

    client = await converse(server, script, gate=gate)
    assert_reset(client)
    assert server.counters.snapshot() == {"too_many_streams": 1}
    assert gate.open_streams(CLIENT_PEER) == 1


async def test_holder_bug_propagates_resets_and_releases() -> None:
    # Our own bug (here: the holder's) is not a protocol error: it escapes.
    holder = MemoryHolder()

    async def broken_commit(reservation: Reservation, data: bytes) -> bool:
        raise ZeroDivisionError("holder bug")

    holder.commit = broken_commit  # type: ignore[method-assign]
    server = Server(holder)
    address, data = SMALL

    async def script(client: RawClient) -> None:
        assert await client.begin(StoreBegin(address, len(data))) == StoreReady(DEFAULT_WINDOW)
        await client.send(Chunk(data))
        await client.session_over.wait()

    with pytest.raises(ZeroDivisionError):
        await converse(server, script)
    server.assert_nothing_stored()
    assert [r.address for r in server.holder.released] == [address]
    assert server.counters.snapshot() == {}


async def test_cancelled_session_resets_and_releases() -> None:
    server = Server()
    address, data = SMALL
    client_end, server_end = memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            serve_store_stream, server_end, CLIENT_PEER, server.handlers, server.counters
        )
        await client_end.write(frame(StoreBegin(address, len(data))))
        await trio.testing.wait_all_tasks_blocked()
        await client_end.write(frame(Chunk(data[:10])))
        await trio.testing.wait_all_tasks_blocked()
        assert server.holder.reservations
        nursery.cancel_scope.cancel()
    assert server_end.was_reset
    server.assert_nothing_stored()


# == FetchShard ==================================================================


async def stored_server(size: int = 300_000) -> tuple[Server, bytes, bytes]:
    server = Server()
    address, data = make_shard(size)
    server.holder.shards[address] = data
    return server, address, data


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, slice(None)),
        (1000, 5000, slice(1000, 6000)),
        (299_000, None, slice(299_000, None)),
    ],
    ids=["whole", "range", "tail"],
)
async def test_fetch(offset: int, length: int | None, expected: slice) -> None:
    server, address, data = await stored_server()
    async with network(server) as net:
        got = await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address, offset, length)
    assert got == data[expected]
    assert server.counters.snapshot() == {"fetched": 1}
    net.assert_all_closed_cleanly()


async def test_fetch_sends_chunks_of_the_configured_size() -> None:
    server = Server(fetch_chunk_size=100_000)
    address, data = make_shard(250_000)
    server.holder.shards[address] = data
    async with network(server) as net:
        await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address)
    [(_, server_end)] = net.streams
    sent = frames_of(server_end.written)
    assert sent[0] == FetchHeader(250_000, 0, 250_000)
    assert [len(m.data) for m in sent[1:] if isinstance(m, Chunk)] == [100_000, 100_000, 50_000]


async def test_fetch_of_the_empty_tail_is_empty() -> None:
    server, address, _ = await stored_server(1000)
    async with network(server) as net:
        assert await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address, 1000) == b""
    [(_, server_end)] = net.streams
    assert frames_of(server_end.written) == [FetchHeader(1000, 1000, 0)]


async def test_fetch_not_held() -> None:
    server = Server()
    address, _ = SMALL
    async with network(server) as net:
        with pytest.raises(ShardNotFound) as info:
            await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address)
    assert (info.value.address, info.value.peer) == (address, SERVER_PEER)
    assert server.counters.snapshot() == {"not_found": 1}
    net.assert_all_closed_cleanly()


async def test_fetch_corrupt_shard_is_refused() -> None:
    server, address, _ = await stored_server()
    server.holder.corrupt.add(address)
    async with network(server) as net:
        with pytest.raises(StoreRefused) as info:
            await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address)
    assert info.value.reason is RefuseReason.CORRUPT
    assert info.value.peer == SERVER_PEER
    assert server.counters.snapshot() == {"refused_corrupt": 1}


@pytest.mark.parametrize(
    ("offset", "length"),
    [(300_001, None), (299_999, 2), (0, 300_001), (10**15, 1)],
    ids=["offset_past_end", "range_past_end", "longer_than_shard", "far_away"],
)
async def test_fetch_range_past_the_end_is_refused(offset: int, length: int | None) -> None:
    server, address, _ = await stored_server()
    async with network(server) as net:
        with pytest.raises(StoreRefused) as info:
            await StoreClient(net.open).fetch_shard(SERVER_PEER, (), address, offset, length)
    assert info.value.reason is RefuseReason.OUT_OF_RANGE
    assert server.counters.snapshot() == {"refused_out_of_range": 1}
    net.assert_all_closed_cleanly()


async def test_fetch_request_with_bad_address_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(encode_frame(b"\x3a\x03\x0a\x01x", MAX_FRAME))  # Fetch{address: "x"}
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"bad_address": 1}


# == HasShards ===================================================================


async def test_has_shards() -> None:
    server = Server()
    shards = [make_shard(100, seed=i) for i in range(5)]
    for address, data in shards[::2]:
        server.holder.shards[address] = data
    async with network(server) as net:
        held = await StoreClient(net.open).has_shards(SERVER_PEER, (), [a for a, _ in shards])
    assert held == [True, False, True, False, True]
    assert server.counters.snapshot() == {"has": 1}
    net.assert_all_closed_cleanly()


async def test_has_shards_over_the_limit_is_split_into_batches() -> None:
    server = Server()
    addresses = [i.to_bytes(32, "big") for i in range(MAX_HAS_ADDRESSES + 300)]
    for address in addresses[::3]:
        server.holder.shards[address] = b"x"
    async with network(server) as net:
        held = await StoreClient(net.open).has_shards(SERVER_PEER, (), addresses)
    assert held == [i % 3 == 0 for i in range(len(addresses))]
    assert len(net.streams) == 2
    assert server.counters.snapshot() == {"has": 2}


async def test_has_shards_of_nothing_opens_no_stream() -> None:
    server = Server()
    async with network(server) as net:
        assert await StoreClient(net.open).has_shards(SERVER_PEER, (), []) == []
    assert net.streams == []


async def test_has_with_too_many_addresses_is_reset() -> None:
    server = Server()
    address = SMALL[0]
    too_many = b"\x0a\x20" + address
    body = too_many * (MAX_HAS_ADDRESSES + 1)
    payload = b"\x52" + encode_uvarint(len(body)) + body

    async def script(client: RawClient) -> None:
        await client.send_raw(encode_frame(payload, MAX_FRAME))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"too_many_addresses": 1}


# == hostile servers against the client ===========================================

ADDRESS, DATA = make_shard(10_000)


def store(client: StoreClient) -> Awaitable[StoreOutcome]:
    return client.store_shard(SERVER_PEER, (), ADDRESS, DATA)


def fetch(client: StoreClient) -> Awaitable[bytes]:
    return client.fetch_shard(SERVER_PEER, (), ADDRESS)


async def test_ack_beyond_what_was_sent() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(StoreReady(4096), Ack(4097))
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store, chunk_size=4096)
    assert remote_reason(error) == "bad_ack"


async def test_ack_going_backwards() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(StoreReady(4096))
        await peer.receive()
        await peer.send(Ack(4096))
        await peer.receive()
        await peer.send(Ack(4000))
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store, chunk_size=4096)
    assert remote_reason(error) == "bad_ack"


async def test_stored_for_another_address() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(StoreReady(1 << 20))
        await peer.receive()
        await peer.send(Stored(bytes(32)))
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store)
    assert remote_reason(error) == "wrong_address"


async def test_stored_without_data_that_is_not_already_held() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(Stored(ADDRESS, already_held=False))
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store)
    assert remote_reason(error) == "unexpected_message"


async def test_wrong_reply_to_begin() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(HasResult((True,)))
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store)
    assert remote_reason(error) == "unexpected_message"


async def test_stream_ends_without_an_answer() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.stream.close()
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store)
    assert remote_reason(error) == "truncated"


async def test_stream_ends_after_the_data_without_an_answer() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(StoreReady(1 << 20))
        await peer.receive()
        await peer.stream.close()
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store)
    assert remote_reason(error) == "truncated"


async def test_server_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(peer: ScriptedPeer) -> None:
        await trio.sleep_forever()

    error, _ = await scripted_failure(script, store, timeout=12.0)
    assert isinstance(error, trio.TooSlowError)
    assert trio.current_time() == 12.0


async def test_refusal_mid_upload_is_an_outcome() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(StoreReady(4096))
        await peer.receive()
        await peer.send(Refused(RefuseReason.FULL, "disk filled up"))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        outcome = await StoreClient(net.open, chunk_size=4096).store_shard(
            SERVER_PEER, (), ADDRESS, DATA
        )
        nursery.cancel_scope.cancel()
    assert outcome == StoreOutcome(StoreStatus.REFUSED, RefuseReason.FULL, "disk filled up")


def fetch_script(*messages: StoreMessage, close: bool = True) -> Script:
    async def script(peer: ScriptedPeer) -> None:
        assert await peer.receive() == Fetch(ADDRESS)
        await peer.send(*messages)
        if close:
            await peer.stream.close()
        await trio.sleep_forever()

    return script


async def test_fetched_shard_with_wrong_hash_names_the_peer() -> None:
    forged = DATA[:-1] + b"?"
    script = fetch_script(FetchHeader(len(forged), 0, len(forged)), Chunk(forged))
    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        with pytest.raises(ShardMismatch) as info:
            await fetch(StoreClient(net.open))
        nursery.cancel_scope.cancel()
    assert (info.value.address, info.value.peer) == (ADDRESS, SERVER_PEER)
    assert SERVER_PEER.hex() in str(info.value)


async def test_fetch_more_bytes_than_the_header_said() -> None:
    script = fetch_script(FetchHeader(len(DATA), 0, len(DATA)), Chunk(DATA + b"x"))
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "beyond_length"


async def test_fetch_truncated() -> None:
    script = fetch_script(FetchHeader(len(DATA), 0, len(DATA)), Chunk(DATA[:-1]))
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "truncated_fetch"


async def test_fetch_extra_frame_after_the_data() -> None:
    script = fetch_script(FetchHeader(len(DATA), 0, len(DATA)), Chunk(DATA), NotFound())
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "extra_frame"


async def test_fetch_header_with_another_range() -> None:
    script = fetch_script(FetchHeader(len(DATA) + 1, 0, len(DATA)), Chunk(DATA))
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "wrong_range"


async def test_fetch_header_announcing_too_much() -> None:
    script = fetch_script(FetchHeader(len(DATA), 0, len(DATA)), close=False)
    error, _ = await scripted_failure(script, fetch, max_fetch_bytes=len(DATA) - 1)
    assert remote_reason(error) == "fetch_too_large"


async def test_fetch_wrong_message_among_chunks() -> None:
    script = fetch_script(FetchHeader(len(DATA), 0, len(DATA)), Ack(3))
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "unexpected_message"


async def test_fetch_wrong_reply() -> None:
    script = fetch_script(StoreReady(10))
    error, _ = await scripted_failure(script, fetch)
    assert remote_reason(error) == "unexpected_message"


async def test_has_result_with_wrong_count() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(HasResult((True, False, True)))
        await trio.sleep_forever()

    error, _ = await scripted_failure(
        script, lambda client: client.has_shards(SERVER_PEER, (), [ADDRESS, ADDRESS])
    )
    assert remote_reason(error) == "wrong_count"


async def test_has_wrong_reply() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.receive()
        await peer.send(NotFound())
        await trio.sleep_forever()

    error, _ = await scripted_failure(
        script, lambda client: client.has_shards(SERVER_PEER, (), [ADDRESS])
    )
    assert remote_reason(error) == "unexpected_message"


# == client argument checks ========================================================


@pytest.mark.parametrize("chunk_size", [0, 256 * 1024 + 1])
def test_client_chunk_size_must_fit_a_frame(chunk_size: int) -> None:
    async def never(peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        raise AssertionError("no stream expected")

    with pytest.raises(ValueError):
        StoreClient(never, chunk_size=chunk_size)


# == golden conversations ============================================================

EXCHANGES = Path(__file__).resolve().parent.parent / "vectors" / "store" / "exchanges.json"


def _load_exchanges() -> list[dict[str, Any]]:
    exchanges: list[dict[str, Any]] = json.loads(EXCHANGES.read_text())["exchanges"]
    return exchanges


@pytest.mark.parametrize("exchange", _load_exchanges(), ids=[e["name"] for e in _load_exchanges()])
async def test_golden_exchange(exchange: dict[str, Any]) -> None:
    config = exchange["server"]
    holder = MemoryHolder(max_shard=config["max_shard_size"])
    for held in config["held"]:
        data = bytes.fromhex(held)
        holder.shards[blake3.blake3(data).digest()] = data
    server = Server(holder, window=config["window"], fetch_chunk_size=config["fetch_chunk_size"])
    client_end, server_end = memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            serve_store_stream, server_end, CLIENT_PEER, server.handlers, server.counters
        )
        answered = 0
        expected = bytearray()
        for who, data_hex in exchange["steps"]:
            if who == "server":
                expected += bytes.fromhex(data_hex)
                continue
            # Everything the server had to say so far, and nothing more.
            await trio.testing.wait_all_tasks_blocked()
            assert server_end.written[answered:].hex() == expected.hex()
            answered, expected = len(server_end.written), bytearray()
            await client_end.write(bytes.fromhex(data_hex))
        await trio.testing.wait_all_tasks_blocked()
        assert server_end.written[answered:].hex() == expected.hex()
    if exchange["end"] == "close":
        assert server_end.closed and not server_end.was_reset
    else:
        assert server_end.was_reset
    assert server.counters.snapshot() == exchange["counters"]
    assert sorted(holder.shards.values()) == sorted(
        bytes.fromhex(d) for d in exchange["held_after"]
    )
    assert holder.reservations == []
