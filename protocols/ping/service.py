"""/zhtp/ping/1.0.0 handler and client."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import StreamOpener, exchange
from protocols.ping.messages import (
    NodeStatus,
    Ping,
    Pong,
    decode_pong,
    encode_ping,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class PingHandler:
    """Answers a Ping with the nonce and this node's current status."""

    def __init__(self, status: Callable[[], NodeStatus], clock_ms: Callable[[], int] = now_ms):
        self._status = status
        self._clock_ms = clock_ms

    async def handle(self, peer: bytes, ping: Ping) -> Pong:
        return Pong(
            nonce=ping.nonce,
            sent_at_ms=ping.sent_at_ms,
            received_at_ms=self._clock_ms(),
            status=self._status(),
        )


@dataclass(frozen=True)
class PingResult:
    rtt_seconds: float
    status: NodeStatus


async def ping(
    open_stream: StreamOpener,
    peer_id: bytes,
    addrs: tuple[bytes, ...] = (),
) -> PingResult:
    """Ping a peer once (the caller bounds it with a timeout).

    Raises RemoteProtocolError on a wrong nonce or a malformed Pong.
    """
    nonce = secrets.token_bytes(16)
    stream = await open_stream(peer_id, addrs, ids.PING)
    started = trio.current_time()
    raw = await exchange(
        stream, encode_ping(Ping(nonce, now_ms())), max_frame=ids.PING_LIMITS.max_frame
    )
    rtt = trio.current_time() - started
    pong = decode_pong(raw)
    if pong.nonce != nonce:
        raise RemoteProtocolError("wrong_nonce")
    return PingResult(rtt_seconds=rtt, status=pong.status)
