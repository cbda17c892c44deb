"""The lookup state machine, scripted by hand and driven through simulated networks.

The simulated network is an event queue with a fake clock: requests get a
random latency, dead peers never answer, and the driver sleeps until the next
response or the lookup's next deadline, as the real driver does.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from protocols.kad.keyspace import KEY_BITS, distance, kad_id
from protocols.kad.lookup import Lookup, PeerState
from protocols.kad.routing_table import Contact, RoutingTable

LOCAL = b"local-peer"
K = 20
ALPHA = 3
TIMEOUT = 2.0


def by_distance(contacts: Sequence[Contact], target: bytes) -> list[Contact]:
    return sorted(contacts, key=lambda c: distance(c.kad_id, target))


def ids(contacts: Sequence[Contact]) -> list[bytes]:
    return [c.peer_id for c in contacts]


def make_contacts(n: int, seed: int) -> list[Contact]:
    rng = random.Random(seed)
    return [Contact(rng.randbytes(34)) for _ in range(n)]


# -- scripted by hand ------------------------------------------------------------


def test_requests_at_most_alpha_closest_first() -> None:
    target = kad_id(b"target")
    seeds = make_contacts(10, seed=1)
    lookup = Lookup(target, seeds, k=K, alpha=ALPHA)
    first = lookup.next_requests(now=0.0)
    assert ids(first) == ids(by_distance(seeds, target)[:ALPHA])
    assert all(lookup.state_of(c.peer_id) is PeerState.IN_FLIGHT for c in first)
    assert lookup.next_requests(now=0.1) == []
    assert lookup.requests_sent == ALPHA and lookup.num_in_flight == ALPHA
    assert lookup.next_deadline() == TIMEOUT

    lookup.on_success(first[0].peer_id, [], now=0.5)
    (fourth,) = lookup.next_requests(now=0.5)
    assert fourth == by_distance(seeds, target)[ALPHA]
    assert lookup.next_deadline() == TIMEOUT
    assert lookup.successes == 1


def test_does_not_wander_past_the_k_closest() -> None:
    target = kad_id(b"target")
    seeds = by_distance(make_contacts(6, seed=2), target)
    lookup = Lookup(target, seeds, k=2, alpha=5)
    assert ids(lookup.next_requests(now=0.0)) == ids(seeds[:2])
    # A failure lets the next closest into the frontier, and only it.
    lookup.on_failure(seeds[0].peer_id, now=1.0)
    assert ids(lookup.next_requests(now=1.0)) == [seeds[2].peer_id]
    lookup.on_success(seeds[1].peer_id, [], now=1.5)
    lookup.on_success(seeds[2].peer_id, [], now=1.5)
    assert lookup.finished
    assert ids(lookup.closest_succeeded()) == ids(seeds[1:3])
    assert all(lookup.state_of(c.peer_id) is PeerState.WAITING for c in seeds[3:])
    assert lookup.next_requests(now=2.0) == []


def test_closer_peers_keep_the_lookup_going() -> None:
    target = kad_id(b"target")
    contacts = by_distance(make_contacts(6, seed=3), target)
    far, closer = contacts[3:], contacts[:3]
    lookup = Lookup(target, far, k=3, alpha=1)
    (a,) = lookup.next_requests(now=0.0)
    assert a == far[0]
    lookup.on_success(a.peer_id, closer, now=0.1)
    assert not lookup.finished
    assert lookup.next_requests(now=0.1) == [closer[0]]
    assert lookup.hops_of(closer[0].peer_id) == 2


def test_timeouts_become_failures() -> None:
    target = kad_id(b"target")
    seeds = make_contacts(2, seed=4)
    lookup = Lookup(target, seeds, k=K, alpha=ALPHA, request_timeout=TIMEOUT)
    sent = lookup.next_requests(now=10.0)
    assert len(sent) == 2
    assert lookup.next_deadline() == 10.0 + TIMEOUT
    assert lookup.next_requests(now=10.0 + TIMEOUT - 0.01) == []
    assert not lookup.finished
    assert lookup.next_requests(now=10.0 + TIMEOUT) == []
    assert lookup.failures == 2 and lookup.successes == 0
    assert all(lookup.state_of(c.peer_id) is PeerState.FAILED for c in seeds)
    assert lookup.finished
    assert lookup.closest_succeeded() == []
    assert lookup.next_deadline() is None


def test_late_unknown_and_duplicate_responses_are_ignored() -> None:
    target = kad_id(b"target")
    a, b = make_contacts(2, seed=5)
    extra = make_contacts(3, seed=6)
    lookup = Lookup(target, [a, b], k=K, alpha=ALPHA)
    lookup.next_requests(now=0.0)
    lookup.on_success(a.peer_id, [extra[0]], now=0.5)
    # Duplicate response from a: ignored, extra[1] not learned.
    lookup.on_success(a.peer_id, [extra[1]], now=0.6)
    assert lookup.state_of(extra[1].peer_id) is None
    # Unknown responder.
    lookup.on_success(b"stranger", [extra[1]], now=0.7)
    assert lookup.state_of(b"stranger") is None and lookup.state_of(extra[1].peer_id) is None
    # b answers after its deadline, without next_requests in between: late.
    lookup.on_success(b.peer_id, [extra[2]], now=TIMEOUT + 0.1)
    assert lookup.state_of(b.peer_id) is PeerState.FAILED
    assert lookup.state_of(extra[2].peer_id) is None
    # A failure report for a peer that already answered changes nothing.
    lookup.on_failure(a.peer_id, now=3.0)
    assert lookup.state_of(a.peer_id) is PeerState.SUCCEEDED
    assert (lookup.successes, lookup.failures) == (1, 1)


def test_local_peer_and_duplicates_are_never_candidates() -> None:
    target = kad_id(b"target")
    local = Contact(LOCAL)
    a, b = make_contacts(2, seed=7)
    lookup = Lookup(target, [a, local, a], k=K, alpha=ALPHA, local_peer_id=LOCAL)
    assert lookup.state_of(LOCAL) is None
    assert ids(lookup.next_requests(now=0.0)) == [a.peer_id]
    lookup.on_success(a.peer_id, [local, a, b, b, b], now=0.1)
    assert lookup.state_of(LOCAL) is None
    assert lookup.next_requests(now=0.1) == [b]
    assert lookup.requests_sent == 2


def test_first_seen_addresses_are_kept_and_hops_are_minimal() -> None:
    target = kad_id(b"target")
    a, b, c = make_contacts(3, seed=8)
    lookup = Lookup(target, [a, b], k=K, alpha=ALPHA)
    lookup.next_requests(now=0.0)
    first = Contact(c.peer_id, (b"\x04\x7f\x00\x00\x01\x06\x00\x01",))
    lookup.on_success(a.peer_id, [first], now=0.1)
    assert lookup.hops_of(c.peer_id) == 2
    lookup.next_requests(now=0.1)
    lookup.on_success(c.peer_id, [Contact(b.peer_id, (b"\x04\x01\x02\x03\x04",))], now=0.2)
    # b is a seed (hop 1) and keeps it even when learned again from a hop-2 peer.
    assert lookup.hops_of(b.peer_id) == 1
    lookup.on_success(b.peer_id, [Contact(c.peer_id, (b"redirect",))], now=0.3)
    assert lookup.finished
    found = {x.peer_id: x for x in lookup.closest_succeeded()}
    assert found[c.peer_id].addrs == first.addrs
    assert found[b.peer_id].addrs == b.addrs
    assert lookup.hops_of(b"nobody") is None


def test_one_response_adds_at_most_k_closest() -> None:
    target = kad_id(b"target")
    (seed,) = make_contacts(1, seed=9)
    flood = make_contacts(500, seed=10)
    lookup = Lookup(target, [seed], k=5, alpha=ALPHA)
    lookup.next_requests(now=0.0)
    lookup.on_success(seed.peer_id, flood, now=0.1)
    learned = {c.peer_id for c in flood if lookup.state_of(c.peer_id) is not None}
    assert learned == set(ids(by_distance(flood, target)[:5]))


def test_empty_and_invalid_starts() -> None:
    target = kad_id(b"target")
    assert Lookup(target, []).finished
    assert Lookup(target, [Contact(LOCAL)], local_peer_id=LOCAL).finished
    with pytest.raises(ValueError):
        Lookup(b"not a kad id", [])
    with pytest.raises(ValueError):
        Lookup(target, [], alpha=0)


def test_finished_lookup_ignores_stragglers() -> None:
    target = kad_id(b"target")
    seeds = by_distance(make_contacts(4, seed=11), target)
    lookup = Lookup(target, seeds, k=1, alpha=4)
    # Only the frontier (k=1) is queried even with alpha to spare.
    assert lookup.next_requests(now=0.0) == [seeds[0]]
    lookup.on_success(seeds[0].peer_id, seeds[1:], now=0.1)
    assert lookup.finished
    lookup.on_success(seeds[0].peer_id, make_contacts(3, seed=12), now=0.2)
    assert lookup.successes == 1
    assert lookup.next_deadline() is None


# -- simulated networks ------------------------------------------------------------


@dataclass
class Network:
    """N simulated nodes; ``answer`` is what a node returns to FIND_NODE(target)."""

    contacts: list[Contact]
    tables: dict[bytes, RoutingTable] | None = None
    dead: set[bytes] = field(default_factory=set)
    # peer_id -> function(target, honest answer) -> what it actually returns
    liars: dict[bytes, Callable[[bytes, list[Contact]], list[Contact]]] = field(
        default_factory=dict
    )
    late: set[bytes] = field(default_factory=set)
    # Refuse the connection at once: the driver reports on_failure.
    refusing: set[bytes] = field(default_factory=set)
    queried: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ints = [(int.from_bytes(c.kad_id, "big"), c) for c in self.contacts]

    def true_closest(self, target: bytes, k: int) -> list[Contact]:
        t = int.from_bytes(target, "big")
        return [c for _, c in heapq.nsmallest(k, self._ints, key=lambda x: x[0] ^ t)]

    def answer(self, peer_id: bytes, target: bytes, k: int) -> list[Contact]:
        if self.tables is not None:
            honest = self.tables[peer_id].closest(target, k)
        else:
            honest = [c for c in self.true_closest(target, k + 1) if c.peer_id != peer_id][:k]
        liar = self.liars.get(peer_id)
        return honest if liar is None else liar(target, honest)


def full_knowledge(n: int, seed: int) -> Network:
    return Network(make_contacts(n, seed))


def with_routing_tables(n: int, seed: int, k: int = K) -> Network:
    """Each node's table as if it had met every other node in random order.

    Meeting everyone in random order leaves a random k of each bucket (the
    rest get PENDING_EVICTION and are dropped while everyone answers pings),
    so only those are inserted. Bucket b of a node is a contiguous range of
    the sorted ids, which keeps building 1000 tables fast.
    """
    rng = random.Random(seed)
    contacts = sorted(make_contacts(n, seed), key=lambda c: c.kad_id)
    keys = [int.from_bytes(c.kad_id, "big") for c in contacts]
    tables: dict[bytes, RoutingTable] = {}
    for me, mine in zip(contacts, keys, strict=True):
        table = RoutingTable(me.peer_id, k=k)
        for index in range(KEY_BITS):
            shift = KEY_BITS - 1 - index
            # Same first `index` bits as ours, the next one flipped.
            low = ((mine >> shift) ^ 1) << shift
            lo, hi = bisect.bisect_left(keys, low), bisect.bisect_left(keys, low + (1 << shift))
            for i in rng.sample(range(lo, hi), min(k, hi - lo)):
                table.update(contacts[i], now=0.0)
            # Stop once nobody else shares our first index+1 bits.
            same = (mine >> shift) << shift
            if bisect.bisect_left(keys, same + (1 << shift)) - bisect.bisect_left(keys, same) == 1:
                break
        tables[me.peer_id] = table
    return Network(contacts, tables)


@dataclass
class RunStats:
    max_in_flight: int = 0
    elapsed: float = 0.0
    late_responses: int = 0


def drive(
    lookup: Lookup, net: Network, rng: random.Random, *, k: int = K, alpha: int = ALPHA
) -> RunStats:
    stats = RunStats()
    now = 0.0
    events: list[tuple[float, int, bytes]] = []
    seq = 0
    while not lookup.finished:
        for contact in lookup.next_requests(now):
            net.queried.append(contact.peer_id)
            if contact.peer_id in net.dead:
                continue
            delay = rng.uniform(0.01, 0.3)
            if contact.peer_id in net.refusing:
                delay = 0.001
            if contact.peer_id in net.late:
                delay = TIMEOUT + 0.5
            heapq.heappush(events, (now + delay, seq, contact.peer_id))
            seq += 1
        stats.max_in_flight = max(stats.max_in_flight, lookup.num_in_flight)
        assert lookup.num_in_flight <= alpha
        if lookup.finished:  # expiring the last request can finish it
            break
        next_event = events[0][0] if events else None
        wakeups = [t for t in (next_event, lookup.next_deadline()) if t is not None]
        assert wakeups, "not finished, yet nothing to wait for"
        now = min(wakeups)
        while events and events[0][0] <= now:
            _, _, peer_id = heapq.heappop(events)
            if lookup.state_of(peer_id) is PeerState.FAILED:
                stats.late_responses += 1
            if peer_id in net.refusing:
                lookup.on_failure(peer_id, now)
            else:
                lookup.on_success(peer_id, net.answer(peer_id, lookup.target, k), now)
    stats.elapsed = now
    return stats


def seeds_for(net: Network, target: bytes, rng: random.Random, known: int = 50) -> list[Contact]:
    """What a fresh local node would seed with: the k closest among the few it knows."""
    table = RoutingTable(LOCAL)
    for contact in rng.sample(net.contacts, known):
        table.update(contact, now=0.0)
    return table.closest(target, K)


def assert_live_closest_found(lookup: Lookup, net: Network, target: bytes) -> None:
    """Every live peer among the true k closest is found, and only live peers are.

    The k closest *live* peers overall are not guaranteed: responders still
    list the dead ones, so live peers just beyond the true k closest may
    never be mentioned. That is the network's knowledge, not the lookup's.
    """
    found = ids(lookup.closest_succeeded())
    unreachable = net.dead | net.late | net.refusing
    live_closest = [c.peer_id for c in net.true_closest(target, K) if c.peer_id not in unreachable]
    assert len(found) == K
    assert set(live_closest) <= set(found)
    assert not set(found) & unreachable


@pytest.mark.parametrize("n", [200, 1000])
def test_full_knowledge_network_finds_the_true_k_closest(n: int) -> None:
    net = full_knowledge(n, seed=n)
    rng = random.Random(n + 1)
    for _ in range(5):
        target = kad_id(rng.randbytes(16))
        lookup = Lookup(target, seeds_for(net, target, rng), local_peer_id=LOCAL)
        stats = drive(lookup, net, rng)
        assert ids(lookup.closest_succeeded()) == ids(net.true_closest(target, K))
        assert stats.max_in_flight == ALPHA
        assert lookup.failures == 0
        assert max(lookup.hops_of(c.peer_id) or 0 for c in lookup.closest_succeeded()) <= 3


@pytest.mark.parametrize("n", [200, 1000])
def test_routing_table_network_finds_the_true_k_closest(n: int) -> None:
    net = with_routing_tables(n, seed=n + 2)
    rng = random.Random(n + 3)
    hops: list[int] = []
    for _ in range(5):
        target = kad_id(rng.randbytes(16))
        lookup = Lookup(target, seeds_for(net, target, rng), local_peer_id=LOCAL)
        stats = drive(lookup, net, rng)
        assert ids(lookup.closest_succeeded()) == ids(net.true_closest(target, K))
        assert stats.max_in_flight <= ALPHA
        # Only a small part of the network is ever asked.
        assert lookup.requests_sent < 4 * K
        hops.extend(lookup.hops_of(c.peer_id) or 0 for c in lookup.closest_succeeded())
    assert max(hops) <= math.ceil(math.log2(n) / 2)


@pytest.mark.parametrize("n", [200, 1000])
def test_hops_stay_logarithmic_from_a_far_seed(n: int) -> None:
    # Small buckets make routing take several hops, as in a large network.
    k, alpha = 4, 2
    net = with_routing_tables(n, seed=n + 4, k=k)
    rng = random.Random(n + 5)
    worst = 0
    for _ in range(10):
        target = kad_id(rng.randbytes(16))
        farthest = by_distance(net.contacts, target)[-1]
        lookup = Lookup(target, [farthest], k=k, alpha=alpha, local_peer_id=LOCAL)
        stats = drive(lookup, net, rng, k=k, alpha=alpha)
        assert stats.max_in_flight <= alpha
        assert ids(lookup.closest_succeeded()) == ids(net.true_closest(target, k))
        worst = max(worst, *(lookup.hops_of(c.peer_id) or 0 for c in lookup.closest_succeeded()))
    assert 2 < worst <= math.ceil(math.log2(n))


def test_dead_and_refusing_peers_fail_and_the_lookup_still_finishes() -> None:
    net = full_knowledge(500, seed=20)
    rng = random.Random(21)
    unreachable = rng.sample(net.contacts, 100)
    net.dead = {c.peer_id for c in unreachable[:50]}
    net.refusing = {c.peer_id for c in unreachable[50:]}
    for _ in range(3):
        target = kad_id(rng.randbytes(16))
        net.queried.clear()
        lookup = Lookup(target, seeds_for(net, target, rng), local_peer_id=LOCAL)
        stats = drive(lookup, net, rng)
        assert_live_closest_found(lookup, net, target)
        dead_queried = [p for p in net.queried if p in net.dead]
        refused = [p for p in net.queried if p in net.refusing]
        assert dead_queried and refused, "the scenario should exercise both kinds of failure"
        assert lookup.failures == len(dead_queried) + len(refused)
        assert all(lookup.state_of(p) is PeerState.FAILED for p in dead_queried + refused)
        assert stats.elapsed >= TIMEOUT


def test_late_responses_are_ignored_in_a_running_lookup() -> None:
    net = full_knowledge(300, seed=30)
    rng = random.Random(31)
    target = kad_id(b"late")
    # The five closest to the target answer, but only after their deadline.
    net.late = {c.peer_id for c in net.true_closest(target, 5)}
    lookup = Lookup(target, seeds_for(net, target, rng), local_peer_id=LOCAL)
    stats = drive(lookup, net, rng)
    assert stats.late_responses > 0
    assert all(lookup.state_of(p) is PeerState.FAILED for p in net.late)
    assert_live_closest_found(lookup, net, target)


def test_misbehaving_peers_do_not_break_the_lookup() -> None:
    net = full_knowledge(400, seed=40)
    rng = random.Random(41)
    strangers = make_contacts(30, seed=42)  # not in the network: never answer

    def junk(target: bytes, honest: list[Contact]) -> list[Contact]:
        return [*strangers[:3], *honest[:2], *honest[:2]]

    def echo_self(me: Contact) -> Callable[[bytes, list[Contact]], list[Contact]]:
        return lambda target, honest: [me, me, Contact(LOCAL), *honest[:1]]

    def flood(target: bytes, honest: list[Contact]) -> list[Contact]:
        return strangers * 5 + honest

    liars = rng.sample(net.contacts, 60)
    for i, liar in enumerate(liars):
        net.liars[liar.peer_id] = (junk, echo_self(liar), flood)[i % 3]
    net.dead = {c.peer_id for c in strangers}
    for _ in range(4):
        target = kad_id(rng.randbytes(16))
        lookup = Lookup(target, seeds_for(net, target, rng), local_peer_id=LOCAL)
        drive(lookup, net, rng)
        assert lookup.finished
        assert lookup.state_of(LOCAL) is None
        found = ids(lookup.closest_succeeded())
        assert len(found) == len(set(found)) == K
        assert not set(found) & {c.peer_id for c in strangers}
        # Liars still answer with the truth about the closest few, so the
        # honest majority gets us the true answer.
        assert found == ids(net.true_closest(target, K))
