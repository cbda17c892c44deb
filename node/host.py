"""The libp2p host: TCP, Noise only, Yamux, one connection per peer.

The node's ed25519 key lives in ``<data dir>/node.key`` (libp2p's protobuf
key encoding, mode 0600) so its PeerID survives restarts. Only Noise is
offered: py-libp2p's default host would also accept plaintext and secio, and
a node that can be talked into plaintext has no transport security at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID

from node.storage.atomic import write_file_atomically
from protocols.transport import muxer_options, security_options, use_muxer_classes

KEY_FILE = "node.key"
# Addresses learned from the DHT are kept an hour; the routing table, not the
# peerstore, decides who is worth keeping.
ADDR_TTL_SECONDS = 3600


class KeyFileError(Exception):
    """The node key file exists but cannot be used."""


def load_or_create_key(data_dir: Path) -> KeyPair:
    """Load the node's ed25519 key, creating it (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    if path.exists():
        try:
            private = deserialize_private_key(path.read_bytes())
        except Exception as error:  # the key decoder raises several unrelated types
            raise KeyFileError(f"{path}: not a libp2p private key ({error})") from error
        return KeyPair(private, private.get_public_key())
    data_dir.mkdir(parents=True, exist_ok=True)
    pair = create_new_key_pair()
    write_file_atomically(path, pair.private_key.serialize(), mode=0o600)
    return pair


def peer_id_of(pair: KeyPair) -> ID:
    return ID.from_pubkey(pair.public_key)


def build_host(
    pair: KeyPair,
    *,
    dial_timeout: float = 5.0,
    addrs_factory: Callable[[list[multiaddr.Multiaddr]], list[multiaddr.Multiaddr]] | None = None,
) -> IHost:
    """A py-libp2p host that speaks Noise + Yamux over TCP and nothing weaker.

    Noise and Yamux are our faster classes (:mod:`protocols.transport`): the
    same bytes on the wire as stock py-libp2p, several times its throughput.
    """
    host = new_host(
        key_pair=pair,
        sec_opt=security_options(pair),
        muxer_opt=muxer_options(),
        # The default (3 per peer) adds ~250 ms to every dial in 0.8.1.
        connection_config=ConnectionConfig(max_connections_per_peer=1, dial_timeout=dial_timeout),
        addrs_factory=addrs_factory,
    )
    use_muxer_classes(host)
    _disable_auto_connect(host)
    return host


def _disable_auto_connect(host: IHost) -> None:
    """Stop py-libp2p from dialling every peer in its peerstore.

    Its auto-connector keeps ~150 connections open by dialling whatever the
    peerstore holds, and every address a lookup ever returned lands there.
    The routing table, not the peerstore, decides whom a node talks to.
    """
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:

        async def _no_auto_connect() -> None:
            return None

        connector.maybe_connect = _no_auto_connect


def stream_peer(stream: INetStream) -> bytes:
    """The remote PeerID (multihash bytes) of an inbound stream."""
    peer: ID = stream.muxed_conn.peer_id
    return peer.to_bytes()


class StreamOpener:
    """Opens protocol streams to peers, teaching the peerstore their addresses."""

    def __init__(self, host: IHost) -> None:
        self._host = host

    async def __call__(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> INetStream:
        pid = ID(peer_id)
        if addrs:
            self._host.get_peerstore().add_addrs(
                pid, [multiaddr.Multiaddr(a) for a in addrs], ADDR_TTL_SECONDS
            )
        return await self._host.new_stream(pid, [TProtocol(protocol)])


def set_handler(
    host: IHost, protocol: str, handler: Callable[[INetStream], Awaitable[None]]
) -> None:
    host.set_stream_handler(TProtocol(protocol), handler)
