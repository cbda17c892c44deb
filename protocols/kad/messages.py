"""The Kademlia ``Message`` as typed values; the only place that sees dht_pb2.

Decoding is where hostile input is first met: garbage, unknown message
types, malformed peer IDs and oversized lists are RemoteProtocolErrors.
Addresses that do not parse as multiaddrs are dropped, not fatal, because
peers legitimately advertise transports we do not speak.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols.addrs import valid_multiaddr
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import decode_uvarint
from protocols.pb import dht_pb2

MAX_KEY_BYTES = 1024
MAX_PEERS_PER_LIST = 64
MAX_ADDRS_PER_PEER = 32

# Multihash codes a libp2p PeerID may use: identity (inlined small keys such
# as ed25519) and sha2-256 (hashed larger keys).
_IDENTITY = 0x00
_SHA2_256 = 0x12
_MAX_IDENTITY_DIGEST = 128


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class Connection(enum.IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True)
class PeerInfo:
    peer_id: bytes
    addrs: tuple[bytes, ...] = ()
    connection: Connection = Connection.NOT_CONNECTED


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    time_received: str = ""


@dataclass(frozen=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[PeerInfo, ...] = ()
    provider_peers: tuple[PeerInfo, ...] = ()


def is_valid_peer_id(raw: bytes) -> bool:
    """True if ``raw`` is a multihash a libp2p PeerID can be (identity or sha2-256).

    Varints must be minimal, so each peer has exactly one accepted spelling.
    """
    try:
        code = decode_uvarint(raw, 0)
        length = decode_uvarint(raw, code[1]) if code is not None else None
    except RemoteProtocolError:
        return False
    if code is None or length is None:
        return False
    digest_len = len(raw) - length[1]
    if digest_len != length[0]:
        return False
    if code[0] == _SHA2_256:
        return digest_len == 32
    return code[0] == _IDENTITY and 0 < digest_len <= _MAX_IDENTITY_DIGEST


def _peer_from_pb(pb: dht_pb2.Message.Peer) -> PeerInfo:
    if not is_valid_peer_id(pb.id):
        raise RemoteProtocolError("bad_peer_id", pb.id[:64].hex())
    if len(pb.addrs) > MAX_ADDRS_PER_PEER:
        raise RemoteProtocolError("too_many_addrs", str(len(pb.addrs)))
    try:
        connection = Connection(pb.connection)
    except ValueError:
        connection = Connection.NOT_CONNECTED
    addrs = tuple(a for a in pb.addrs if valid_multiaddr(a))
    return PeerInfo(peer_id=pb.id, addrs=addrs, connection=connection)


def _peers_from_pb(peers: object, label: str) -> tuple[PeerInfo, ...]:
    items = list(peers)  # type: ignore[call-overload]
    if len(items) > MAX_PEERS_PER_LIST:
        raise RemoteProtocolError("too_many_peers", f"{label}: {len(items)}")
    return tuple(_peer_from_pb(p) for p in items)


def decode_message(data: bytes) -> KadMessage:
    pb = dht_pb2.Message()
    try:
        pb.ParseFromString(data)
    except DecodeError as error:
        raise RemoteProtocolError("garbage", str(error)) from error
    try:
        kind = MessageType(pb.type)
    except ValueError as error:
        raise RemoteProtocolError("unknown_message_type", str(pb.type)) from error
    if len(pb.key) > MAX_KEY_BYTES:
        raise RemoteProtocolError("key_too_long", str(len(pb.key)))
    record = None
    if pb.HasField("record"):
        if len(pb.record.key) > MAX_KEY_BYTES:
            raise RemoteProtocolError("key_too_long", str(len(pb.record.key)))
        record = Record(pb.record.key, pb.record.value, pb.record.timeReceived)
    return KadMessage(
        type=kind,
        key=pb.key,
        record=record,
        closer_peers=_peers_from_pb(pb.closerPeers, "closerPeers"),
        provider_peers=_peers_from_pb(pb.providerPeers, "providerPeers"),
    )


def _peer_to_pb(peer: PeerInfo, out: dht_pb2.Message.Peer) -> None:
    out.id = peer.peer_id
    out.addrs.extend(peer.addrs)
    out.connection = int(peer.connection)  # type: ignore[assignment]


def encode_message(message: KadMessage) -> bytes:
    """Encode, refusing anything our own decoder would reject from a peer."""
    for label, peers in (
        ("closerPeers", message.closer_peers),
        ("providerPeers", message.provider_peers),
    ):
        if len(peers) > MAX_PEERS_PER_LIST:
            raise LocalProtocolError("too_many_peers", f"{label}: {len(peers)}")
        if any(len(p.addrs) > MAX_ADDRS_PER_PEER for p in peers):
            raise LocalProtocolError("too_many_addrs", label)
    keys = [message.key] + ([message.record.key] if message.record is not None else [])
    if any(len(k) > MAX_KEY_BYTES for k in keys):
        raise LocalProtocolError("key_too_long")
    pb = dht_pb2.Message(type=int(message.type), key=message.key)  # type: ignore[arg-type]
    if message.record is not None:
        pb.record.key = message.record.key
        pb.record.value = message.record.value
        pb.record.timeReceived = message.record.time_received
    for peer in message.closer_peers:
        _peer_to_pb(peer, pb.closerPeers.add())
    for peer in message.provider_peers:
        _peer_to_pb(peer, pb.providerPeers.add())
    return pb.SerializeToString(deterministic=True)
