"""Client side of /zhtp/kad/1.0.0: one request per stream, checked replies.

A reply of the wrong type, or a PUT_VALUE acknowledgement that does not echo
the record, is a RemoteProtocolError: the caller treats the peer as having
failed the request.
"""

from __future__ import annotations

import trio

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import StreamOpener, StreamPool, send_one_way
from protocols.kad.messages import (
    KadMessage,
    MessageType,
    PeerInfo,
    Record,
    decode_message,
    encode_message,
)


class KadClient:
    def __init__(self, open_stream: StreamOpener, *, timeout: float = 5.0) -> None:
        self._open = open_stream
        self._timeout = timeout
        self._max_frame = ids.KAD_LIMITS.max_frame
        # Streams are reused well inside the server's idle timeout.
        self.pool = StreamPool(
            open_stream, max_frame=self._max_frame, idle_seconds=ids.KAD_LIMITS.idle_timeout / 3
        )

    async def _request(self, peer: PeerInfo, request: KadMessage) -> KadMessage:
        with trio.fail_after(self._timeout):
            raw = await self.pool.request(
                peer.peer_id, peer.addrs, ids.KAD, encode_message(request)
            )
        reply = decode_message(raw)
        if reply.type != request.type:
            detail = f"{reply.type.name} to {request.type.name}"
            raise RemoteProtocolError("wrong_reply_type", detail)
        return reply

    async def find_node(self, peer: PeerInfo, key: bytes) -> tuple[PeerInfo, ...]:
        reply = await self._request(peer, KadMessage(MessageType.FIND_NODE, key=key))
        return reply.closer_peers

    async def get_value(
        self, peer: PeerInfo, key: bytes
    ) -> tuple[bytes | None, tuple[PeerInfo, ...]]:
        reply = await self._request(peer, KadMessage(MessageType.GET_VALUE, key=key))
        value = None
        if reply.record is not None:
            if reply.record.key != key:
                raise RemoteProtocolError("record_key_mismatch")
            value = reply.record.value
        return value, reply.closer_peers

    async def put_value(self, peer: PeerInfo, key: bytes, value: bytes) -> None:
        request = KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, value))
        reply = await self._request(peer, request)
        if reply.record is None or (reply.record.key, reply.record.value) != (key, value):
            raise RemoteProtocolError("bad_put_ack")

    async def get_providers(
        self, peer: PeerInfo, key: bytes
    ) -> tuple[tuple[PeerInfo, ...], tuple[PeerInfo, ...]]:
        reply = await self._request(peer, KadMessage(MessageType.GET_PROVIDERS, key=key))
        return reply.provider_peers, reply.closer_peers

    async def add_provider(self, peer: PeerInfo, key: bytes, provider: PeerInfo) -> None:
        request = KadMessage(MessageType.ADD_PROVIDER, key=key, provider_peers=(provider,))
        with trio.fail_after(self._timeout):
            stream = await self._open(peer.peer_id, peer.addrs, ids.KAD)
            await send_one_way(stream, encode_message(request), max_frame=self._max_frame)
