"""The Kademlia routing table: 256 k-buckets, pure data, no I/O.

Theory of operation. The service calls ``update`` only after a peer has
answered a request validly. A bucket that is full does not take the
newcomer; ``update`` names the bucket's least-recently-seen contact instead,
and the service pings it: on failure it calls ``evict_and_insert``, on
success ``keep``. That is the only way an entry is ever displaced, and only
the oldest entry of a bucket can be. Per-subnet caps limit how much of a
bucket, and of the table, one public /24 (IPv4) or /48 (IPv6) may hold;
non-public addresses are exempt (see ``subnet``).
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TypeVar

from protocols.kad.keyspace import KEY_BITS, common_prefix_len, kad_id
from protocols.kad.subnet import public_subnet

_K = TypeVar("_K")


@dataclass(frozen=True)
class Contact:
    """A peer we can route to.

    Equality and hashing use ``peer_id`` only: a contact names a peer, and
    the same peer seen with other addresses is still the same contact.
    Compare ``addrs`` explicitly when they matter.
    """

    peer_id: bytes
    addrs: tuple[bytes, ...] = field(default=(), compare=False)
    kad_id: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kad_id", kad_id(self.peer_id))


class UpdateOutcome(enum.Enum):
    ADDED = enum.auto()
    REFRESHED = enum.auto()
    PENDING_EVICTION = enum.auto()
    REJECTED_SELF = enum.auto()
    REJECTED_SUBNET = enum.auto()


@dataclass(frozen=True)
class UpdateResult:
    outcome: UpdateOutcome
    # Set only for PENDING_EVICTION: the contact the service should ping.
    eviction_candidate: Contact | None = None


class _Entry:
    __slots__ = ("contact", "key", "last_seen", "subnet")

    def __init__(self, contact: Contact, last_seen: float, subnet: str | None) -> None:
        self.contact = contact
        self.key = int.from_bytes(contact.kad_id, "big")
        self.last_seen = last_seen
        self.subnet = subnet


class RoutingTable:
    def __init__(
        self,
        local_peer_id: bytes,
        *,
        k: int = 20,
        max_per_subnet_in_bucket: int = 2,
        max_per_subnet_in_table: int = 10,
    ) -> None:
        if k < 1 or max_per_subnet_in_bucket < 1 or max_per_subnet_in_table < 1:
            raise ValueError("k and the subnet caps must be at least 1")
        self.local_peer_id = local_peer_id
        self.local_kad_id = kad_id(local_peer_id)
        self.k = k
        self.max_per_subnet_in_bucket = max_per_subnet_in_bucket
        self.max_per_subnet_in_table = max_per_subnet_in_table
        # Each bucket is a dict in least-recently-seen-first order; moving an
        # entry to the tail is a delete and re-insert. Only non-empty buckets
        # exist, so an idle table is small (simulations hold a million).
        self._buckets: dict[int, dict[bytes, _Entry]] = {}
        self._bucket_of: dict[bytes, int] = {}
        self._subnets_in_table: Counter[str] = Counter()
        self._subnets_in_bucket: Counter[tuple[int, str]] = Counter()
        self._refreshed: dict[int, float] = {}

    # -- queries ---------------------------------------------------------

    def bucket_index(self, kad_id: bytes) -> int:
        """The bucket for ``kad_id``: its shared prefix length with ours, 0..255.

        Raises ValueError for our own id, which has no bucket.
        """
        cpl = common_prefix_len(self.local_kad_id, kad_id)
        if cpl == KEY_BITS:
            raise ValueError("the local id has no bucket")
        return cpl

    def get(self, peer_id: bytes) -> Contact | None:
        entry = self._entry(peer_id)
        return None if entry is None else entry.contact

    def last_seen(self, peer_id: bytes) -> float | None:
        entry = self._entry(peer_id)
        return None if entry is None else entry.last_seen

    def __contains__(self, peer_id: object) -> bool:
        return isinstance(peer_id, bytes) and peer_id in self._bucket_of

    def __len__(self) -> int:
        return len(self._bucket_of)

    def contacts(self) -> list[Contact]:
        return [e.contact for i in sorted(self._buckets) for e in self._buckets[i].values()]

    def bucket(self, index: int) -> list[Contact]:
        """The contacts of bucket ``index``, least recently seen first."""
        return [e.contact for e in self._buckets.get(self._check_index(index), {}).values()]

    def bucket_sizes(self) -> dict[int, int]:
        return {i: len(self._buckets[i]) for i in sorted(self._buckets)}

    def closest(
        self, target_kad_id: bytes, count: int, *, exclude: Collection[bytes] = ()
    ) -> list[Contact]:
        """Up to ``count`` contacts by XOR distance to ``target_kad_id``, closest first."""
        if count <= 0:
            return []
        target = int.from_bytes(target_kad_id, "big")
        entries = (
            e
            for bucket in self._buckets.values()
            for pid, e in bucket.items()
            if pid not in exclude
        )
        return [e.contact for e in heapq.nsmallest(count, entries, key=lambda e: e.key ^ target)]

    # -- changes ---------------------------------------------------------

    def update(self, contact: Contact, now: float) -> UpdateResult:
        """Record that ``contact`` just answered us validly.

        A known peer moves to the tail of its bucket and, if ``contact.addrs``
        is non-empty, takes those addresses. If the new addresses move it into
        a subnet that is already at its cap, the update is rejected and the
        old entry stays as it was (addresses, position and last-seen time):
        we keep what we had rather than drop a peer over a cap.

        A newcomer meeting a subnet cap is rejected before a full bucket is
        considered, so no ping is wasted on its behalf; the check counts the
        bucket as it is, even though evicting the head might free a slot in
        the same subnet.
        """
        if contact.peer_id == self.local_peer_id:
            return UpdateResult(UpdateOutcome.REJECTED_SELF)
        index = self.bucket_index(contact.kad_id)
        bucket = self._buckets.get(index, {})
        old = bucket.get(contact.peer_id)
        if old is not None:
            entry = _Entry(old.contact, now, old.subnet)
            if contact.addrs:
                entry = _Entry(contact, now, public_subnet(contact.addrs))
                # Its own entry is not counted against it: only a move into
                # another, full, subnet is refused.
                if entry.subnet != old.subnet and not self._subnet_has_room(entry.subnet, index):
                    return UpdateResult(UpdateOutcome.REJECTED_SUBNET)
            self._unlink(index, old)
            self._link(index, entry, now)
            return UpdateResult(UpdateOutcome.REFRESHED)
        entry = _Entry(contact, now, public_subnet(contact.addrs))
        if not self._subnet_has_room(entry.subnet, index):
            return UpdateResult(UpdateOutcome.REJECTED_SUBNET)
        if len(bucket) >= self.k:
            head = next(iter(bucket.values()))
            return UpdateResult(UpdateOutcome.PENDING_EVICTION, head.contact)
        self._link(index, entry, now)
        return UpdateResult(UpdateOutcome.ADDED)

    def evict_and_insert(self, stale_peer_id: bytes, contact: Contact, now: float) -> bool:
        """Replace ``stale_peer_id``, which failed its ping, with ``contact``.

        Succeeds only if the stale peer is still the least-recently-seen
        entry of the bucket ``contact`` belongs in, ``contact`` is not
        ourselves and not already in the table, and it fits the subnet caps
        once the stale entry is gone. Otherwise nothing changes and it
        returns False: the stale peer was seen again meanwhile (so it is not
        to be evicted), or it left and the service may simply ``update`` the
        newcomer again.
        """
        if contact.peer_id == self.local_peer_id or contact.peer_id in self._bucket_of:
            return False
        index = self.bucket_index(contact.kad_id)
        bucket = self._buckets.get(index, {})
        if not bucket or next(iter(bucket)) != stale_peer_id:
            return False
        stale = bucket[stale_peer_id]
        entry = _Entry(contact, now, public_subnet(contact.addrs))
        if not self._subnet_has_room(entry.subnet, index, leaving=stale):
            return False
        self._unlink(index, stale)
        self._link(index, entry, now)
        return True

    def keep(self, peer_id: bytes, now: float) -> None:
        """``peer_id`` answered the eviction ping: move it to the tail of its bucket."""
        entry = self._entry(peer_id)
        if entry is None:
            return
        index = self._bucket_of[peer_id]
        self._unlink(index, entry)
        entry.last_seen = now
        self._link(index, entry, now)

    def remove(self, peer_id: bytes) -> bool:
        entry = self._entry(peer_id)
        if entry is None:
            return False
        self._unlink(self._bucket_of[peer_id], entry)
        return True

    # -- bucket refresh ----------------------------------------------------

    def stale_buckets(self, now: float, max_age: float) -> list[int]:
        """Buckets a node should refresh with a lookup into their range.

        Those are the non-empty buckets and every bucket below the highest
        non-empty one (the ones a network of this size can fill, as libp2p
        refreshes its first few), if not refreshed for ``max_age``. A bucket
        counts as refreshed when a contact is inserted into it or refreshed in
        it, or on ``mark_bucket_refreshed``; one never refreshed is stale.
        """
        sizes = self.bucket_sizes()
        if not sizes:
            return []
        stale = []
        for index in range(max(sizes) + 1):
            last = self._refreshed.get(index)
            if last is None or now - last >= max_age:
                stale.append(index)
        return stale

    def mark_bucket_refreshed(self, index: int, now: float) -> None:
        self._refreshed[self._check_index(index)] = now

    # -- internals ---------------------------------------------------------

    def _entry(self, peer_id: bytes) -> _Entry | None:
        index = self._bucket_of.get(peer_id)
        return None if index is None else self._buckets[index][peer_id]

    def _check_index(self, index: int) -> int:
        if not 0 <= index < KEY_BITS:
            raise IndexError(f"bucket index must be in [0, {KEY_BITS}), got {index}")
        return index

    def _subnet_has_room(
        self, subnet: str | None, index: int, *, leaving: _Entry | None = None
    ) -> bool:
        if subnet is None:
            return True
        freed = 1 if leaving is not None and leaving.subnet == subnet else 0
        return (
            self._subnets_in_bucket[index, subnet] - freed < self.max_per_subnet_in_bucket
            and self._subnets_in_table[subnet] - freed < self.max_per_subnet_in_table
        )

    def _link(self, index: int, entry: _Entry, now: float) -> None:
        peer_id = entry.contact.peer_id
        self._buckets.setdefault(index, {})[peer_id] = entry
        self._bucket_of[peer_id] = index
        if entry.subnet is not None:
            self._subnets_in_bucket[index, entry.subnet] += 1
            self._subnets_in_table[entry.subnet] += 1
        self._refreshed[index] = now

    def _unlink(self, index: int, entry: _Entry) -> None:
        peer_id = entry.contact.peer_id
        bucket = self._buckets[index]
        del bucket[peer_id]
        if not bucket:
            del self._buckets[index]
        del self._bucket_of[peer_id]
        if entry.subnet is not None:
            _decrement(self._subnets_in_bucket, (index, entry.subnet))
            _decrement(self._subnets_in_table, entry.subnet)


def _decrement(counter: Counter[_K], key: _K) -> None:
    counter[key] -= 1
    if not counter[key]:
        del counter[key]
