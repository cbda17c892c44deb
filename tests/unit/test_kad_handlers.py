"""KadHandlers against small fakes of the routing table, record holder and provider holder.

No streams here: the handlers take typed requests and return typed responses.
Every rejected request must leave the fakes exactly as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import multiaddr
import pytest

from protocols.errors import RemoteProtocolError
from protocols.kad.handlers import KadHandlers
from protocols.kad.keyspace import distance, kad_id
from protocols.kad.messages import KadMessage, MessageType, PeerInfo, Record


def peer_id(n: int) -> bytes:
    return b"\x12\x20" + hashlib.sha256(b"peer %d" % n).digest()


def addr(port: int) -> bytes:
    return bytes(multiaddr.Multiaddr(f"/ip4/10.0.0.1/tcp/{port}").to_bytes())


PEERS = tuple(PeerInfo(peer_id(n), (addr(4000 + n),)) for n in range(40))
REQUESTER = PEERS[7]
OTHER = PEERS[8]
KEY = b"/zhtp/manifest/abc"


class FakeRouting:
    def __init__(self, peers: Sequence[PeerInfo] = PEERS) -> None:
        self.peers = list(peers)
        self.calls: list[tuple[bytes, int, frozenset[bytes]]] = []

    def closest_peers(
        self, target_kad_id: bytes, count: int, exclude: Collection[bytes]
    ) -> Sequence[PeerInfo]:
        self.calls.append((target_kad_id, count, frozenset(exclude)))
        ranked = sorted(
            (p for p in self.peers if p.peer_id not in exclude),
            key=lambda p: distance(kad_id(p.peer_id), target_kad_id),
        )
        return ranked[:count]


class FakeRecords:
    def __init__(self, refuse: str | None = None) -> None:
        self.values: dict[bytes, bytes] = {}
        self.puts: list[tuple[bytes, bytes, bytes]] = []
        self.refuse = refuse

    def get_record(self, key: bytes) -> bytes | None:
        return self.values.get(key)

    def put_record(self, key: bytes, value: bytes, from_peer: bytes) -> None:
        if self.refuse is not None:
            raise RemoteProtocolError(self.refuse, "fake holder refused")
        self.values[key] = value
        self.puts.append((key, value, from_peer))


class FakeProviders:
    def __init__(self) -> None:
        self.entries: dict[bytes, list[PeerInfo]] = {}

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        self.entries.setdefault(key, []).append(provider)

    def get_providers(self, key: bytes) -> Sequence[PeerInfo]:
        return list(self.entries.get(key, []))


class Setup:
    def __init__(self, *, k: int = 20, refuse: str | None = None) -> None:
        self.routing = FakeRouting()
        self.records = FakeRecords(refuse)
        self.providers = FakeProviders()
        self.requests: list[bytes] = []
        self.handlers = KadHandlers(
            self.routing, self.records, self.providers, k=k, on_request=self.requests.append
        )

    def expected_closer(self, key: bytes, k: int = 20) -> tuple[PeerInfo, ...]:
        target = kad_id(key)
        others = [p for p in PEERS if p.peer_id != REQUESTER.peer_id]
        return tuple(sorted(others, key=lambda p: distance(kad_id(p.peer_id), target))[:k])


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def rejected(setup: Setup, request: KadMessage, peer: bytes = REQUESTER.peer_id) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        await setup.handlers.handle(peer, request)
    return info.value.reason


# -- FIND_NODE -----------------------------------------------------------------


async def test_find_node_returns_closest_excluding_requester(setup: Setup) -> None:
    # Asking for one's own id: the requester is the closest peer we know, and
    # must not be told about itself.
    key = REQUESTER.peer_id
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.FIND_NODE, key))
    assert reply == KadMessage(
        MessageType.FIND_NODE, key=key, closer_peers=setup.expected_closer(key)
    )
    assert REQUESTER not in reply.closer_peers
    assert len(reply.closer_peers) == 20
    assert setup.routing.calls == [(kad_id(key), 20, frozenset({REQUESTER.peer_id}))]


async def test_find_node_uses_configured_k() -> None:
    setup = Setup(k=3)
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.FIND_NODE, KEY))
    assert reply is not None
    assert reply.closer_peers == setup.expected_closer(KEY, 3)


async def test_find_node_with_empty_table() -> None:
    setup = Setup()
    setup.routing.peers = []
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.FIND_NODE, KEY))
    assert reply == KadMessage(MessageType.FIND_NODE, key=KEY)


@pytest.mark.parametrize(
    "kind", [MessageType.FIND_NODE, MessageType.GET_VALUE, MessageType.GET_PROVIDERS]
)
async def test_lookups_need_a_key(setup: Setup, kind: MessageType) -> None:
    assert await rejected(setup, KadMessage(kind)) == "missing_key"


# -- GET_VALUE -----------------------------------------------------------------


async def test_get_value_with_record(setup: Setup) -> None:
    setup.records.values[KEY] = b"value"
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.GET_VALUE, KEY))
    assert reply == KadMessage(
        MessageType.GET_VALUE,
        key=KEY,
        record=Record(KEY, b"value"),
        closer_peers=setup.expected_closer(KEY),
    )


async def test_get_value_without_record(setup: Setup) -> None:
    setup.records.values[b"other"] = b"value"
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.GET_VALUE, KEY))
    assert reply == KadMessage(
        MessageType.GET_VALUE, key=KEY, record=None, closer_peers=setup.expected_closer(KEY)
    )


async def test_get_value_with_empty_value_is_still_a_record(setup: Setup) -> None:
    setup.records.values[KEY] = b""
    reply = await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.GET_VALUE, KEY))
    assert reply is not None
    assert reply.record == Record(KEY, b"")


# -- PUT_VALUE -----------------------------------------------------------------


async def test_put_value_stores_and_echoes(setup: Setup) -> None:
    request = KadMessage(
        MessageType.PUT_VALUE, key=KEY, record=Record(KEY, b"v1", "1999-01-01T00:00:00Z")
    )
    reply = await setup.handlers.handle(REQUESTER.peer_id, request)
    # The echo carries key and value; the sender's timeReceived is never trusted.
    assert reply == KadMessage(MessageType.PUT_VALUE, key=KEY, record=Record(KEY, b"v1"))
    assert setup.records.puts == [(KEY, b"v1", REQUESTER.peer_id)]
    assert setup.records.values == {KEY: b"v1"}


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (KadMessage(MessageType.PUT_VALUE, key=KEY), "missing_record"),
        (
            KadMessage(MessageType.PUT_VALUE, key=KEY, record=Record(b"/zhtp/manifest/x", b"v")),
            "record_key_mismatch",
        ),
        (
            KadMessage(MessageType.PUT_VALUE, key=b"", record=Record(KEY, b"v")),
            "record_key_mismatch",
        ),
    ],
    ids=["missing_record", "key_mismatch", "empty_key"],
)
async def test_put_value_invalid_changes_nothing(
    setup: Setup, request_: KadMessage, reason: str
) -> None:
    setup.records.values[KEY] = b"old"
    assert await rejected(setup, request_) == reason
    assert setup.records.values == {KEY: b"old"}
    assert setup.records.puts == []


async def test_put_value_refused_by_holder_propagates() -> None:
    setup = Setup(refuse="record_invalid")
    request = KadMessage(MessageType.PUT_VALUE, key=KEY, record=Record(KEY, b"v"))
    assert await rejected(setup, request) == "record_invalid"
    assert setup.records.values == {}


# -- ADD_PROVIDER / GET_PROVIDERS ---------------------------------------------


async def test_add_provider_for_sender_itself(setup: Setup) -> None:
    request = KadMessage(MessageType.ADD_PROVIDER, key=KEY, provider_peers=(REQUESTER,))
    assert await setup.handlers.handle(REQUESTER.peer_id, request) is None
    assert setup.providers.entries == {KEY: [REQUESTER]}


async def test_add_provider_ignores_entries_naming_others(setup: Setup) -> None:
    request = KadMessage(
        MessageType.ADD_PROVIDER, key=KEY, provider_peers=(OTHER, REQUESTER, PEERS[9])
    )
    assert await setup.handlers.handle(REQUESTER.peer_id, request) is None
    assert setup.providers.entries == {KEY: [REQUESTER]}


@pytest.mark.parametrize(
    "providers",
    [
        (OTHER,),
        (OTHER, PEERS[9]),
        (),
        (PeerInfo(REQUESTER.peer_id, ()),),  # itself, but with no way to reach it
    ],
    ids=["other", "others", "none", "no_addrs"],
)
async def test_add_provider_not_for_sender_stores_nothing(
    setup: Setup, providers: tuple[PeerInfo, ...]
) -> None:
    request = KadMessage(MessageType.ADD_PROVIDER, key=KEY, provider_peers=providers)
    assert await rejected(setup, request) == "provider_not_sender"
    assert setup.providers.entries == {}


async def test_add_provider_needs_a_key(setup: Setup) -> None:
    request = KadMessage(MessageType.ADD_PROVIDER, provider_peers=(REQUESTER,))
    assert await rejected(setup, request) == "missing_key"
    assert setup.providers.entries == {}


async def test_get_providers(setup: Setup) -> None:
    setup.providers.entries[KEY] = [OTHER, PEERS[9]]
    reply = await setup.handlers.handle(
        REQUESTER.peer_id, KadMessage(MessageType.GET_PROVIDERS, KEY)
    )
    assert reply == KadMessage(
        MessageType.GET_PROVIDERS,
        key=KEY,
        provider_peers=(OTHER, PEERS[9]),
        closer_peers=setup.expected_closer(KEY),
    )


async def test_get_providers_none_known(setup: Setup) -> None:
    reply = await setup.handlers.handle(
        REQUESTER.peer_id, KadMessage(MessageType.GET_PROVIDERS, KEY)
    )
    assert reply is not None
    assert reply.provider_peers == ()
    assert reply.closer_peers == setup.expected_closer(KEY)


# -- the rest ------------------------------------------------------------------


async def test_ping_type_is_unsupported(setup: Setup) -> None:
    assert await rejected(setup, KadMessage(MessageType.PING, KEY)) == "unsupported_message_type"


async def test_on_request_called_with_the_peer(setup: Setup) -> None:
    await setup.handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.FIND_NODE, KEY))
    await setup.handlers.handle(OTHER.peer_id, KadMessage(MessageType.GET_VALUE, KEY))
    assert setup.requests == [REQUESTER.peer_id, OTHER.peer_id]


async def test_handlers_work_without_on_request() -> None:
    handlers = KadHandlers(FakeRouting(), FakeRecords(), FakeProviders())
    reply = await handlers.handle(REQUESTER.peer_id, KadMessage(MessageType.FIND_NODE, KEY))
    assert reply is not None
    assert len(reply.closer_peers) == 20
