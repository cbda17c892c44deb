"""The per-stream conversation of /zhtp/market/1.0.0, server side.

One request and one response per stream. :func:`serve_market_stream` hands
the stream to the one framing loop (:func:`protocols.framing.serve_stream`)
under the MARKET_LIMITS frame cap and idle timeout: it decodes the request,
asks :func:`protocols.market.handlers.dispatch`, writes the response, and
closes once the client has closed its side (a client that says nothing more
is closed after the idle timeout). A second request on the same stream, an
oversized frame, garbage or any field breaking a rule is a
RemoteProtocolError: the stream is reset and the error counted under its
reason; a frame that fails so never reaches the backend. Our own bugs (the backend's exceptions,
a response we may not send) reset the stream and propagate.

Events counted: ``<kind>_<outcome>`` for every answered request (``quote_quoted``,
``quote_refused``, ``deploy_accepted``, ``deploy_rejected``, ``query_found``,
``query_not_found``, ``execute_accepted``, ``audit_proved``, ...; see ``handlers.outcome_event``),
``served``, ``idle_close``, ``write_stalled``, ``stalled_frame``, ``too_many_streams``,
``stream_broken`` and every RemoteProtocolError reason (``garbage``,
``frame_too_large``, ``second_request``, ``bad_tier``, ...).
"""

from __future__ import annotations

import trio

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import ByteStream, Counters, StreamGate, serve_stream
from protocols.ids import WireLimits
from protocols.market.handlers import MarketBackend, dispatch, outcome_event
from protocols.market.messages import (
    MarketRequest,
    MarketResponse,
    decode_request,
    encode_response,
)


class _BoundedWrites:
    """``stream`` whose writes give up after the idle timeout.

    serve_stream bounds reads, not writes; a peer that asks and then stops
    reading must not hold a response (up to a whole frame) and the stream
    forever.
    """

    def __init__(self, stream: ByteStream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout

    async def read(self, n: int | None = None) -> bytes:
        return await self._stream.read(n)

    async def write(self, data: bytes) -> None:
        with trio.move_on_after(self._timeout) as idle:
            await self._stream.write(data)
        if idle.cancelled_caught:
            raise RemoteProtocolError("write_stalled", f"peer not reading for {self._timeout} s")

    async def close(self) -> None:
        await self._stream.close()

    async def reset(self) -> None:
        await self._stream.reset()


async def serve_market_stream(
    stream: ByteStream,
    peer: bytes,
    backend: MarketBackend,
    counters: Counters,
    gate: StreamGate | None = None,
    limits: WireLimits = ids.MARKET_LIMITS,
) -> None:
    """Serve one market request from ``peer`` on ``stream``."""
    answered = False

    async def handle(peer: bytes, request: MarketRequest) -> MarketResponse:
        nonlocal answered
        if answered:
            raise RemoteProtocolError("second_request", "one request per stream")
        answered = True
        response = await dispatch(backend, peer, request)
        counters.inc(outcome_event(request, response))
        return response

    # mypy cannot solve serve_stream's ``Response`` when it is a union (it
    # would have to split ``Response | None``); the call itself is well typed.
    await serve_stream(  # type: ignore[misc]
        _BoundedWrites(stream, limits.idle_timeout),
        peer,
        limits=limits,
        decode=decode_request,
        encode=encode_response,
        handler=handle,
        counters=counters,
        gate=gate,
    )
