"""Noise and Yamux for py-libp2p with the same bytes on the wire, several times faster.

Stock py-libp2p 0.8.1 moves bulk data at about an eighth of raw TCP speed on
loopback, nearly all of it per-frame overhead (see the throughput note in
shared/notes). These classes subclass the library's and replace the methods
on the data path. A host uses them with::

    host = new_host(sec_opt=security_options(pair), muxer_opt=muxer_options(), ...)
    use_muxer_classes(host)
"""

from protocols.transport.noise import NoiseSession, NoiseTransport
from protocols.transport.upgrade import (
    ClassHonouringMuxerMultistream,
    muxer_options,
    security_options,
    use_muxer_classes,
)
from protocols.transport.yamux import FastYamux, FastYamuxStream

__all__ = [
    "ClassHonouringMuxerMultistream",
    "FastYamux",
    "FastYamuxStream",
    "NoiseSession",
    "NoiseTransport",
    "muxer_options",
    "security_options",
    "use_muxer_classes",
]
