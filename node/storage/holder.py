"""The node's shard store, as the store protocol's ShardHolder.

ShardStore is blocking (fsync, hashing); every call here runs it in a worker
thread so the event loop keeps answering pings and lookups while a disk is
busy. ``on_stored`` is told about each newly committed shard, which is how
the node learns to announce itself as a provider.

``admit(address, contract_id)`` says whether an active storage contract of
this node covers a shard; when it is given, ``reserve`` refuses NO_CONTRACT
(before setting any space aside) the shards it does not cover. It runs on the
event loop, so it must be quick and must not block. Without it every shard is
admitted, contract or not. A shard already held is answered by the protocol
before ``reserve`` is asked, so it is never refused for want of a contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

from node.storage.shards import (
    Reservation,
    ShardCorrupt,
    ShardNotFound,
    ShardStore,
    StorageFull,
)
from node.storage.shards import (
    ShardMismatch as StoredShardMismatch,
)
from protocols.store import ShardCorrupt as WireShardCorrupt
from protocols.store import ShardMismatch as WireShardMismatch
from protocols.store.handlers import ShardSlice
from protocols.store.messages import Refused, RefuseReason

_T = TypeVar("_T")


class LocalShardHolder:
    def __init__(
        self,
        store: ShardStore,
        *,
        max_shard_size: int,
        on_stored: Callable[[bytes], None] | None = None,
        admit: Callable[[bytes, bytes], bool] | None = None,
    ) -> None:
        self.store = store
        self._max_shard_size = max_shard_size
        self._on_stored = on_stored
        self._admit = admit
        # Hashing and fsync of different shards may overlap; more threads than
        # this only queue on the same disk.
        self._limiter = trio.CapacityLimiter(4)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    def max_shard_size(self) -> int:
        return self._max_shard_size

    async def has(self, addresses: Sequence[bytes]) -> list[bool]:
        return await self._run(lambda: self.store.has_many(addresses))

    def _not_admitted(self, address: bytes, contract_id: bytes) -> Refused | None:
        if self._admit is None or self._admit(address, contract_id):
            return None
        return Refused(RefuseReason.NO_CONTRACT, "no active contract covers this shard")

    async def reserve(self, address: bytes, size: int, contract_id: bytes) -> Reservation | Refused:
        refused = self._not_admitted(address, contract_id)
        if refused is not None:
            return refused
        if size > self._max_shard_size:
            return Refused(
                RefuseReason.TOO_LARGE, f"shards are at most {self._max_shard_size} bytes"
            )
        try:
            # The store's lock may be held across a commit's fsync: not on the loop.
            return await self._run(lambda: self.store.reserve(address, size))
        except StorageFull:
            return Refused(RefuseReason.FULL, "this node's storage limit would be exceeded")
        except ValueError as error:
            return Refused(RefuseReason.BAD_REQUEST, str(error))

    async def commit(self, reservation: Reservation, data: bytes) -> bool:
        try:
            fresh = await self._run(lambda: self.store.commit(reservation, data))
        except StoredShardMismatch as error:
            raise WireShardMismatch(reservation.address) from error
        if fresh and self._on_stored is not None:
            self._on_stored(reservation.address)
        return fresh

    async def release(self, reservation: Reservation) -> None:
        await self._run(lambda: self.store.release(reservation))

    async def read(self, address: bytes, offset: int, length: int | None) -> ShardSlice | None:
        try:
            # The store verifies the whole shard on every read anyway.
            whole = await self._run(lambda: self.store.read(address))
        except ShardNotFound:
            return None
        except ShardCorrupt as error:
            raise WireShardCorrupt(address, "failed verification; quarantined") from error
        end = len(whole) if length is None else offset + length
        return ShardSlice(whole[offset:end], len(whole))

    async def put_local(
        self, address: bytes, data: bytes, *, contract_id: bytes = b""
    ) -> bool | Refused:
        """Store a shard this node placed on itself (no protocol round trip).

        True if stored now, False if already held. No admission check: a node
        keeping its own shards (placement or repair onto itself) owes no one a
        contract for them; ``admit`` guards what other nodes send.
        """
        del contract_id  # accepted for symmetry with StoreShard; nothing to check
        reservation = await self._run(lambda: self.store.reserve(address, len(data)))
        try:
            return await self.commit(reservation, data)
        finally:
            with trio.CancelScope(shield=True):
                await self.release(reservation)  # idempotent: a no-op after a commit
