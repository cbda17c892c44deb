"""/zhtp/store/1.0.0: bulk shard transfer (StoreShard, FetchShard, HasShards).

``messages`` converts the wire protobuf to typed values, ``handlers`` decides
what to answer (and defines the ``ShardHolder`` interface the node
implements), ``session`` runs the per-stream conversation, ``client`` is the
other end. This module holds the errors the pieces share.
"""

from __future__ import annotations

from protocols.errors import RemoteProtocolError
from protocols.store.messages import RefuseReason


class ShardMismatch(RemoteProtocolError):
    """Bytes from a peer do not hash (BLAKE3) to the address they were sent for.

    A holder's ``commit`` raises it for an upload (the server then answers
    Refused HASH_MISMATCH); the client raises it for a fetched whole shard,
    naming the peer. It is the peer's fault, hence a RemoteProtocolError, so
    callers that count framing's PEER_FAILURES count it too.
    """

    def __init__(self, address: bytes, peer: bytes | None = None) -> None:
        who = f" from peer {peer.hex()}" if peer is not None else ""
        super().__init__("hash_mismatch", f"shard {address.hex()}{who}")
        self.address = address
        self.peer = peer


class ShardCorrupt(Exception):
    """A held shard failed verification when read (raised by a holder's ``read``)."""

    def __init__(self, address: bytes, detail: str = "") -> None:
        suffix = f": {detail}" if detail else ""
        super().__init__(f"held shard {address.hex()} is corrupt{suffix}")
        self.address = address


class StoreRefused(Exception):
    """A peer answered a fetch with Refused (CORRUPT, OUT_OF_RANGE, BUSY, ...)."""

    def __init__(self, reason: RefuseReason, detail: str = "", peer: bytes | None = None) -> None:
        who = f"peer {peer.hex()} " if peer is not None else ""
        super().__init__(f"{who}refused: {reason.name}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail
        self.peer = peer


class ShardNotFound(Exception):
    """A peer answered a fetch with NotFound: it does not hold the shard."""

    def __init__(self, address: bytes, peer: bytes | None = None) -> None:
        who = f"peer {peer.hex()} " if peer is not None else ""
        super().__init__(f"{who}does not hold shard {address.hex()}")
        self.address = address
        self.peer = peer
