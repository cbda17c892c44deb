"""NoiseSession: stock Noise framing on the wire, bulk reads and batched sends."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.transport import Transport as StockNoise
from libp2p.security.secure_session import SecureSession

from protocols.transport.noise import MAX_PLAINTEXT_LENGTH, NoiseSession, NoiseTransport


class MemoryRaw(IRawConnection):
    """A raw connection over an in-memory trio stream that records each send."""

    def __init__(self, stream: trio.abc.Stream, initiator: bool) -> None:
        self.stream = stream
        self.is_initiator = initiator
        self.sends: list[bytes] = []
        self.closed = False

    async def read(self, n: int | None = None) -> bytes:
        try:
            return await self.stream.receive_some(n)
        except trio.ClosedResourceError:
            return b""

    async def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        await self.stream.send_all(data)

    async def close(self) -> None:
        self.closed = True
        await self.stream.aclose()

    def get_remote_address(self) -> tuple[str, int] | None:
        return None

    def get_transport_addresses(self) -> list:  # type: ignore[type-arg]
        return []

    def get_connection_type(self) -> ConnectionType:
        return ConnectionType.DIRECT


def _transport(cls: type[StockNoise]) -> tuple[StockNoise, ID]:
    pair = create_new_key_pair()
    return cls(pair, noise_privkey=create_noise_key_pair().private_key), ID.from_pubkey(
        pair.public_key
    )


async def _handshake(
    dialer_cls: type[StockNoise], listener_cls: type[StockNoise], *, lockstep: bool = False
) -> tuple[ISecureConn, ISecureConn, MemoryRaw, MemoryRaw]:
    a, b = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    raw_a, raw_b = MemoryRaw(a, True), MemoryRaw(b, False)
    dialer, _ = _transport(dialer_cls)
    listener, listener_id = _transport(listener_cls)
    sessions: dict[str, ISecureConn] = {}

    async def dial() -> None:
        sessions["dialer"] = await dialer.secure_outbound(raw_a, listener_id)

    async def listen() -> None:
        sessions["listener"] = await listener.secure_inbound(raw_b)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dial)
            nursery.start_soon(listen)
    return sessions["dialer"], sessions["listener"], raw_a, raw_b


def _noise_message_lengths(wire: bytes) -> list[int]:
    lengths, pos = [], 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 2], "big")
        lengths.append(length)
        pos += 2 + length
    assert pos == len(wire), "the wire bytes are not whole Noise messages"
    return lengths


@pytest.mark.parametrize(
    ("dialer_cls", "listener_cls"),
    [(NoiseTransport, StockNoise), (StockNoise, NoiseTransport), (NoiseTransport, NoiseTransport)],
)
async def test_sessions_interoperate_with_stock_in_both_directions(
    dialer_cls: type[StockNoise], listener_cls: type[StockNoise]
) -> None:
    dialer, listener, _, _ = await _handshake(dialer_cls, listener_cls)
    assert isinstance(dialer, NoiseSession) == (dialer_cls is NoiseTransport)
    assert isinstance(listener, NoiseSession) == (listener_cls is NoiseTransport)
    payload = os.urandom(300_000)
    with trio.fail_after(10):
        await dialer.write(payload)
        assert await listener.read(len(payload)) == payload
        await listener.write(b"reply")
        assert await dialer.read(5) == b"reply"


async def test_large_writes_become_max_size_messages_sent_a_few_at_a_time() -> None:
    dialer, listener, raw_a, _ = await _handshake(NoiseTransport, NoiseTransport)
    raw_a.sends.clear()
    payload = os.urandom(10 * MAX_PLAINTEXT_LENGTH + 5)
    await dialer.write(payload)
    lengths = [n for send in raw_a.sends for n in _noise_message_lengths(send)]
    tag = 16
    assert lengths == [MAX_PLAINTEXT_LENGTH + tag] * 10 + [5 + tag]
    assert len(raw_a.sends) == 3  # 4 + 4 + 3 messages
    assert await listener.read(len(payload)) == payload


async def test_write_messages_keeps_each_item_one_message_in_one_send() -> None:
    dialer, listener, raw_a, _ = await _handshake(NoiseTransport, StockNoise)
    raw_a.sends.clear()
    assert isinstance(dialer, NoiseSession)
    await dialer.write_messages([b"a" * 100, b"b" * 65_519, b"c"])
    assert len(raw_a.sends) == 1
    assert _noise_message_lengths(raw_a.sends[0]) == [116, 65_535, 17]
    # A stock reader sees the three messages, one per read(None).
    assert await listener.read() == b"a" * 100
    assert await listener.read() == b"b" * 65_519
    assert await listener.read() == b"c"


async def test_reads_return_whole_messages_or_exact_counts() -> None:
    dialer, listener, _, _ = await _handshake(StockNoise, NoiseTransport)
    assert isinstance(listener, NoiseSession)
    for message in (b"first", b"second", b"third message"):
        await dialer.write(message)
    assert await listener.read(3) == b"fir"
    assert await listener.read() == b"st"  # the rest of the current message
    assert await listener.read(9) == b"secondthi"  # exact count spans messages
    assert await listener.read() == b"rd message"
    assert await listener.read(0) == b""


async def test_end_of_connection_is_an_incomplete_read() -> None:
    dialer, listener, raw_a, _ = await _handshake(NoiseTransport, NoiseTransport)
    await dialer.write(b"last")
    await raw_a.close()
    assert await listener.read() == b"last"
    with pytest.raises(IncompleteReadError) as caught:
        await listener.read()
    assert caught.value.is_clean_close


async def test_a_send_cut_short_closes_the_connection() -> None:
    # In lockstep a send waits for the peer to read, so cancelling it leaves
    # an encrypted message unsent: the cipher states now disagree.
    dialer, _listener, raw_a, _ = await _handshake(NoiseTransport, NoiseTransport, lockstep=True)
    with trio.move_on_after(1):
        await dialer.write(b"never read")
    assert raw_a.closed


async def test_a_handshake_with_another_session_type_is_left_alone() -> None:
    raw = MemoryRaw(trio.testing.memory_stream_pair()[0], True)
    session = object.__new__(SecureSession)
    session.conn = object()  # type: ignore[assignment]  # e.g. a TLS or secio reader
    assert NoiseSession.replace(session, raw) is session
