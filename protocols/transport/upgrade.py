"""Putting the fast Noise and Yamux classes into a py-libp2p host.

``new_host(sec_opt=..., muxer_opt=...)`` takes the classes, but py-libp2p
0.8.1's ``MuxerMultistream.new_conn`` builds its own ``Yamux`` whenever
``/yamux/1.0.0`` is negotiated, whatever class the options name. So a host
also needs :func:`use_muxer_classes`, which swaps in a muxer selector that
builds the class the options name.
"""

from __future__ import annotations

from libp2p.abc import IHost, IMuxedConn, ISecureConn
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.custom_types import TMuxerOptions, TProtocol, TSecurityOptions
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.transport.noise import NoiseTransport
from protocols.transport.yamux import FastYamux


def security_options(pair: KeyPair) -> TSecurityOptions:
    """Noise only, with a fresh X25519 static key, as stock py-libp2p makes it."""
    noise = NoiseTransport(pair, noise_privkey=create_noise_key_pair().private_key)
    return {NOISE_PROTOCOL_ID: noise}


def muxer_options() -> TMuxerOptions:
    """Yamux first, mplex as the fallback, as ``muxer_preference="YAMUX"`` offers."""
    return {TProtocol(YAMUX_PROTOCOL_ID): FastYamux, MPLEX_PROTOCOL_ID: Mplex}


class ClassHonouringMuxerMultistream(MuxerMultistream):
    """A muxer selector that builds the class registered for the chosen protocol."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        # Replaces MuxerMultistream.new_conn, which ignores the class given
        # for /yamux/1.0.0 and always builds the stock Yamux.
        protocol, muxer_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        if issubclass(muxer_class, Yamux):
            muxed: IMuxedConn = muxer_class(conn, peer_id, is_initiator=conn.is_initiator)
        else:
            muxed = muxer_class(conn, peer_id)
        return self._annotate_connection(muxed, conn, protocol)


def use_muxer_classes(host: IHost) -> None:
    """Make ``host`` build the muxer classes its options name (see the module)."""
    network = host.get_network()
    if not isinstance(network, Swarm):
        raise TypeError(f"expected a py-libp2p Swarm, got {type(network).__name__}")
    current = network.upgrader.muxer_multistream
    network.upgrader.muxer_multistream = ClassHonouringMuxerMultistream(
        current.transports, current.negotiate_timeout
    )
