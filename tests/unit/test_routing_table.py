import random

import multiaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from protocols.kad.keyspace import KEY_BITS, common_prefix_len, distance, kad_id
from protocols.kad.routing_table import Contact, RoutingTable, UpdateOutcome
from protocols.kad.subnet import public_subnet

LOCAL = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))


def ma(text: str) -> bytes:
    return bytes(multiaddr.Multiaddr(text).to_bytes())


def peers_in_bucket(local: bytes, index: int, count: int, seed: int = 0) -> list[bytes]:
    """Random peer ids whose kad id falls in bucket ``index`` of ``local``."""
    rng = random.Random(seed)
    local_kad = kad_id(local)
    found: list[bytes] = []
    while len(found) < count:
        peer_id = rng.randbytes(34)
        if common_prefix_len(local_kad, kad_id(peer_id)) == index:
            found.append(peer_id)
    return found


def check_invariants(table: RoutingTable) -> None:
    contacts = table.contacts()
    sizes = table.bucket_sizes()
    assert len(table) == len(contacts) == sum(sizes.values())
    assert len({c.peer_id for c in contacts}) == len(contacts)
    assert table.local_peer_id not in table
    table_subnets: dict[str, int] = {}
    for index, size in sizes.items():
        assert 0 < size <= table.k
        bucket = table.bucket(index)
        assert len(bucket) == size
        bucket_subnets: dict[str, int] = {}
        seen = [table.last_seen(c.peer_id) or 0.0 for c in bucket]
        assert seen == sorted(seen), "least recently seen first"
        for contact in bucket:
            assert contact.peer_id in table
            assert table.get(contact.peer_id) is contact
            assert common_prefix_len(table.local_kad_id, contact.kad_id) == index
            subnet = public_subnet(contact.addrs)
            if subnet is not None:
                bucket_subnets[subnet] = bucket_subnets.get(subnet, 0) + 1
                table_subnets[subnet] = table_subnets.get(subnet, 0) + 1
        assert all(n <= table.max_per_subnet_in_bucket for n in bucket_subnets.values())
    assert all(n <= table.max_per_subnet_in_table for n in table_subnets.values())


def snapshot(table: RoutingTable) -> list[tuple[bytes, tuple[bytes, ...], float | None]]:
    return [
        (c.peer_id, c.addrs, table.last_seen(c.peer_id))
        for index in sorted(table.bucket_sizes())
        for c in table.bucket(index)
    ]


# -- subnet keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("addrs", "expected"),
    [
        (["/ip4/203.0.113.5/tcp/4001"], "ip4:203.0.113.0/24"),
        (["/ip4/127.0.0.1/tcp/1", "/ip4/8.8.4.4/udp/1/quic-v1"], "ip4:8.8.4.0/24"),
        (["/ip6/2001:db8:1::5/tcp/4001"], "ip6:2001:db8:1::/48"),
        (["/ip6/::ffff:198.51.100.9/tcp/1"], "ip4:198.51.100.0/24"),
        (["/ip6zone/eth0/ip6/2600::1/tcp/1"], "ip6:2600::/48"),
        (["/ip4/127.0.0.1/tcp/1"], None),
        (["/ip4/10.1.2.3/tcp/1", "/ip4/192.168.0.7/tcp/1", "/ip4/172.20.0.1/tcp/1"], None),
        (["/ip4/169.254.3.3/tcp/1", "/ip4/0.0.0.0/tcp/1", "/ip4/100.64.1.1/tcp/1"], None),
        (["/ip6/::1/tcp/1", "/ip6/::/tcp/1", "/ip6/fe80::1/tcp/1", "/ip6/fd00::1/tcp/1"], None),
        (["/ip6zone/eth0/ip6/fe80::1/tcp/1"], None),
        (["/dns4/example.com/tcp/1"], None),
        (
            ["/ip4/1.2.3.4/tcp/1/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N/p2p-circuit"],
            None,
        ),
        ([], None),
    ],
)
def test_public_subnet(addrs: list[str], expected: str | None) -> None:
    assert public_subnet([ma(a) for a in addrs]) == expected


def test_public_subnet_skips_garbage() -> None:
    garbage = [b"", b"\xff\xff", b"\x04\x01", b"/ip4/1.2.3.4", b"\x04\xcb\x00q\x05\x06"]
    assert public_subnet(garbage) is None
    assert public_subnet([*garbage, ma("/ip4/203.0.113.9/tcp/1")]) == "ip4:203.0.113.0/24"


@given(st.lists(st.binary(max_size=40), max_size=5))
def test_public_subnet_never_raises(addrs: list[bytes]) -> None:
    result = public_subnet(addrs)
    assert result is None or result.startswith(("ip4:", "ip6:"))


# -- basic behaviour -----------------------------------------------------------


def test_self_is_rejected_and_never_stored() -> None:
    table = RoutingTable(LOCAL)
    result = table.update(Contact(LOCAL, (ma("/ip4/127.0.0.1/tcp/1"),)), now=1.0)
    assert result.outcome is UpdateOutcome.REJECTED_SELF
    assert len(table) == 0
    assert LOCAL not in table
    assert not table.evict_and_insert(b"anything", Contact(LOCAL), now=2.0)
    with pytest.raises(ValueError):
        table.bucket_index(table.local_kad_id)


def test_contact_identity_is_the_peer_id() -> None:
    a = Contact(b"peer", (ma("/ip4/127.0.0.1/tcp/1"),))
    b = Contact(b"peer", ())
    assert a == b and hash(a) == hash(b)
    assert a.kad_id == kad_id(b"peer")


def test_add_then_refresh_moves_to_tail_and_replaces_addrs() -> None:
    table = RoutingTable(LOCAL, k=5)
    a, b, c = peers_in_bucket(LOCAL, 0, 3)
    for t, pid in enumerate((a, b, c)):
        res = table.update(Contact(pid, (ma(f"/ip4/127.0.0.1/tcp/{t + 1}"),)), now=float(t))
        assert res.outcome is UpdateOutcome.ADDED
    assert [x.peer_id for x in table.bucket(0)] == [a, b, c]

    new_addr = ma("/ip4/127.0.0.1/tcp/99")
    assert table.update(Contact(a, (new_addr,)), now=10.0).outcome is UpdateOutcome.REFRESHED
    assert [x.peer_id for x in table.bucket(0)] == [b, c, a]
    contact_a = table.get(a)
    assert contact_a is not None and contact_a.addrs == (new_addr,)
    assert table.last_seen(a) == 10.0

    # An update without addresses keeps the ones we had.
    assert table.update(Contact(b, ()), now=11.0).outcome is UpdateOutcome.REFRESHED
    contact_b = table.get(b)
    assert contact_b is not None and contact_b.addrs == (ma("/ip4/127.0.0.1/tcp/2"),)
    assert [x.peer_id for x in table.bucket(0)] == [c, a, b]
    check_invariants(table)


def test_remove() -> None:
    table = RoutingTable(LOCAL)
    (a,) = peers_in_bucket(LOCAL, 1, 1)
    table.update(Contact(a), now=0.0)
    assert table.remove(a)
    assert not table.remove(a)
    assert a not in table and table.get(a) is None and table.last_seen(a) is None
    assert table.bucket_sizes() == {}


def test_bucket_index_bounds() -> None:
    table = RoutingTable(LOCAL)
    with pytest.raises(IndexError):
        table.bucket(KEY_BITS)
    with pytest.raises(IndexError):
        table.mark_bucket_refreshed(-1, 0.0)


# -- eviction ------------------------------------------------------------------


def full_bucket(k: int = 4) -> tuple[RoutingTable, list[bytes], list[bytes]]:
    table = RoutingTable(LOCAL, k=k)
    peers = peers_in_bucket(LOCAL, 2, k + 3, seed=5)
    members, newcomers = peers[:k], peers[k:]
    for t, pid in enumerate(members):
        assert table.update(Contact(pid), now=float(t)).outcome is UpdateOutcome.ADDED
    return table, members, newcomers


def test_full_bucket_names_the_least_recently_seen() -> None:
    table, members, newcomers = full_bucket()
    result = table.update(Contact(newcomers[0]), now=10.0)
    assert result.outcome is UpdateOutcome.PENDING_EVICTION
    assert result.eviction_candidate is not None
    assert result.eviction_candidate.peer_id == members[0]
    assert newcomers[0] not in table
    assert [c.peer_id for c in table.bucket(2)] == members

    # Refreshing the head changes who is oldest.
    table.update(Contact(members[0]), now=11.0)
    result = table.update(Contact(newcomers[0]), now=12.0)
    assert result.eviction_candidate is not None
    assert result.eviction_candidate.peer_id == members[1]


def test_evict_and_insert_replaces_only_the_head() -> None:
    table, members, newcomers = full_bucket()
    before = snapshot(table)
    # Not the head: refused, nothing changes.
    assert not table.evict_and_insert(members[1], Contact(newcomers[0]), now=20.0)
    assert snapshot(table) == before
    assert table.evict_and_insert(members[0], Contact(newcomers[0]), now=20.0)
    assert [c.peer_id for c in table.bucket(2)] == [*members[1:], newcomers[0]]
    # The old head is gone for good; repeating the call is refused.
    assert not table.evict_and_insert(members[0], Contact(newcomers[1]), now=21.0)
    # A newcomer already in the table is refused too.
    assert not table.evict_and_insert(members[1], Contact(newcomers[0]), now=21.0)
    check_invariants(table)


def test_keep_moves_the_candidate_to_the_tail() -> None:
    table, members, newcomers = full_bucket()
    result = table.update(Contact(newcomers[0]), now=10.0)
    assert result.eviction_candidate is not None
    table.keep(result.eviction_candidate.peer_id, now=11.0)
    assert [c.peer_id for c in table.bucket(2)] == [*members[1:], members[0]]
    assert table.last_seen(members[0]) == 11.0
    # The candidate answered; evicting it now is refused.
    assert not table.evict_and_insert(members[0], Contact(newcomers[0]), now=12.0)
    assert newcomers[0] not in table
    table.keep(b"unknown", now=13.0)
    check_invariants(table)


def test_evict_when_candidate_left_meanwhile() -> None:
    table, members, newcomers = full_bucket()
    table.remove(members[0])
    # The service should just update again; the bucket has room.
    assert not table.evict_and_insert(members[0], Contact(newcomers[0]), now=20.0)
    assert table.update(Contact(newcomers[0]), now=21.0).outcome is UpdateOutcome.ADDED


# -- subnet caps ---------------------------------------------------------------


def test_bucket_subnet_cap_for_public_addresses() -> None:
    table = RoutingTable(LOCAL, k=10, max_per_subnet_in_bucket=2, max_per_subnet_in_table=10)
    peers = peers_in_bucket(LOCAL, 0, 4, seed=1)
    outcomes = [
        table.update(Contact(pid, (ma(f"/ip4/203.0.113.{i + 1}/tcp/4001"),)), now=float(i)).outcome
        for i, pid in enumerate(peers[:3])
    ]
    assert outcomes == [UpdateOutcome.ADDED, UpdateOutcome.ADDED, UpdateOutcome.REJECTED_SUBNET]
    # Another /24 is fine.
    other = Contact(peers[3], (ma("/ip4/198.51.100.1/tcp/4001"),))
    assert table.update(other, now=5.0).outcome is UpdateOutcome.ADDED
    check_invariants(table)


def test_table_subnet_cap_spans_buckets() -> None:
    table = RoutingTable(LOCAL, k=10, max_per_subnet_in_bucket=2, max_per_subnet_in_table=3)
    peers = peers_in_bucket(LOCAL, 0, 2, seed=2) + peers_in_bucket(LOCAL, 1, 2, seed=3)
    addr = (ma("/ip6/2001:db8:1::1/tcp/4001"),)
    outcomes = [table.update(Contact(pid, addr), now=1.0).outcome for pid in peers]
    assert outcomes[:3] == [UpdateOutcome.ADDED] * 3
    assert outcomes[3] is UpdateOutcome.REJECTED_SUBNET
    check_invariants(table)


@pytest.mark.parametrize(
    "addr",
    [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/10.0.0.1/tcp/4001",
        "/ip4/192.168.1.1/tcp/1",
        "/ip6/::1/tcp/1",
    ],
)
def test_non_public_addresses_are_exempt(addr: str) -> None:
    table = RoutingTable(LOCAL, k=8, max_per_subnet_in_bucket=1, max_per_subnet_in_table=1)
    peers = peers_in_bucket(LOCAL, 0, 8, seed=4)
    for pid in peers:
        assert table.update(Contact(pid, (ma(addr),)), now=1.0).outcome is UpdateOutcome.ADDED
    assert len(table) == 8


def test_refresh_is_not_blocked_by_its_own_subnet() -> None:
    table = RoutingTable(LOCAL, k=10, max_per_subnet_in_bucket=2, max_per_subnet_in_table=2)
    a, b = peers_in_bucket(LOCAL, 0, 2, seed=6)
    table.update(Contact(a, (ma("/ip4/203.0.113.1/tcp/1"),)), now=1.0)
    table.update(Contact(b, (ma("/ip4/203.0.113.2/tcp/1"),)), now=2.0)
    # Same /24, new address: its own entry does not count against it.
    moved = (ma("/ip4/203.0.113.77/tcp/1"),)
    assert table.update(Contact(a, moved), now=3.0).outcome is UpdateOutcome.REFRESHED
    contact_a = table.get(a)
    assert contact_a is not None and contact_a.addrs == moved
    check_invariants(table)


def test_moving_into_a_full_subnet_is_rejected_and_keeps_the_old_entry() -> None:
    table = RoutingTable(LOCAL, k=10, max_per_subnet_in_bucket=2, max_per_subnet_in_table=10)
    a, b, c = peers_in_bucket(LOCAL, 0, 3, seed=7)
    table.update(Contact(a, (ma("/ip4/203.0.113.1/tcp/1"),)), now=1.0)
    table.update(Contact(b, (ma("/ip4/203.0.113.2/tcp/1"),)), now=2.0)
    old = (ma("/ip4/198.51.100.3/tcp/1"),)
    table.update(Contact(c, old), now=3.0)
    before = snapshot(table)
    result = table.update(Contact(c, (ma("/ip4/203.0.113.3/tcp/1"),)), now=4.0)
    assert result.outcome is UpdateOutcome.REJECTED_SUBNET
    assert snapshot(table) == before
    # Moving to a private address is always allowed.
    private = (ma("/ip4/192.168.0.3/tcp/1"),)
    assert table.update(Contact(c, private), now=5.0).outcome is UpdateOutcome.REFRESHED
    check_invariants(table)


def test_evict_and_insert_counts_the_leaving_subnet() -> None:
    table = RoutingTable(LOCAL, k=2, max_per_subnet_in_bucket=1, max_per_subnet_in_table=10)
    a, b, c, d = peers_in_bucket(LOCAL, 0, 4, seed=8)
    table.update(Contact(a, (ma("/ip4/203.0.113.1/tcp/1"),)), now=1.0)
    table.update(Contact(b, (ma("/ip4/198.51.100.1/tcp/1"),)), now=2.0)
    # Replacing a with a peer from a's own subnet fits once a is gone.
    assert table.evict_and_insert(a, Contact(c, (ma("/ip4/203.0.113.9/tcp/1"),)), now=3.0)
    # Replacing b with a peer from c's (full) subnet does not.
    before = snapshot(table)
    assert not table.evict_and_insert(b, Contact(d, (ma("/ip4/203.0.113.8/tcp/1"),)), now=4.0)
    assert snapshot(table) == before
    check_invariants(table)


# -- closest -------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=30),
)
def test_closest_matches_brute_force(seed: int, n: int, count: int) -> None:
    rng = random.Random(seed)
    table = RoutingTable(LOCAL, k=6)
    for t in range(n):
        table.update(Contact(rng.randbytes(34)), now=float(t))
    check_invariants(table)
    target = rng.randbytes(32)
    everyone = table.contacts()
    exclude = {c.peer_id for c in rng.sample(everyone, min(3, len(everyone)))}
    found = table.closest(target, count, exclude=exclude)
    expected = sorted(
        (c for c in everyone if c.peer_id not in exclude), key=lambda c: distance(c.kad_id, target)
    )[:count]
    assert [c.peer_id for c in found] == [c.peer_id for c in expected]
    dists = [distance(c.kad_id, target) for c in found]
    assert dists == sorted(dists) and len(set(dists)) == len(dists)


def test_closest_never_includes_ourselves() -> None:
    table = RoutingTable(LOCAL)
    table.update(Contact(LOCAL), now=0.0)
    (a,) = peers_in_bucket(LOCAL, 0, 1)
    table.update(Contact(a), now=0.0)
    assert [c.peer_id for c in table.closest(table.local_kad_id, 5)] == [a]
    assert table.closest(table.local_kad_id, 0) == []


# -- bucket refresh ------------------------------------------------------------


def test_stale_buckets() -> None:
    table = RoutingTable(LOCAL)
    assert table.stale_buckets(now=0.0, max_age=10.0) == []
    (a,) = peers_in_bucket(LOCAL, 3, 1)
    table.update(Contact(a), now=0.0)
    # Buckets 0..2 are below the highest non-empty one and never refreshed.
    assert table.stale_buckets(now=5.0, max_age=10.0) == [0, 1, 2]
    for index in (0, 1, 2):
        table.mark_bucket_refreshed(index, now=5.0)
    assert table.stale_buckets(now=9.0, max_age=10.0) == []
    assert table.stale_buckets(now=10.0, max_age=10.0) == [3]
    assert table.stale_buckets(now=15.0, max_age=10.0) == [0, 1, 2, 3]
    # keep() and a refreshing update count as activity in the bucket.
    table.keep(a, now=16.0)
    assert table.stale_buckets(now=20.0, max_age=10.0) == [0, 1, 2]
    table.update(Contact(a), now=30.0)
    assert 3 not in table.stale_buckets(now=35.0, max_age=10.0)


# -- stateful model check ------------------------------------------------------

ADDR_CHOICES: list[tuple[bytes, ...]] = [
    (),
    (ma("/ip4/127.0.0.1/tcp/1"),),
    (ma("/ip4/10.0.0.1/tcp/1"),),
    (ma("/ip4/203.0.113.1/tcp/1"),),
    (ma("/ip4/203.0.113.2/tcp/1"),),
    (ma("/ip4/198.51.100.1/tcp/1"),),
    (ma("/ip6/2001:db8:1::1/tcp/1"),),
    (b"\xff\xff", ma("/ip4/198.51.100.7/tcp/1")),
]
_POOL_RNG = random.Random(11)
POOL = [LOCAL, *(_POOL_RNG.randbytes(34) for _ in range(40))]


class RoutingTableMachine(RuleBasedStateMachine):
    pending = Bundle("pending")

    @initialize(
        k=st.integers(min_value=1, max_value=4),
        in_bucket=st.integers(min_value=1, max_value=3),
        in_table=st.integers(min_value=1, max_value=5),
    )
    def setup(self, k: int, in_bucket: int, in_table: int) -> None:
        self.table = RoutingTable(
            LOCAL, k=k, max_per_subnet_in_bucket=in_bucket, max_per_subnet_in_table=in_table
        )
        self.now = 0.0

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(target=pending, peer=st.sampled_from(POOL), addrs=st.sampled_from(ADDR_CHOICES))
    def update(self, peer: bytes, addrs: tuple[bytes, ...]) -> object:
        table = self.table
        before = snapshot(table)
        known = table.get(peer)
        contact = Contact(peer, addrs)
        now = self.tick()
        result = table.update(contact, now)
        outcome = result.outcome
        assert (result.eviction_candidate is not None) == (
            outcome is UpdateOutcome.PENDING_EVICTION
        )
        if peer == LOCAL:
            assert outcome is UpdateOutcome.REJECTED_SELF
            return multiple()
        index = table.bucket_index(contact.kad_id)
        if outcome in (UpdateOutcome.ADDED, UpdateOutcome.REFRESHED):
            assert (outcome is UpdateOutcome.REFRESHED) == (known is not None)
            assert table.bucket(index)[-1].peer_id == peer
            stored = table.get(peer)
            assert stored is not None
            expected_addrs = addrs if addrs or known is None else known.addrs
            assert stored.addrs == expected_addrs
            assert table.last_seen(peer) == now
        else:
            assert snapshot(table) == before
        if outcome is UpdateOutcome.PENDING_EVICTION:
            assert known is None
            bucket = table.bucket(index)
            assert len(bucket) == table.k
            assert result.eviction_candidate == bucket[0]
            return (result.eviction_candidate, contact)
        if outcome is UpdateOutcome.REJECTED_SUBNET:
            subnet = public_subnet(addrs)
            assert subnet is not None
            assert known is None or public_subnet(known.addrs) != subnet
        return multiple()

    @rule(pair=pending, answered=st.booleans())
    def resolve_eviction(self, pair: tuple[Contact, Contact], answered: bool) -> None:
        candidate, newcomer = pair
        table = self.table
        index = table.bucket_index(newcomer.kad_id)
        bucket_before = [c.peer_id for c in table.bucket(index)]
        before = snapshot(table)
        now = self.tick()
        if answered:
            table.keep(candidate.peer_id, now)
            if candidate.peer_id in bucket_before:
                rest = [p for p in bucket_before if p != candidate.peer_id]
                assert [c.peer_id for c in table.bucket(index)] == [*rest, candidate.peer_id]
            else:
                assert snapshot(table) == before
            return
        is_head = bool(bucket_before) and bucket_before[0] == candidate.peer_id
        ok = table.evict_and_insert(candidate.peer_id, newcomer, now)
        if ok:
            assert is_head and newcomer.peer_id not in bucket_before
            assert [c.peer_id for c in table.bucket(index)] == [
                *bucket_before[1:],
                newcomer.peer_id,
            ]
        else:
            assert snapshot(table) == before

    @rule(stale=st.sampled_from(POOL), peer=st.sampled_from(POOL))
    def arbitrary_eviction(self, stale: bytes, peer: bytes) -> None:
        table = self.table
        before = snapshot(table)
        if peer == LOCAL:
            assert not table.evict_and_insert(stale, Contact(peer), self.tick())
            assert snapshot(table) == before
            return
        index = table.bucket_index(kad_id(peer))
        head = table.bucket(index)[:1]
        if table.evict_and_insert(stale, Contact(peer), self.tick()):
            assert head and head[0].peer_id == stale and stale not in table
        else:
            assert snapshot(table) == before

    @rule(peer=st.sampled_from(POOL))
    def remove(self, peer: bytes) -> None:
        was_in = peer in self.table
        assert self.table.remove(peer) == was_in
        assert peer not in self.table

    @rule(key=st.sampled_from(POOL), count=st.integers(min_value=0, max_value=12))
    def closest(self, key: bytes, count: int) -> None:
        tkad = kad_id(key)
        found = self.table.closest(tkad, count)
        expected = sorted(self.table.contacts(), key=lambda c: distance(c.kad_id, tkad))[:count]
        assert [c.peer_id for c in found] == [c.peer_id for c in expected]

    @invariant()
    def table_is_consistent(self) -> None:
        if hasattr(self, "table"):
            check_invariants(self.table)
            for index in self.table.stale_buckets(self.now, max_age=5.0):
                assert 0 <= index <= max(self.table.bucket_sizes())


RoutingTableMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoutingTableMachine = RoutingTableMachine.TestCase
