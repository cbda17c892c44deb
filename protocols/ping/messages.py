"""/zhtp/ping/1.0.0 messages as typed values; the only place that sees ping_pb2."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols.addrs import valid_multiaddr
from protocols.errors import RemoteProtocolError
from protocols.pb import ping_pb2

MIN_NONCE = 8
MAX_NONCE = 32
MAX_VERSION_CHARS = 64
MAX_LISTEN_ADDRS = 32


class Tier(enum.IntEnum):
    HOT = 1
    WARM = 2
    COLD = 3
    ARCHIVE = 4


@dataclass(frozen=True)
class Ping:
    nonce: bytes
    sent_at_ms: int


@dataclass(frozen=True)
class NodeStatus:
    version: str
    listen_addrs: tuple[bytes, ...]
    free_storage_bytes: int
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Pong:
    nonce: bytes
    sent_at_ms: int
    received_at_ms: int
    status: NodeStatus


def _parse(message: ping_pb2.Ping | ping_pb2.Pong, data: bytes) -> None:
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise RemoteProtocolError("garbage", str(error)) from error


def _check_nonce(nonce: bytes) -> None:
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise RemoteProtocolError("bad_nonce", f"{len(nonce)} bytes")


def decode_ping(data: bytes) -> Ping:
    pb = ping_pb2.Ping()
    _parse(pb, data)
    _check_nonce(pb.nonce)
    return Ping(nonce=pb.nonce, sent_at_ms=pb.sent_at_ms)


def encode_ping(ping: Ping) -> bytes:
    pb = ping_pb2.Ping(nonce=ping.nonce, sent_at_ms=ping.sent_at_ms)
    return pb.SerializeToString(deterministic=True)


def decode_pong(data: bytes) -> Pong:
    pb = ping_pb2.Pong()
    _parse(pb, data)
    _check_nonce(pb.nonce)
    status = pb.status
    if len(status.version) > MAX_VERSION_CHARS:
        raise RemoteProtocolError("bad_status", "version too long")
    if len(status.listen_addrs) > MAX_LISTEN_ADDRS:
        raise RemoteProtocolError("bad_status", "too many listen addresses")
    # Tiers we do not know yet are a newer peer's business, not an error.
    tiers = tuple(Tier(t) for t in status.tiers if t in Tier._value2member_map_)
    return Pong(
        nonce=pb.nonce,
        sent_at_ms=pb.sent_at_ms,
        received_at_ms=pb.received_at_ms,
        status=NodeStatus(
            version=status.version,
            # Junk addresses are dropped, as in Kademlia peer records.
            listen_addrs=tuple(a for a in status.listen_addrs if valid_multiaddr(a)),
            free_storage_bytes=status.free_storage_bytes,
            tiers=tiers,
        ),
    )


def encode_pong(pong: Pong) -> bytes:
    pb = ping_pb2.Pong(
        nonce=pong.nonce, sent_at_ms=pong.sent_at_ms, received_at_ms=pong.received_at_ms
    )
    pb.status.version = pong.status.version
    pb.status.listen_addrs.extend(pong.status.listen_addrs)
    pb.status.free_storage_bytes = pong.status.free_storage_bytes
    pb.status.tiers.extend(int(t) for t in pong.status.tiers)  # type: ignore[misc]
    return pb.SerializeToString(deterministic=True)
