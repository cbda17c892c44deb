"""The per-stream conversation of /zhtp/store/1.0.0, server side.

One operation per stream. :func:`serve_store_stream` owns the stream: it
reads frames under the STORE_LIMITS cap and idle timeout, decodes them, asks
the handlers what to do, writes the answers, closes on success and resets on
error. A peer's bad frame is a RemoteProtocolError, counted under its reason;
a failed upload always releases its reservation, so it stores nothing. Our
own bugs reset the stream and propagate.

Events counted: ``stored``, ``already_held``, ``fetched``, ``not_found``,
``has``, ``refused_<reason>``, ``idle_close``, ``stalled_frame``,
``too_many_streams``, ``stream_broken`` and every RemoteProtocolError reason.
"""

from __future__ import annotations

import trio

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import (
    TRANSPORT_ERRORS,
    ByteStream,
    Counters,
    FrameReader,
    StreamGate,
    close_quietly,
    encode_frame,
    reset_quietly,
)
from protocols.ids import WireLimits
from protocols.store.handlers import FetchReply, ReservationT, StoreHandlers, Upload
from protocols.store.messages import (
    Chunk,
    Fetch,
    Has,
    NotFound,
    Refused,
    StoreBegin,
    Stored,
    StoreMessage,
    StoreReady,
    decode_message,
    encode_message,
)


class _Conversation:
    """Typed frames over one stream, each read and write bounded by the idle timeout."""

    def __init__(self, stream: ByteStream, limits: WireLimits) -> None:
        self.stream = stream
        self.reader = FrameReader(stream, limits.max_frame)
        self._limits = limits

    async def receive(self) -> StoreMessage | None:
        """The next message, None at a clean end of stream."""
        with trio.move_on_after(self._limits.idle_timeout) as idle:
            frame = await self.reader.read_frame()
        if idle.cancelled_caught:
            raise RemoteProtocolError(
                "transfer_stalled", f"nothing for {self._limits.idle_timeout} s"
            )
        return None if frame is None else decode_message(frame)

    async def send(self, message: StoreMessage) -> None:
        frame = encode_frame(encode_message(message), self._limits.max_frame)
        # A peer that stops reading must not hold the stream forever.
        with trio.move_on_after(self._limits.idle_timeout) as idle:
            await self.stream.write(frame)
        if idle.cancelled_caught:
            raise RemoteProtocolError(
                "write_stalled", f"peer not reading for {self._limits.idle_timeout} s"
            )


def _refused_event(refused: Refused) -> str:
    return f"refused_{refused.reason.name.lower()}"


async def _serve_store(
    conv: _Conversation,
    peer: bytes,
    request: StoreBegin,
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
) -> None:
    decision = await handlers.begin_store(peer, request)
    if not isinstance(decision, Upload):
        await conv.send(decision)
        counters.inc("already_held" if isinstance(decision, Stored) else _refused_event(decision))
        return
    upload = decision
    try:
        # Anything already buffered behind StoreBegin was sent before our Ready.
        if conv.reader.mid_frame:
            raise RemoteProtocolError("chunk_before_ready")
        await conv.send(StoreReady(upload.window))
        while not upload.complete:
            message = await conv.receive()
            if message is None:
                raise RemoteProtocolError(
                    "truncated_upload", f"{upload.received} of {upload.size} bytes"
                )
            if not isinstance(message, Chunk):
                raise RemoteProtocolError("unexpected_message", type(message).__name__)
            ack = upload.accept(message.data)
            if ack is not None:
                await conv.send(ack)
        outcome = await handlers.finish_store(upload)
    finally:
        with trio.CancelScope(shield=True):
            await handlers.end_upload(upload)
    if isinstance(outcome, Stored):
        counters.inc("already_held" if outcome.already_held else "stored")
    else:
        counters.inc(_refused_event(outcome))
    await conv.send(outcome)


async def _serve_fetch(
    conv: _Conversation,
    peer: bytes,
    request: Fetch,
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
) -> None:
    reply = await handlers.fetch(peer, request)
    if not isinstance(reply, FetchReply):
        await conv.send(reply)
        counters.inc("not_found" if isinstance(reply, NotFound) else _refused_event(reply))
        return
    await conv.send(reply.header)
    step = handlers.fetch_chunk_size
    for start in range(0, len(reply.data), step):
        await conv.send(Chunk(reply.data[start : start + step]))
    counters.inc("fetched")


async def _serve_has(
    conv: _Conversation,
    peer: bytes,
    request: Has,
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
) -> None:
    await conv.send(await handlers.has(peer, request))
    counters.inc("has")


async def _serve_one(
    stream: ByteStream,
    peer: bytes,
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
    limits: WireLimits,
) -> None:
    conv = _Conversation(stream, limits)
    with trio.move_on_after(limits.idle_timeout) as idle:
        frame = await conv.reader.read_frame()
    if idle.cancelled_caught:
        if conv.reader.mid_frame:
            counters.inc("stalled_frame")
            await reset_quietly(stream)
        else:
            counters.inc("idle_close")
            await close_quietly(stream)
        return
    if frame is None:
        await close_quietly(stream)
        return
    request = decode_message(frame)
    match request:
        case StoreBegin():
            await _serve_store(conv, peer, request, handlers, counters)
        case Fetch():
            await _serve_fetch(conv, peer, request, handlers, counters)
        case Has():
            await _serve_has(conv, peer, request, handlers, counters)
        case Chunk():
            raise RemoteProtocolError("chunk_before_ready")
        case _:
            raise RemoteProtocolError("unexpected_message", type(request).__name__)
    await close_quietly(stream)


async def serve_store_stream(
    stream: ByteStream,
    peer: bytes,
    handlers: StoreHandlers[ReservationT],
    counters: Counters,
    gate: StreamGate | None = None,
    limits: WireLimits = ids.STORE_LIMITS,
) -> None:
    """Serve one store, fetch or has operation from ``peer`` on ``stream``."""
    if gate is not None and not gate.try_enter(peer):
        counters.inc("too_many_streams")
        await reset_quietly(stream)
        return
    try:
        await _serve_one(stream, peer, handlers, counters, limits)
    except RemoteProtocolError as error:
        counters.inc(error.reason)
        await reset_quietly(stream)
    except TRANSPORT_ERRORS:
        counters.inc("stream_broken")
        await reset_quietly(stream)
    except BaseException:
        # Shutting down (Cancelled) mid-operation, or our own bug: either way
        # the peer must not mistake the end of the stream for success.
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    finally:
        if gate is not None:
            gate.leave(peer)
