"""FileNetwork on a running node: its DHT, its store protocol client, its own disk.

A shard placed on this node itself is written to the local store directly,
and a shard this node holds is read from disk, so a one-node network (or a
node that is among a shard's closest) never talks to itself over libp2p.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from node.dht import Dht
from node.files.network import ShardBadCopy, ShardNoContract, ShardNotHeld, ShardTransferError
from node.storage.holder import LocalShardHolder
from node.storage.shards import StorageError
from protocols.framing import PEER_FAILURES
from protocols.kad.keyspace import distance, kad_id
from protocols.kad.messages import PeerInfo
from protocols.store import ShardCorrupt, ShardMismatch, ShardNotFound, StoreRefused
from protocols.store.client import StoreClient, StoreStatus
from protocols.store.messages import Refused, RefuseReason

# Everything a remote store or fetch can fail with that means "not this peer".
_REMOTE_FAILURES: tuple[type[BaseException], ...] = (
    *PEER_FAILURES,
    StoreRefused,
    ShardNotFound,
    ShardCorrupt,
)


# Of the nodes closest to a shard's address that have not announced it, the
# ones worth asking: placement puts holders among the very closest.
POSSIBLE_HOLDERS = 8
# A holder that cannot answer "do you hold it" this fast counts as absent.
HAS_TIMEOUT = 5.0


def _name(peer: PeerInfo) -> str:
    return peer.peer_id.hex()[-12:]


def _refusal(
    who: str, reason: RefuseReason | None, detail: str, contract_id: bytes
) -> ShardTransferError:
    """The error for a holder's refusal to store a shard."""
    if reason is RefuseReason.NO_CONTRACT:
        named = f"contract {contract_id.hex()}" if contract_id else "no contract"
        return ShardNoContract(
            f"{who} refused the shard: NO_CONTRACT (we sent {named}):"
            f" {detail or 'no active contract covers this shard'}"
        )
    name = reason.name if reason is not None else "UNSPECIFIED"
    return ShardTransferError(f"{who} refused the shard: {name} {detail}")


class NodeFileNetwork:
    def __init__(
        self,
        *,
        dht: Dht,
        client: StoreClient,
        holder: LocalShardHolder,
        local_peer_id: bytes,
        self_addrs: Callable[[], tuple[bytes, ...]],
    ) -> None:
        self.dht = dht
        self.client = client
        self.holder = holder
        self._local = local_peer_id
        self._self_addrs = self_addrs

    @property
    def local_peer_id(self) -> bytes:
        return self._local

    def _me(self) -> PeerInfo:
        return PeerInfo(self._local, self._self_addrs())

    async def holder_candidates(self, address: bytes) -> list[PeerInfo]:
        report = await self.dht.lookup(address)
        target = kad_id(address)
        ranked = [
            (distance(target, c.kad_id), PeerInfo(c.peer_id, c.addrs)) for c in report.closest
        ]
        ranked.append((distance(target, kad_id(self._local)), self._me()))
        ranked.sort(key=lambda pair: pair[0])
        return [peer for _, peer in ranked]

    async def store_shard(
        self, peer: PeerInfo, address: bytes, data: bytes, *, contract_id: bytes = b""
    ) -> None:
        if peer.peer_id == self._local:
            try:
                local = await self.holder.put_local(address, data, contract_id=contract_id)
            except (StorageError, ValueError) as error:
                raise ShardTransferError(f"this node: {error}") from error
            if isinstance(local, Refused):
                raise _refusal("this node", local.reason, local.detail, contract_id)
            return
        try:
            outcome = await self.client.store_shard(
                peer.peer_id, peer.addrs, address, data, contract_id=contract_id
            )
        except _REMOTE_FAILURES as error:
            raise ShardTransferError(f"{_name(peer)}: {type(error).__name__}: {error}") from error
        if outcome.status is StoreStatus.REFUSED:
            raise _refusal(_name(peer), outcome.reason, outcome.detail, contract_id)

    async def shard_holders(self, address: bytes) -> tuple[list[PeerInfo], list[PeerInfo]]:
        announced: dict[bytes, PeerInfo] = {}
        if (await self.holder.has([address]))[0]:
            announced[self._local] = self._me()
        providers, closest = await self.dht.find_providers_and_closest(address)
        for peer in providers:
            announced.setdefault(peer.peer_id, peer)
        # Holders are placed among the closest nodes; they may not have
        # announced themselves yet, so they are worth asking after providers.
        possible = [PeerInfo(c.peer_id, c.addrs) for c in closest if c.peer_id not in announced][
            :POSSIBLE_HOLDERS
        ]
        return list(announced.values()), possible

    async def confirmed_holders(self, address: bytes) -> list[PeerInfo]:
        announced, possible = await self.shard_holders(address)
        confirmed: list[PeerInfo] = []

        async def ask(peer: PeerInfo) -> None:
            held = False
            if peer.peer_id == self._local:
                held = (await self.holder.has([address]))[0]
            else:
                try:
                    with trio.move_on_after(HAS_TIMEOUT):
                        held = (await self.client.has_shards(peer.peer_id, peer.addrs, [address]))[
                            0
                        ]
                except _REMOTE_FAILURES:
                    held = False
            if held:
                confirmed.append(peer)

        async with trio.open_nursery() as nursery:
            for peer in [*announced, *possible]:
                nursery.start_soon(ask, peer)
        return confirmed

    async def fetch_shard(self, peer: PeerInfo, address: bytes) -> bytes:
        if peer.peer_id == self._local:
            try:
                piece = await self.holder.read(address, 0, None)
            except ShardCorrupt as error:
                raise ShardTransferError(f"this node: {error}") from error
            if piece is None:
                raise ShardNotHeld("this node does not hold the shard")
            return piece.data
        try:
            return await self.client.fetch_shard(peer.peer_id, peer.addrs, address)
        except ShardNotFound as error:
            raise ShardNotHeld(f"{_name(peer)} does not hold the shard") from error
        except ShardMismatch as error:
            raise ShardBadCopy(f"{_name(peer)} served a copy that fails its hash") from error
        except _REMOTE_FAILURES as error:
            raise ShardTransferError(f"{_name(peer)}: {type(error).__name__}: {error}") from error

    async def publish_record(self, key: bytes, value: bytes) -> int:
        report = await self.dht.put(key, value)
        return report.accepted

    async def find_record(self, key: bytes) -> bytes | None:
        report = await self.dht.get(key)
        return report.value
