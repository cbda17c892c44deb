"""An iterative Kademlia lookup as a pure state machine (no I/O, no clock).

The driver asks ``next_requests(now)`` whom to query, sends those requests,
and feeds back ``on_success`` / ``on_failure``; it sleeps until the next
response or ``next_deadline()``, whichever comes first, and stops when
``finished``. Modelled on rust-libp2p ``query/peers/closest.rs``.

Candidates are kept sorted by XOR distance to the target. The frontier is
the k closest candidates that have not failed; requests go only to frontier
members, at most ``alpha`` at a time, so the lookup keeps going while closer
peers arrive and never wanders past the frontier. It is finished once every
frontier member has answered.
"""

from __future__ import annotations

import bisect
import enum
import heapq
from collections.abc import Iterable

from protocols.kad.keyspace import KEY_BYTES
from protocols.kad.routing_table import Contact


class PeerState(enum.Enum):
    WAITING = enum.auto()
    IN_FLIGHT = enum.auto()
    SUCCEEDED = enum.auto()
    FAILED = enum.auto()


class _Candidate:
    __slots__ = ("contact", "deadline", "hops", "state")

    def __init__(self, contact: Contact, hops: int) -> None:
        self.contact = contact
        self.hops = hops
        self.state = PeerState.WAITING
        self.deadline = 0.0


class Lookup:
    """Finds the k closest peers to ``target``, a kad id (``keyspace.kad_id(key)``)."""

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        k: int = 20,
        alpha: int = 3,
        request_timeout: float = 2.0,
        local_peer_id: bytes | None = None,
    ) -> None:
        if len(target) != KEY_BYTES:
            raise ValueError(f"target must be a {KEY_BYTES}-byte kad id")
        if k < 1 or alpha < 1 or request_timeout <= 0:
            raise ValueError("k and alpha must be at least 1, request_timeout positive")
        self.target = target
        self.k = k
        self.alpha = alpha
        self.request_timeout = request_timeout
        self.local_peer_id = local_peer_id
        self._target_int = int.from_bytes(target, "big")
        self._candidates: dict[bytes, _Candidate] = {}
        # (distance, peer_id), ascending; ties cannot happen between distinct
        # peers, the peer_id only keeps the tuples comparable.
        self._order: list[tuple[int, bytes]] = []
        self._in_flight: set[bytes] = set()
        self._requests_sent = 0
        self._successes = 0
        self._failures = 0
        self._finished = False
        for seed in seeds:
            self._add(seed, hops=1)
        self._check_finished()

    # -- driver interface --------------------------------------------------

    def next_requests(self, now: float) -> list[Contact]:
        """Expire overdue requests, then start new ones; returns whom to query now."""
        if self._finished:
            return []
        self._expire(now)
        if self._check_finished():
            return []
        started: list[Contact] = []
        for cand in self._frontier():
            if len(self._in_flight) >= self.alpha:
                break
            if cand.state is PeerState.WAITING:
                cand.state = PeerState.IN_FLIGHT
                cand.deadline = now + self.request_timeout
                self._in_flight.add(cand.contact.peer_id)
                self._requests_sent += 1
                started.append(cand.contact)
        return started

    def on_success(self, peer_id: bytes, closer: Iterable[Contact], now: float) -> None:
        """``peer_id`` answered with ``closer``.

        Ignored unless ``peer_id`` is in flight and within its deadline, so a
        late, duplicate or unsolicited response changes nothing. Only the k
        closest of the peers in one response are taken, which bounds what a
        single peer can add. A peer already known keeps the addresses it was
        first seen with: a later source cannot redirect where we send it.
        """
        if self._finished:
            return
        self._expire(now)
        if peer_id in self._in_flight:
            self._in_flight.discard(peer_id)
            source = self._candidates[peer_id]
            source.state = PeerState.SUCCEEDED
            self._successes += 1
            fresh: dict[bytes, Contact] = {}
            for contact in closer:
                if contact.peer_id != self.local_peer_id:
                    fresh.setdefault(contact.peer_id, contact)
            for contact in heapq.nsmallest(self.k, fresh.values(), key=self._distance):
                self._add(contact, hops=source.hops + 1)
        self._check_finished()

    def on_failure(self, peer_id: bytes, now: float) -> None:
        """The request to ``peer_id`` failed; ignored unless it is in flight."""
        if self._finished:
            return
        self._expire(now)
        if peer_id in self._in_flight:
            self._fail(peer_id)
        self._check_finished()

    @property
    def finished(self) -> bool:
        """True once the k closest non-failed candidates have all answered.

        Also true when no candidate is left to ask: the frontier then holds
        only successes, or is empty because everyone failed. Once finished a
        lookup stays finished and ignores further responses.
        """
        return self._finished

    def next_deadline(self) -> float | None:
        """The earliest deadline of a request in flight; None if none is."""
        if self._finished or not self._in_flight:
            return None
        return min(self._candidates[pid].deadline for pid in self._in_flight)

    # -- results -----------------------------------------------------------

    def closest_succeeded(self, count: int | None = None) -> list[Contact]:
        """Up to ``count`` (default k) peers that answered, closest first."""
        limit = self.k if count is None else count
        found: list[Contact] = []
        for _, peer_id in self._order:
            if len(found) >= limit:
                break
            cand = self._candidates[peer_id]
            if cand.state is PeerState.SUCCEEDED:
                found.append(cand.contact)
        return found

    def state_of(self, peer_id: bytes) -> PeerState | None:
        cand = self._candidates.get(peer_id)
        return None if cand is None else cand.state

    def hops_of(self, peer_id: bytes) -> int | None:
        """Seeds are hop 1; a peer learned from a hop-h peer is h+1 (minimum over sources)."""
        cand = self._candidates.get(peer_id)
        return None if cand is None else cand.hops

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def requests_sent(self) -> int:
        return self._requests_sent

    @property
    def successes(self) -> int:
        return self._successes

    @property
    def failures(self) -> int:
        """Failed requests, timeouts included."""
        return self._failures

    # -- internals ---------------------------------------------------------

    def _distance(self, contact: Contact) -> int:
        return int.from_bytes(contact.kad_id, "big") ^ self._target_int

    def _add(self, contact: Contact, hops: int) -> None:
        if contact.peer_id == self.local_peer_id:
            return
        known = self._candidates.get(contact.peer_id)
        if known is not None:
            known.hops = min(known.hops, hops)
            return
        self._candidates[contact.peer_id] = _Candidate(contact, hops)
        bisect.insort(self._order, (self._distance(contact), contact.peer_id))

    def _frontier(self) -> list[_Candidate]:
        frontier: list[_Candidate] = []
        for _, peer_id in self._order:
            cand = self._candidates[peer_id]
            if cand.state is not PeerState.FAILED:
                frontier.append(cand)
                if len(frontier) == self.k:
                    break
        return frontier

    def _expire(self, now: float) -> None:
        overdue = [pid for pid in self._in_flight if self._candidates[pid].deadline <= now]
        for peer_id in overdue:
            self._fail(peer_id)

    def _fail(self, peer_id: bytes) -> None:
        self._in_flight.discard(peer_id)
        self._candidates[peer_id].state = PeerState.FAILED
        self._failures += 1

    def _check_finished(self) -> bool:
        if not self._finished:
            self._finished = all(c.state is PeerState.SUCCEEDED for c in self._frontier())
        return self._finished
