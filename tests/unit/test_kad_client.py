"""KadClient end to end against KadHandlers, through serve_stream on in-memory streams.

The opener hands the client one end of a fresh stream pair and serves the
other end with the real framing loop, so every request crosses the same
encode -> frame -> decode -> handle -> encode -> frame -> decode path as on a
real connection, without sockets. Requests reuse streams through the
client's StreamPool; ADD_PROVIDER is one-way on a stream of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import ByteStream, Counters, serve_stream
from protocols.ids import WireLimits
from protocols.kad.client import KadClient
from protocols.kad.handlers import KadHandlers
from protocols.kad.messages import (
    KadMessage,
    MessageType,
    Record,
    decode_message,
    encode_message,
)
from tests.unit.memory_stream import MemoryStream, memory_stream_pair
from tests.unit.test_kad_handlers import (
    KEY,
    OTHER,
    PEERS,
    REQUESTER,
    FakeProviders,
    FakeRecords,
    FakeRouting,
)

SERVER = PEERS[0]
CLIENT_ID = REQUESTER.peer_id

KadHandler = Callable[[bytes, KadMessage], Awaitable[KadMessage | None]]


class KadNetwork:
    """A StreamOpener whose every stream is served by ``serve_stream`` + ``handler``."""

    def __init__(
        self, nursery: trio.Nursery, handler: KadHandler, limits: WireLimits = ids.KAD_LIMITS
    ) -> None:
        self.nursery = nursery
        self.handler = handler
        self.limits = limits
        self.counters = Counters()
        self.opened: list[tuple[bytes, tuple[bytes, ...], str]] = []
        self.streams: list[tuple[MemoryStream, MemoryStream]] = []

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        self.opened.append((peer_id, tuple(addrs), protocol))
        client, server = memory_stream_pair(max_chunk=7)
        self.streams.append((client, server))
        self.nursery.start_soon(
            partial(
                serve_stream,
                server,
                CLIENT_ID,
                limits=self.limits,
                decode=decode_message,
                encode=encode_message,
                handler=self.handler,
                counters=self.counters,
            )
        )
        return client


@asynccontextmanager
async def network(
    handler: KadHandler, limits: WireLimits = ids.KAD_LIMITS
) -> AsyncIterator[KadNetwork]:
    async with trio.open_nursery() as nursery:
        yield KadNetwork(nursery, handler, limits)
        # Servers that never answer would otherwise keep the nursery open.
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


class Server:
    def __init__(self) -> None:
        self.routing = FakeRouting()
        self.records = FakeRecords()
        self.providers = FakeProviders()
        self.requests: list[bytes] = []
        self.handlers = KadHandlers(
            self.routing, self.records, self.providers, on_request=self.requests.append
        )


def assert_no_resets(net: KadNetwork) -> None:
    """No stream so far was reset by either side (call it while the servers still run)."""
    for client, server in net.streams:
        assert not client.was_reset
        assert not server.was_reset


# -- the happy paths -----------------------------------------------------------


async def test_find_node() -> None:
    server = Server()
    async with network(server.handlers.handle) as net:
        client = KadClient(net.open)
        closer = await client.find_node(SERVER, KEY)
        await trio.testing.wait_all_tasks_blocked()
        assert client.pool.idle_streams == 1
        assert_no_resets(net)  # before the test's end cancels the servers
    expected = server.handlers.find_node(CLIENT_ID, KadMessage(MessageType.FIND_NODE, KEY))
    assert closer == expected.closer_peers
    assert len(closer) == 20
    assert REQUESTER not in closer
    assert net.opened == [(SERVER.peer_id, SERVER.addrs, ids.KAD)]
    assert server.requests == [CLIENT_ID]
    assert net.counters.snapshot() == {"served": 1}


async def test_put_then_get_value() -> None:
    server = Server()
    async with network(server.handlers.handle) as net:
        client = KadClient(net.open)
        value, closer = await client.get_value(SERVER, KEY)
        assert value is None
        assert len(closer) == 20
        await client.put_value(SERVER, KEY, b"the value")
        value, closer = await client.get_value(SERVER, KEY)
        await trio.testing.wait_all_tasks_blocked()
        assert_no_resets(net)
    assert value == b"the value"
    assert server.records.puts == [(KEY, b"the value", CLIENT_ID)]
    assert net.counters.snapshot() == {"served": 3}
    # All three requests shared one pooled stream.
    assert len(net.opened) == 1


async def test_add_provider_then_get_providers() -> None:
    server = Server()
    async with network(server.handlers.handle) as net:
        client = KadClient(net.open)
        await client.add_provider(SERVER, KEY, REQUESTER)
        await trio.testing.wait_all_tasks_blocked()
        providers, closer = await client.get_providers(SERVER, KEY)
        await trio.testing.wait_all_tasks_blocked()
        assert_no_resets(net)
    assert providers == (REQUESTER,)
    assert len(closer) == 20
    assert server.providers.entries == {KEY: [REQUESTER]}
    assert net.counters.snapshot() == {"served": 2}
    # The one-way ADD_PROVIDER stream wrote nothing back and closed cleanly.
    add_client, add_server = net.streams[0]
    assert add_server.written == b""
    assert add_client.closed and add_server.closed


async def test_add_provider_for_someone_else_is_refused_by_the_server() -> None:
    server = Server()
    async with network(server.handlers.handle) as net:
        # One-way: the client cannot tell; the server resets and counts.
        await KadClient(net.open).add_provider(SERVER, KEY, OTHER)
    assert server.providers.entries == {}
    assert net.counters.snapshot() == {"provider_not_sender": 1}
    [(_, server_end)] = net.streams
    assert server_end.was_reset


async def test_put_value_refused_by_server_fails_the_client() -> None:
    server = Server()
    server.records.refuse = "record_invalid"
    async with network(server.handlers.handle) as net:
        with pytest.raises(trio.BrokenResourceError):
            await KadClient(net.open).put_value(SERVER, KEY, b"v")
    assert net.counters.snapshot() == {"record_invalid": 1}
    [(client_end, server_end)] = net.streams
    assert server_end.was_reset
    assert client_end.was_reset


# -- misbehaving servers -------------------------------------------------------


def replying(reply: KadMessage | None) -> KadHandler:
    async def handler(peer: bytes, request: KadMessage) -> KadMessage | None:
        return reply

    return handler


@pytest.mark.parametrize(
    ("call", "reply"),
    [
        ("find_node", KadMessage(MessageType.GET_VALUE, KEY)),
        ("get_value", KadMessage(MessageType.FIND_NODE, KEY)),
        ("put_value", KadMessage(MessageType.GET_VALUE, KEY, record=Record(KEY, b"v"))),
        ("get_providers", KadMessage(MessageType.FIND_NODE, KEY)),
    ],
)
async def test_wrong_reply_type(call: str, reply: KadMessage) -> None:
    async with network(replying(reply)) as net:
        client = KadClient(net.open)
        with pytest.raises(RemoteProtocolError) as info:
            if call == "put_value":
                await client.put_value(SERVER, KEY, b"v")
            else:
                await getattr(client, call)(SERVER, KEY)
    assert info.value.reason == "wrong_reply_type"


@pytest.mark.parametrize(
    "reply",
    [
        KadMessage(MessageType.PUT_VALUE, KEY),
        KadMessage(MessageType.PUT_VALUE, KEY, record=Record(KEY, b"other value")),
        KadMessage(MessageType.PUT_VALUE, KEY, record=Record(b"other key", b"v")),
    ],
    ids=["no_record", "other_value", "other_key"],
)
async def test_put_ack_must_echo_the_record(reply: KadMessage) -> None:
    async with network(replying(reply)) as net:
        with pytest.raises(RemoteProtocolError) as info:
            await KadClient(net.open).put_value(SERVER, KEY, b"v")
    assert info.value.reason == "bad_put_ack"


async def test_get_value_record_for_another_key() -> None:
    reply = KadMessage(MessageType.GET_VALUE, KEY, record=Record(b"other key", b"v"))
    async with network(replying(reply)) as net:
        with pytest.raises(RemoteProtocolError) as info:
            await KadClient(net.open).get_value(SERVER, KEY)
    assert info.value.reason == "record_key_mismatch"


async def test_garbage_reply() -> None:
    async def garbage_server(stream: MemoryStream) -> None:
        await stream.read(1024)
        await stream.write(b"\x03\xff\xff\xff")
        await stream.close()

    async with trio.open_nursery() as nursery:

        async def opener(peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
            client, server = memory_stream_pair()
            nursery.start_soon(garbage_server, server)
            return client

        with pytest.raises(RemoteProtocolError) as info:
            await KadClient(opener).find_node(SERVER, KEY)
    assert info.value.reason == "garbage"


async def test_server_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(peer: bytes, request: KadMessage) -> KadMessage | None:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with network(silent) as net:
        with pytest.raises(trio.TooSlowError):
            await KadClient(net.open, timeout=2.5).find_node(SERVER, KEY)
        assert trio.current_time() == pytest.approx(2.5)
        [(client_end, _)] = net.streams
        assert client_end.was_reset and not client_end.closed


async def test_opener_that_hangs_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def hanging_opener(peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    client = KadClient(hanging_opener, timeout=4.0)
    with pytest.raises(trio.TooSlowError):
        await client.add_provider(SERVER, KEY, REQUESTER)
    with pytest.raises(trio.TooSlowError):
        await client.get_value(SERVER, KEY)
    assert trio.current_time() == pytest.approx(8.0)


async def test_requests_move_to_a_fresh_stream_when_the_server_closed_the_kept_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server whose idle timeout is shorter than the client pool's reuse window.
    short = WireLimits(ids.KAD_LIMITS.max_frame, idle_timeout=2.0, max_streams_per_peer=8)
    server = Server()
    async with network(server.handlers.handle, short) as net:
        client = KadClient(net.open)
        await client.put_value(SERVER, KEY, b"v")
        await trio.sleep(5)
        value, _ = await client.get_value(SERVER, KEY)
    assert value == b"v"
    assert len(net.opened) == 2
    assert net.counters.snapshot() == {"served": 2, "idle_close": 1}
