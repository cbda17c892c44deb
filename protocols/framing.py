"""The one framing loop: unsigned-varint length prefix + protobuf payload.

Every protocol of ours is served by :func:`serve_stream`, which owns the
stream: it reads frames under a per-protocol size cap and idle timeout,
decodes them, calls a plain ``async def handle(peer, request) -> response``
function, writes the response, closes on success and resets on error. Clients
use :func:`exchange` for one request and its response. Handlers never see a
stream, so they can be unit-tested without one.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.exceptions import IOException
from libp2p.network.exceptions import RateLimitError

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.ids import WireLimits

# The multiformats unsigned-varint spec caps varints at 9 bytes (63 bits);
# a longer run of continuation bytes is an attack, not a length.
MAX_VARINT_BYTES = 9
READ_CHUNK = 64 * 1024

Request = TypeVar("Request")
Response = TypeVar("Response")

# Failures of the byte stream itself (peer vanished, stream reset under us):
# not a protocol violation, but the exchange is over.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    OSError,
    IOException,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)

# Everything a remote peer can make one of our requests fail with: it did
# not answer in time, could not be dialled, refused the protocol, or sent
# junk. Callers count such a peer as failed; our own bugs are not in here.
PEER_FAILURES: tuple[type[BaseException], ...] = (
    RemoteProtocolError,
    trio.TooSlowError,
    BaseLibp2pError,
    RateLimitError,
    *TRANSPORT_ERRORS,
)


class ByteStream(Protocol):
    """What the framing loop needs of a stream (py-libp2p's INetStream fits)."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


# Opens a stream to ``peer_id`` for ``protocol``, dialling ``addrs`` if needed.
StreamOpener = Callable[[bytes, Sequence[bytes], str], Awaitable[ByteStream]]


class Counters:
    """Named event counts (errors by reason, requests served), read by metrics."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def inc(self, name: str, amount: int = 1) -> None:
        self._counts[name] += amount

    def get(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


class StreamGate:
    """Caps concurrent inbound streams per peer so one peer cannot flood us."""

    def __init__(self, max_per_peer: int) -> None:
        self._max = max_per_peer
        self._open: Counter[bytes] = Counter()

    def try_enter(self, peer: bytes) -> bool:
        if self._open[peer] >= self._max:
            return False
        self._open[peer] += 1
        return True

    def leave(self, peer: bytes) -> None:
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]

    def open_streams(self, peer: bytes) -> int:
        return self._open[peer]


def encode_uvarint(value: int) -> bytes:
    if value < 0 or value >= 1 << 63:
        raise LocalProtocolError("varint_range", str(value))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``pos``; ``None`` if ``buf`` ends before it does.

    Returns ``(value, position after it)``. Raises RemoteProtocolError for a
    varint longer than 9 bytes or one with redundant trailing zero groups
    (the spec requires minimal encoding, so a length has one spelling).
    """
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise RemoteProtocolError("varint_not_minimal")
            return value, pos + i + 1
    raise RemoteProtocolError("varint_too_long")


def encode_frame(payload: bytes, max_frame: int) -> bytes:
    if len(payload) > max_frame:
        raise LocalProtocolError("frame_too_large", f"{len(payload)} > {max_frame}")
    return encode_uvarint(len(payload)) + payload


class FrameReader:
    """Reads length-prefixed frames from a stream, never buffering past the cap."""

    def __init__(self, stream: ByteStream, max_frame: int) -> None:
        self._stream = stream
        self._max_frame = max_frame
        self._buf = bytearray()

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has arrived (an idle timeout now is a stall)."""
        return bool(self._buf)

    async def _fill(self) -> bool:
        try:
            chunk = await self._stream.read(READ_CHUNK)
        except EOFError:
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def read_frame(self) -> bytes | None:
        """The next frame's payload, or ``None`` at a clean end of stream."""
        while True:
            header = decode_uvarint(self._buf)
            if header is not None:
                break
            if not await self._fill():
                if self._buf:
                    raise RemoteProtocolError("truncated_frame", "stream ended inside a length")
                return None
        length, start = header
        if length > self._max_frame:
            raise RemoteProtocolError("frame_too_large", f"{length} > {self._max_frame}")
        while len(self._buf) < start + length:
            if not await self._fill():
                raise RemoteProtocolError(
                    "truncated_frame", f"got {len(self._buf) - start} of {length} bytes"
                )
        payload = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return payload


async def reset_quietly(stream: ByteStream) -> None:
    # A reset is our last word on a stream that already failed; if the
    # transport is gone too there is nobody left to tell.
    with contextlib.suppress(*TRANSPORT_ERRORS):
        await stream.reset()


async def close_quietly(stream: ByteStream) -> None:
    with contextlib.suppress(*TRANSPORT_ERRORS):
        await stream.close()


async def serve_stream(
    stream: ByteStream,
    peer: bytes,
    *,
    limits: WireLimits,
    decode: Callable[[bytes], Request],
    encode: Callable[[Response], bytes],
    handler: Callable[[bytes, Request], Awaitable[Response | None]],
    counters: Counters,
    gate: StreamGate | None = None,
) -> None:
    """Serve requests on ``stream`` from ``peer`` until it closes, idles or errs.

    ``decode`` raises RemoteProtocolError for a frame it cannot accept; so may
    ``handler`` for a request that is well-formed but invalid. Either resets
    the stream and is counted under the error's reason; no state changes are
    made by the loop itself.
    """
    if gate is not None and not gate.try_enter(peer):
        counters.inc("too_many_streams")
        await reset_quietly(stream)
        return
    try:
        reader = FrameReader(stream, limits.max_frame)
        while True:
            with trio.move_on_after(limits.idle_timeout) as idle:
                frame = await reader.read_frame()
            if idle.cancelled_caught:
                if reader.mid_frame:
                    counters.inc("stalled_frame")
                    await reset_quietly(stream)
                else:
                    counters.inc("idle_close")
                    await close_quietly(stream)
                return
            if frame is None:
                await close_quietly(stream)
                return
            request = decode(frame)
            response = await handler(peer, request)
            # ``None`` is for one-way messages (Kademlia's ADD_PROVIDER).
            if response is not None:
                await stream.write(encode_frame(encode(response), limits.max_frame))
            counters.inc("served")
    except RemoteProtocolError as error:
        counters.inc(error.reason)
        await reset_quietly(stream)
    except TRANSPORT_ERRORS:
        counters.inc("stream_broken")
        await reset_quietly(stream)
    except trio.Cancelled:
        # We are shutting down: end the stream politely.
        with trio.CancelScope(shield=True):
            await close_quietly(stream)
        raise
    except BaseException:
        # Our own bug: the peer gets a reset, the error goes on.
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    finally:
        if gate is not None:
            gate.leave(peer)


async def exchange(stream: ByteStream, payload: bytes, *, max_frame: int) -> bytes:
    """Send one request frame, read one response frame, close the stream.

    Any failure resets the stream. A malformed or missing response raises
    RemoteProtocolError; the caller bounds the whole exchange with a timeout.
    """
    try:
        await stream.write(encode_frame(payload, max_frame))
        reader = FrameReader(stream, max_frame)
        response = await reader.read_frame()
        if response is None:
            raise RemoteProtocolError("refused", "stream ended without a response")
    except BaseException:
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    await close_quietly(stream)
    return response


async def send_one_way(stream: ByteStream, payload: bytes, *, max_frame: int) -> None:
    """Send one frame that has no response, then close the stream."""
    try:
        await stream.write(encode_frame(payload, max_frame))
    except BaseException:
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    await close_quietly(stream)


# Failures of a reused stream that a fresh stream may not have.
_RETRYABLE: tuple[type[BaseException], ...] = (RemoteProtocolError, *TRANSPORT_ERRORS)


class _Pooled:
    __slots__ = ("last_used", "reader", "stream")

    def __init__(self, stream: ByteStream, reader: FrameReader, last_used: float) -> None:
        self.stream = stream
        self.reader = reader
        self.last_used = last_used


class StreamPool:
    """Request/response over reused streams, one request at a time per stream.

    Opening a libp2p stream costs a multistream-select round trip (~4 ms in
    py-libp2p 0.8.1, three times the request itself), and the Kademlia spec
    lets a stream carry many requests, so finished streams are kept for the
    next request to the same peer. A kept stream is used again only within
    ``idle_seconds`` (below the server's idle timeout); a reused stream that
    fails before answering is retried once on a fresh stream, since the
    server may have closed it meanwhile. Cancellation or any error resets the
    stream instead of returning it.
    """

    def __init__(
        self,
        open_stream: StreamOpener,
        *,
        max_frame: int,
        idle_seconds: float = 10.0,
        max_idle_per_peer: int = 4,
        max_idle_total: int = 256,
    ) -> None:
        self._open = open_stream
        self._max_frame = max_frame
        self._idle_seconds = idle_seconds
        self._max_idle_per_peer = max_idle_per_peer
        self._max_idle_total = max_idle_total
        self._idle: dict[tuple[bytes, str], list[_Pooled]] = {}
        self._idle_count = 0

    @property
    def idle_streams(self) -> int:
        return self._idle_count

    async def _sweep(self) -> None:
        """Close every kept stream past its idle time, for all peers."""
        now = trio.current_time()
        for slot, entries in list(self._idle.items()):
            fresh = [e for e in entries if now - e.last_used <= self._idle_seconds]
            for expired in entries:
                if expired not in fresh:
                    await close_quietly(expired.stream)
            self._idle_count -= len(entries) - len(fresh)
            if fresh:
                self._idle[slot] = fresh
            else:
                del self._idle[slot]

    async def _take(self, peer_id: bytes, protocol: str) -> _Pooled | None:
        entries = self._idle.get((peer_id, protocol))
        now = trio.current_time()
        while entries:
            entry = entries.pop()
            self._idle_count -= 1
            if now - entry.last_used <= self._idle_seconds:
                return entry
            await close_quietly(entry.stream)
        return None

    async def _give_back(self, peer_id: bytes, protocol: str, entry: _Pooled) -> None:
        if self._idle_count >= self._max_idle_total:
            await self._sweep()
        entries = self._idle.setdefault((peer_id, protocol), [])
        if len(entries) >= self._max_idle_per_peer or self._idle_count >= self._max_idle_total:
            await close_quietly(entry.stream)
            return
        entry.last_used = trio.current_time()
        entries.append(entry)
        self._idle_count += 1

    async def _round_trip(self, entry: _Pooled, payload: bytes) -> bytes:
        try:
            await entry.stream.write(encode_frame(payload, self._max_frame))
            response = await entry.reader.read_frame()
            if response is None:
                raise RemoteProtocolError("refused", "stream ended without a response")
        except BaseException:
            with trio.CancelScope(shield=True):
                await reset_quietly(entry.stream)
            raise
        return response

    async def request(
        self, peer_id: bytes, addrs: Sequence[bytes], protocol: str, payload: bytes
    ) -> bytes:
        entry = await self._take(peer_id, protocol)
        if entry is not None:
            try:
                response = await self._round_trip(entry, payload)
            except _RETRYABLE:
                entry = None  # maybe closed by the server while idle: try a fresh one
            else:
                await self._give_back(peer_id, protocol, entry)
                return response
        stream = await self._open(peer_id, addrs, protocol)
        entry = _Pooled(stream, FrameReader(stream, self._max_frame), trio.current_time())
        response = await self._round_trip(entry, payload)
        await self._give_back(peer_id, protocol, entry)
        return response
