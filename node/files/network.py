"""What putting and getting files needs from the node, as one small interface.

`node/files` decides what to store where and what to fetch from whom; the
node service implements this interface with its DHT, its store protocol
client and its own shard store. Tests can implement it with real nodes or
with a scripted network.
"""

from __future__ import annotations

from typing import Protocol

from protocols.kad.messages import PeerInfo


class ShardTransferError(Exception):
    """A shard could not be stored on, or fetched from, one peer (the reason says why)."""


class ShardNotHeld(ShardTransferError):
    """The peer answered that it does not hold the shard."""


class ShardBadCopy(ShardTransferError):
    """The peer served bytes that do not hash to the shard's address."""


class ShardNoContract(ShardTransferError):
    """The peer refused the shard: no active contract of its own covers it."""


class FileNetwork(Protocol):
    @property
    def local_peer_id(self) -> bytes: ...

    async def holder_candidates(self, address: bytes) -> list[PeerInfo]:
        """Live nodes closest to ``address`` (this node included), closest first."""
        ...

    async def store_shard(
        self, peer: PeerInfo, address: bytes, data: bytes, *, contract_id: bytes = b""
    ) -> None:
        """Store one shard on ``peer`` under ``contract_id`` (32 bytes, or empty for none).

        Raises ShardNoContract when ``peer`` stores only under contract and
        none of its active contracts with that ID covers the shard, or
        ShardTransferError for any other reason it did not take it.
        """
        ...

    async def shard_holders(self, address: bytes) -> tuple[list[PeerInfo], list[PeerInfo]]:
        """Nodes that announced ``address``, and other nodes that may hold it (the closest)."""
        ...

    async def confirmed_holders(self, address: bytes) -> list[PeerInfo]:
        """Nodes that answer, when asked now, that they hold ``address``."""
        ...

    async def fetch_shard(self, peer: PeerInfo, address: bytes) -> bytes:
        """The bytes ``peer`` serves for ``address``.

        Raises ShardNotHeld, ShardBadCopy (the bytes do not hash to the
        address), or ShardTransferError for any other failure.
        """
        ...

    async def publish_record(self, key: bytes, value: bytes) -> int:
        """Put a DHT record; returns how many nodes accepted it."""
        ...

    async def find_record(self, key: bytes) -> bytes | None:
        """Get a validated DHT record from the network, or None."""
        ...
