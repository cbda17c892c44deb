"""Server side of /zhtp/kad/1.0.0: one plain function per message type.

The handlers see typed messages and three small interfaces the node
implements; they never touch a stream (protocols/framing.py does). A request
that is well-formed but unacceptable raises RemoteProtocolError, which resets
the stream and is counted; nothing is stored for it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from protocols.errors import RemoteProtocolError
from protocols.kad.keyspace import kad_id
from protocols.kad.messages import KadMessage, MessageType, PeerInfo, Record


class RoutingView(Protocol):
    def closest_peers(
        self, target_kad_id: bytes, count: int, exclude: Collection[bytes]
    ) -> Sequence[PeerInfo]: ...


class RecordHolder(Protocol):
    def get_record(self, key: bytes) -> bytes | None:
        """The locally held value for ``key`` if it is still valid."""
        ...

    def put_record(self, key: bytes, value: bytes, from_peer: bytes) -> None:
        """Store a record from the network; raise RemoteProtocolError to refuse it."""
        ...


class ProviderHolder(Protocol):
    def add_provider(self, key: bytes, provider: PeerInfo) -> None: ...

    def get_providers(self, key: bytes) -> Sequence[PeerInfo]: ...


class KadHandlers:
    """Answers Kademlia requests from the routing table, records and providers."""

    def __init__(
        self,
        routing: RoutingView,
        records: RecordHolder,
        providers: ProviderHolder,
        *,
        k: int = 20,
        on_request: Callable[[bytes], None] | None = None,
    ) -> None:
        self._routing = routing
        self._records = records
        self._providers = providers
        self._k = k
        # Lets the node consider the requester for its routing table (after
        # checking it answers), without the handler doing I/O itself.
        self._on_request = on_request

    def _closer(self, key: bytes, requester: bytes) -> tuple[PeerInfo, ...]:
        return tuple(self._routing.closest_peers(kad_id(key), self._k, (requester,)))

    async def handle(self, peer: bytes, request: KadMessage) -> KadMessage | None:
        if self._on_request is not None:
            self._on_request(peer)
        match request.type:
            case MessageType.FIND_NODE:
                return self.find_node(peer, request)
            case MessageType.GET_VALUE:
                return self.get_value(peer, request)
            case MessageType.PUT_VALUE:
                return self.put_value(peer, request)
            case MessageType.GET_PROVIDERS:
                return self.get_providers(peer, request)
            case MessageType.ADD_PROVIDER:
                self.add_provider(peer, request)
                return None  # the libp2p spec: ADD_PROVIDER has no response
            case _:
                raise RemoteProtocolError("unsupported_message_type", request.type.name)

    def find_node(self, peer: bytes, request: KadMessage) -> KadMessage:
        if not request.key:
            raise RemoteProtocolError("missing_key")
        return KadMessage(
            MessageType.FIND_NODE, key=request.key, closer_peers=self._closer(request.key, peer)
        )

    def get_value(self, peer: bytes, request: KadMessage) -> KadMessage:
        if not request.key:
            raise RemoteProtocolError("missing_key")
        value = self._records.get_record(request.key)
        record = Record(request.key, value) if value is not None else None
        return KadMessage(
            MessageType.GET_VALUE,
            key=request.key,
            record=record,
            closer_peers=self._closer(request.key, peer),
        )

    def put_value(self, peer: bytes, request: KadMessage) -> KadMessage:
        record = request.record
        if record is None:
            raise RemoteProtocolError("missing_record")
        if record.key != request.key:
            raise RemoteProtocolError("record_key_mismatch")
        self._records.put_record(record.key, record.value, peer)
        # The spec's acknowledgement is the request echoed back.
        echoed = Record(record.key, record.value)
        return KadMessage(MessageType.PUT_VALUE, key=request.key, record=echoed)

    def get_providers(self, peer: bytes, request: KadMessage) -> KadMessage:
        if not request.key:
            raise RemoteProtocolError("missing_key")
        return KadMessage(
            MessageType.GET_PROVIDERS,
            key=request.key,
            provider_peers=tuple(self._providers.get_providers(request.key)),
            closer_peers=self._closer(request.key, peer),
        )

    def add_provider(self, peer: bytes, request: KadMessage) -> None:
        if not request.key:
            raise RemoteProtocolError("missing_key")
        # A peer may only announce itself; entries naming others are ignored
        # (as the libp2p spec requires), and it must give a way to reach it.
        own = [p for p in request.provider_peers if p.peer_id == peer and p.addrs]
        if not own:
            raise RemoteProtocolError("provider_not_sender")
        self._providers.add_provider(request.key, own[0])
