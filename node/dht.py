"""The node's Kademlia: routing-table upkeep, replicated records, providers.

Theory of operation
-------------------
* A peer enters the routing table only after it answered one of our requests
  validly: peers met in lookups are added when they answer; a peer that
  contacts us is queued and asked a FIND_NODE before it is added. A full
  bucket yields its least-recently-seen contact, which we ask too; only if it
  fails is it replaced. A peer that fails a request is dropped from the table.
* ``put`` validates and keeps the record locally, finds the R closest nodes
  to the key and stores it on them; it reports how many of those R accepted.
* ``get`` asks the network (never only the local copy), validates every
  answer, selects the best, and repairs closest holders that had a stale or
  no copy.
* Every holder republishes what it holds to the current R closest nodes on an
  interval (a record just received from a republishing peer waits a round:
  the store resets its republish time on every write), so
  when holders leave, the rest re-replicate to the new closest set; expired
  records and provider entries are dropped on the same tick.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from node.config import NodeConfig
from node.records.book import PutOutcome, RecordBook
from node.records.quota import RecordQuota
from node.records.validators import RecordInvalid
from protocols.errors import RemoteProtocolError
from protocols.framing import PEER_FAILURES, Counters, StreamOpener
from protocols.kad.client import KadClient
from protocols.kad.handlers import KadHandlers
from protocols.kad.keyspace import distance, kad_id, random_key_at_prefix
from protocols.kad.lookup import Lookup, PeerState
from protocols.kad.messages import PeerInfo
from protocols.kad.query import run_lookup
from protocols.kad.routing_table import Contact, RoutingTable, UpdateOutcome

if TYPE_CHECKING:
    # py-libp2p pulls in trio-typing, whose stubs shadow trio's own types.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

# Seconds between the self-lookups that follow joining (see _refresh_loop).
JOIN_FOLLOW_UP_DELAYS = (2.0, 5.0, 15.0, 40.0)
# Buckets deeper than this are not refreshed: finding a key for bucket i
# costs ~2**(i+1) hashes, and a network would need ~2**16 nodes to fill it.
MAX_REFRESH_PREFIX = 16
VALIDATION_QUEUE = 256
VALIDATION_WORKERS = 4
REPUBLISH_CONCURRENCY = 8
# How long to wait for identify to tell us a new inbound peer's addresses.
IDENTIFY_GRACE = 2.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class PutReport:
    key: bytes
    accepted: int
    target: int  # how many nodes the record was meant for (R, or fewer in a small network)
    holders: tuple[bytes, ...]
    failures: dict[bytes, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetReport:
    key: bytes
    value: bytes | None
    responders: int
    had_best: int
    repaired: int
    invalid: int


@dataclass(frozen=True)
class LookupReport:
    closest: tuple[Contact, ...]
    queried: int
    max_hops: int
    seconds: float


def _reason(error: BaseException) -> str:
    if isinstance(error, RemoteProtocolError):
        return error.reason
    return type(error).__name__


def dialable(addrs: Sequence[bytes]) -> tuple[bytes, ...]:
    """Drop addresses nobody can dial (unspecified 0.0.0.0 / ::, or unparsable)."""
    return tuple(raw for raw in addrs if _is_dialable(raw))


# Called for every address of every peer in every lookup response, with the
# same few addresses over and over: parsing was ~20% of a lookup's CPU.
@functools.lru_cache(maxsize=8192)
def _is_dialable(raw: bytes) -> bool:
    import multiaddr  # local: keeps this module importable for pure tests

    try:
        ma = multiaddr.Multiaddr(raw)
        text = str(ma)
        host = ma.value_for_protocol("ip4") if "/ip4/" in text else None
        host6 = ma.value_for_protocol("ip6") if "/ip6/" in text else None
    except Exception:  # the multiaddr package raises assorted types on junk
        return False
    return host != "0.0.0.0" and host6 != "::"


class Dht:
    """Kademlia for one node. Start with ``nursery.start(dht.run)``."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        local_peer_id: bytes,
        open_stream: StreamOpener,
        book: RecordBook,
        self_addrs: Callable[[], tuple[bytes, ...]],
        peer_addrs: Callable[[bytes], tuple[bytes, ...]],
        counters: Counters,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = config
        self.local_peer_id = local_peer_id
        self.book = book
        self.counters = counters
        self.table = RoutingTable(local_peer_id, k=config.k)
        self.client = KadClient(open_stream, timeout=config.request_timeout)
        self.handlers = KadHandlers(self, self, self, k=config.k, on_request=self._note_inbound)
        self._self_addrs = self_addrs
        self._peer_addrs = peer_addrs
        self._clock_ms = clock_ms
        self.record_quota = RecordQuota()
        self._rng = random.Random()
        self._evicting: set[bytes] = set()
        self._validating: set[bytes] = set()
        self._validate_send, self._validate_receive = trio.open_memory_channel[bytes](
            VALIDATION_QUEUE
        )
        self._nursery: trio.Nursery | None = None
        self._bootstrap_peers: list[PeerInfo] = []

    # -- lifecycle ---------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: inbound validation, bucket refresh, republish."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(VALIDATION_WORKERS):
                nursery.start_soon(self._validation_worker)
            nursery.start_soon(self._refresh_loop)
            nursery.start_soon(self._maintenance_loop)
            task_status.started()

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # -- interfaces the Kademlia handlers call ------------------------------

    def closest_peers(
        self, target_kad_id: bytes, count: int, exclude: Collection[bytes]
    ) -> list[PeerInfo]:
        contacts = self.table.closest(target_kad_id, count, exclude=exclude)
        return [PeerInfo(c.peer_id, c.addrs) for c in contacts]

    def get_record(self, key: bytes) -> bytes | None:
        return self.book.get_valid(key, self._clock_ms())

    def put_record(self, key: bytes, value: bytes, from_peer: bytes) -> None:
        now = self._clock_ms()
        # Records are free to store, within each sender's budget (checked
        # before any validation work).
        if not self.record_quota.allow(from_peer, len(key) + len(value), now):
            self.counters.inc("record_quota_exceeded")
            raise RemoteProtocolError("quota_exceeded", "too many records from this peer")
        try:
            outcome = self.book.accept(key, value, now)
        except RecordInvalid as error:
            raise RemoteProtocolError("record_invalid", error.reason) from error
        if outcome is PutOutcome.KEPT_EXISTING:
            raise RemoteProtocolError("record_stale", "a newer record is held")
        self.counters.inc("records_accepted")

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        addrs = dialable(provider.addrs)
        if not addrs:
            raise RemoteProtocolError("provider_not_dialable")
        expires = self._clock_ms() + int(self.config.provider_ttl * 1000)
        self.book.store.add_provider(key, provider.peer_id, addrs, expires_at_ms=expires)

    def get_providers(self, key: bytes) -> list[PeerInfo]:
        entries = self.book.store.providers(key, self._clock_ms(), limit=self.config.k)
        return [PeerInfo(e.peer_id, e.addrs) for e in entries]

    # -- routing table upkeep ----------------------------------------------

    def consider(self, contact: Contact) -> None:
        """Offer a peer that just answered us validly to the routing table."""
        addrs = dialable(contact.addrs)
        if not addrs:
            return
        contact = Contact(contact.peer_id, addrs)
        result = self.table.update(contact, trio.current_time())
        candidate = result.eviction_candidate
        if result.outcome is UpdateOutcome.PENDING_EVICTION and candidate is not None:
            if candidate.peer_id not in self._evicting:
                self._evicting.add(candidate.peer_id)
                self._spawn(self._check_eviction, candidate, contact)
        elif result.outcome is UpdateOutcome.REJECTED_SUBNET:
            self.counters.inc("table_rejected_subnet")

    async def _check_eviction(self, candidate: Contact, newcomer: Contact) -> None:
        try:
            await self.client.find_node(self._info(candidate), self.local_peer_id)
        except PEER_FAILURES:
            self.table.evict_and_insert(candidate.peer_id, newcomer, trio.current_time())
            self.counters.inc("table_evictions")
        else:
            self.table.keep(candidate.peer_id, trio.current_time())
        finally:
            self._evicting.discard(candidate.peer_id)

    def _failed(self, peer_id: bytes) -> None:
        if self.table.remove(peer_id):
            self.counters.inc("table_removed_unresponsive")

    def _note_inbound(self, peer_id: bytes) -> None:
        if peer_id in self.table or peer_id in self._validating:
            return
        try:
            self._validate_send.send_nowait(peer_id)
        except trio.WouldBlock:
            self.counters.inc("validation_queue_full")
            return
        self._validating.add(peer_id)

    async def _validation_worker(self) -> None:
        async for peer_id in self._validate_receive:
            try:
                await self._validate_inbound(peer_id)
            finally:
                self._validating.discard(peer_id)

    async def _validate_inbound(self, peer_id: bytes) -> None:
        # Identify runs on connect; give it a moment to tell us where the
        # peer listens. A peer without a dialable address is a client, not
        # a router, and stays out of the table.
        with trio.move_on_after(IDENTIFY_GRACE):
            # The peerstore offers no event for new addresses, so poll briefly.
            while not dialable(self._peer_addrs(peer_id)):  # noqa: ASYNC110
                await trio.sleep(0.05)
        addrs = dialable(self._peer_addrs(peer_id))
        if not addrs or peer_id in self.table:
            return
        contact = Contact(peer_id, addrs)
        try:
            await self.client.find_node(self._info(contact), self.local_peer_id)
        except PEER_FAILURES:
            self.counters.inc("inbound_validation_failed")
            return
        self.consider(contact)

    # -- lookups -----------------------------------------------------------

    @staticmethod
    def _info(contact: Contact) -> PeerInfo:
        return PeerInfo(contact.peer_id, contact.addrs)

    @staticmethod
    def _contacts(peers: Sequence[PeerInfo]) -> list[Contact]:
        return [Contact(p.peer_id, dialable(p.addrs)) for p in peers]

    def _new_lookup(self, target_kad_id: bytes) -> Lookup:
        seeds = self.table.closest(target_kad_id, self.config.k)
        return Lookup(
            target_kad_id,
            seeds,
            k=self.config.k,
            alpha=self.config.alpha,
            request_timeout=self.config.request_timeout,
            local_peer_id=self.local_peer_id,
        )

    async def _run(self, key: bytes, ask: Callable[[Contact], Awaitable[list[Contact]]]) -> Lookup:
        async def guarded(contact: Contact) -> list[Contact]:
            try:
                return await ask(contact)
            except PEER_FAILURES:
                self._failed(contact.peer_id)
                raise

        lookup = self._new_lookup(kad_id(key))
        return await run_lookup(lookup, guarded, on_valid=self.consider)

    async def lookup(self, key: bytes) -> LookupReport:
        """Iterative FIND_NODE for ``key``: the k closest nodes that answered."""
        started = trio.current_time()

        async def ask(contact: Contact) -> list[Contact]:
            return self._contacts(await self.client.find_node(self._info(contact), key))

        done = await self._run(key, ask)
        closest = tuple(done.closest_succeeded())
        hops = [done.hops_of(c.peer_id) or 0 for c in closest]
        return LookupReport(
            closest=closest,
            queried=done.requests_sent,
            max_hops=max(hops, default=0),
            seconds=trio.current_time() - started,
        )

    def _replica_set(self, key: bytes, closest: Sequence[Contact]) -> tuple[list[Contact], bool]:
        """The R closest of ``closest`` plus ourselves; whether we are among them."""
        target = kad_id(key)
        ranked: list[tuple[int, Contact | None]] = [
            (distance(target, c.kad_id), c) for c in closest
        ]
        ranked.append((distance(target, kad_id(self.local_peer_id)), None))
        ranked.sort(key=lambda pair: pair[0])
        chosen = ranked[: self.config.replication]
        remote = [c for _, c in chosen if c is not None]
        return remote, len(remote) < len(chosen)

    async def put(self, key: bytes, value: bytes) -> PutReport:
        """Store a record on the R closest nodes.

        Raises RecordInvalid for a record that fails validation, or that is
        older than one this node already holds (it would be refused anyway).
        """
        if self.book.accept(key, value, self._clock_ms()) is PutOutcome.KEPT_EXISTING:
            raise RecordInvalid("stale: a newer record for this key is already held")
        found = await self.lookup(key)
        remote, local_is_replica = self._replica_set(key, found.closest)
        accepted: list[bytes] = [self.local_peer_id] if local_is_replica else []
        failures: dict[bytes, str] = {}

        async def store_on(contact: Contact) -> None:
            try:
                await self.client.put_value(self._info(contact), key, value)
            except PEER_FAILURES as error:
                failures[contact.peer_id] = _reason(error)
            else:
                accepted.append(contact.peer_id)

        async with trio.open_nursery() as nursery:
            for contact in remote:
                nursery.start_soon(store_on, contact)
        self.book.store.mark_republished(key, self._clock_ms())
        return PutReport(
            key=key,
            accepted=len(accepted),
            target=len(remote) + int(local_is_replica),
            holders=tuple(accepted),
            failures=failures,
        )

    async def get(self, key: bytes) -> GetReport:
        """Ask the network for ``key``; select the best valid value; repair stale holders."""
        now = self._clock_ms()
        answers: dict[bytes, bytes | None] = {}
        invalid = 0

        async def ask(contact: Contact) -> list[Contact]:
            nonlocal invalid
            value, closer = await self.client.get_value(self._info(contact), key)
            if value is not None and self.book.best(key, [value], now) is None:
                invalid += 1
                self.counters.inc("get_invalid_record")
                value = None
            answers[contact.peer_id] = value
            return self._contacts(closer)

        done = await self._run(key, ask)
        local = self.book.get_valid(key, now)
        candidates = [v for v in answers.values() if v is not None]
        if local is not None:
            candidates.append(local)
        # The best copy, or in a merging namespace (tags) the union of all.
        best = self.book.combine(key, candidates, now)
        if best is None:
            return GetReport(key, None, len(answers), 0, 0, invalid)
        if local is not None and local != best:
            self.book.accept(key, best, now)
        # Repair: the closest nodes that answered but lack the best copy.
        closest = done.closest_succeeded(self.config.replication)
        stale = [c for c in closest if answers.get(c.peer_id) != best]
        repaired = 0

        async def repair(contact: Contact) -> None:
            nonlocal repaired
            try:
                await self.client.put_value(self._info(contact), key, best)
            except PEER_FAILURES:
                return
            repaired += 1

        async with trio.open_nursery() as nursery:
            for contact in stale:
                nursery.start_soon(repair, contact)
        had_best = sum(1 for v in answers.values() if v == best)
        return GetReport(key, best, len(answers), had_best, repaired, invalid)

    async def provide(self, key: bytes) -> int:
        """Announce ourselves as a provider of ``key``; returns how many nodes took it."""
        me = PeerInfo(self.local_peer_id, dialable(self._self_addrs()))
        self.add_provider(key, me)
        found = await self.lookup(key)
        remote, _ = self._replica_set(key, found.closest)
        sent = 0

        async def announce(contact: Contact) -> None:
            nonlocal sent
            try:
                await self.client.add_provider(self._info(contact), key, me)
            except PEER_FAILURES:
                return
            sent += 1

        async with trio.open_nursery() as nursery:
            for contact in remote:
                nursery.start_soon(announce, contact)
        return sent

    async def find_providers(self, key: bytes) -> list[PeerInfo]:
        providers, _ = await self.find_providers_and_closest(key)
        return providers

    async def find_providers_and_closest(
        self, key: bytes
    ) -> tuple[list[PeerInfo], tuple[Contact, ...]]:
        """Announced providers of ``key``, and the closest nodes that answered.

        The closest nodes are where a provider of ``key`` is expected to be
        (shards are placed there), so a reader can ask them even before their
        announcements have spread.
        """
        found: dict[bytes, PeerInfo] = {p.peer_id: p for p in self.get_providers(key)}

        async def ask(contact: Contact) -> list[Contact]:
            providers, closer = await self.client.get_providers(self._info(contact), key)
            for p in providers:
                found.setdefault(p.peer_id, PeerInfo(p.peer_id, dialable(p.addrs)))
            return self._contacts(closer)

        done = await self._run(key, ask)
        return list(found.values()), tuple(done.closest_succeeded())

    async def find_peer(self, peer_id: bytes) -> Contact | None:
        known = self.table.get(peer_id)
        if known is not None:
            return known
        addrs: dict[bytes, tuple[bytes, ...]] = {}

        async def ask(contact: Contact) -> list[Contact]:
            closer = self._contacts(await self.client.find_node(self._info(contact), peer_id))
            for c in closer:
                if c.peer_id == peer_id and c.addrs:
                    addrs.setdefault(peer_id, c.addrs)
            return closer

        done = await self._run(peer_id, ask)
        if done.state_of(peer_id) is PeerState.SUCCEEDED or peer_id in addrs:
            return Contact(peer_id, addrs.get(peer_id, ()))
        return None

    # -- joining and staying joined -----------------------------------------

    async def bootstrap(self, peers: Sequence[PeerInfo]) -> int:
        """Contact bootstrap peers, then look ourselves up; returns peers reached."""
        self._bootstrap_peers = [p for p in peers if p.peer_id != self.local_peer_id]
        reached = 0

        async def contact(peer: PeerInfo) -> None:
            nonlocal reached
            try:
                await self.client.find_node(peer, self.local_peer_id)
            except PEER_FAILURES as error:
                log.info("bootstrap peer unreachable: %s", _reason(error))
                return
            reached += 1
            self.consider(Contact(peer.peer_id, peer.addrs))

        async with trio.open_nursery() as nursery:
            for peer in self._bootstrap_peers:
                nursery.start_soon(contact, peer)
        if reached:
            await self.lookup(self.local_peer_id)
            await self.refresh_buckets(force=True)
        return reached

    async def refresh_buckets(self, *, force: bool = False) -> int:
        now = trio.current_time()
        max_age = 0.0 if force else self.config.bucket_refresh_interval
        stale = [i for i in self.table.stale_buckets(now, max_age) if i <= MAX_REFRESH_PREFIX]
        for index in stale:
            key = random_key_at_prefix(kad_id(self.local_peer_id), index, self._rng)
            if key is not None:
                await self.lookup(key)
            self.table.mark_bucket_refreshed(index, trio.current_time())
        return len(stale)

    async def _refresh_loop(self) -> None:
        # Peers that joined at about the same time as us were not yet in
        # anyone's table when we looked ourselves up; a few early self-lookups
        # find them in seconds instead of one full refresh interval later.
        for delay in JOIN_FOLLOW_UP_DELAYS:
            await trio.sleep(delay)
            if len(self.table):
                await self.lookup(self.local_peer_id)
        while True:
            await trio.sleep(self.config.bucket_refresh_interval)
            if len(self.table) == 0 and self._bootstrap_peers:
                await self.bootstrap(self._bootstrap_peers)
                continue
            await self.lookup(self.local_peer_id)
            await self.refresh_buckets()

    async def republish_due(self) -> int:
        """Push every record due for republishing to the current R closest nodes."""
        now = self._clock_ms()
        store = self.book.store
        store.drop_expired(now)
        store.drop_expired_providers(now)
        due = store.due_for_republish(now, int(self.config.republish_interval * 1000))
        limiter = trio.CapacityLimiter(REPUBLISH_CONCURRENCY)
        pushed = 0

        async def republish(key: bytes, value: bytes) -> None:
            nonlocal pushed
            async with limiter:
                if self.book.get_valid(key, self._clock_ms()) is None:
                    return
                found = await self.lookup(key)
                remote, _ = self._replica_set(key, found.closest)
                for contact in remote:
                    try:
                        await self.client.put_value(self._info(contact), key, value)
                    except PEER_FAILURES:
                        continue
                    pushed += 1
                store.mark_republished(key, self._clock_ms())

        async with trio.open_nursery() as nursery:
            for record in due:
                nursery.start_soon(republish, record.key, record.value)
        if pushed:
            self.counters.inc("records_republished", pushed)
        return pushed

    async def _maintenance_loop(self) -> None:
        tick = min(self.config.expiry_check_interval, self.config.republish_interval)
        while True:
            # Jitter keeps holders of the same record from republishing in lockstep.
            await trio.sleep(tick * self._rng.uniform(0.8, 1.2))
            await self.republish_due()
