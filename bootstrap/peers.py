"""Bootstrap peer lists: the packaged default and user-given multiaddrs."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

import multiaddr
from libp2p.peer.id import ID

from protocols.kad.messages import PeerInfo


class BootstrapAddrError(ValueError):
    """A bootstrap address that is not ``/ip4|ip6/.../tcp/N/p2p/<PeerID>``."""


def default_peers() -> list[str]:
    text = resources.files("bootstrap").joinpath("peers.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_peer_addr(text: str) -> PeerInfo:
    """Split a full multiaddr into the PeerID and the transport address."""
    try:
        addr = multiaddr.Multiaddr(text)
        peer = addr.value_for_protocol("p2p")
    except Exception as error:  # multiaddr raises assorted types on junk
        raise BootstrapAddrError(f"not a multiaddr: {text!r}") from error
    if not peer:
        raise BootstrapAddrError(f"{text!r} has no /p2p/<PeerID> part")
    try:
        peer_id = ID.from_base58(peer)
    except Exception as error:  # base58/multihash errors vary by input
        raise BootstrapAddrError(f"{text!r}: bad PeerID {peer!r}") from error
    transport = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer}"))
    return PeerInfo(peer_id.to_bytes(), (transport.to_bytes(),))


def parse_peer_addrs(texts: Iterable[str]) -> list[PeerInfo]:
    return [parse_peer_addr(t) for t in texts]
