"""Bad input from real libp2p peers: reset, counted, and no state changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.secio.transport import ID as SECIO_ID
from libp2p.security.secio.transport import Transport as SecioTransport

from node.host import build_host
from node.records.validators import blob_key
from protocols import ids
from protocols.framing import encode_frame, encode_uvarint
from protocols.kad.messages import KadMessage, MessageType, Record, encode_message
from protocols.pb import dht_pb2
from tests.integration.netutil import RunningNode, start_network, start_node


@asynccontextmanager
async def attacker_host(host: IHost | None = None) -> AsyncIterator[IHost]:
    host = host or build_host(create_new_key_pair())
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


async def _send_raw(attacker: IHost, node: RunningNode, protocol: str, data: bytes) -> bytes:
    """Write ``data`` on a fresh stream and read until the node ends it."""
    await attacker.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addr)))
    stream = await attacker.new_stream(node.service.peer_id, [TProtocol(protocol)])
    await stream.write(data)
    received = b""
    try:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            received += chunk
    except (StreamError, EOFError):
        pass
    return received


def _state(node: RunningNode) -> tuple[int, int, int]:
    return (
        len(node.service.dht.table),
        node.service.store.count(),
        node.service.store.provider_count(),
    )


CASES = [
    ("garbage", encode_frame(b"\xff\xfe\xfd not protobuf", 1 << 20), "garbage"),
    ("endless varint", b"\xff" * 16, "varint_too_long"),
    (
        "frame above the cap",
        encode_uvarint(ids.KAD_LIMITS.max_frame + 1) + b"x" * 100,
        "frame_too_large",
    ),
    (
        "unknown message type",
        encode_frame(dht_pb2.Message(type=9, key=b"k").SerializeToString(), 1 << 20),  # type: ignore[arg-type]
        "unknown_message_type",
    ),
    (
        "record failing validation",
        encode_frame(
            encode_message(
                KadMessage(
                    MessageType.PUT_VALUE,
                    key=blob_key(b"real"),
                    record=Record(blob_key(b"real"), b"forged"),
                )
            ),
            1 << 20,
        ),
        "record_invalid",
    ),
    (
        "unknown namespace",
        encode_frame(
            encode_message(
                KadMessage(MessageType.PUT_VALUE, key=b"/evil/x", record=Record(b"/evil/x", b"v"))
            ),
            1 << 20,
        ),
        "record_invalid",
    ),
    (
        "provider naming someone else",
        encode_frame(
            dht_pb2.Message(
                type=2,
                key=b"k",
                providerPeers=[
                    dht_pb2.Message.Peer(
                        id=b"\x00\x04abcd",
                        addrs=[multiaddr.Multiaddr("/ip4/1.2.3.4/tcp/1").to_bytes()],
                    )
                ],
            ).SerializeToString(),
            1 << 20,
        ),  # type: ignore[arg-type]
        "provider_not_sender",
    ),
]


@pytest.mark.parametrize(("label", "data", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_bad_kad_input_is_reset_counted_and_changes_nothing(
    tmp_path: Path, label: str, data: bytes, reason: str
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, 3)
            target = nodes[0]
            before = _state(target)
            counters = target.service.counters[ids.KAD]
            async with attacker_host() as attacker:
                reply = await _send_raw(attacker, target, ids.KAD, data)
            assert reply == b""
            assert counters.get(reason) == 1, counters.snapshot()
            assert _state(target) == before
            nursery.cancel_scope.cancel()


async def test_bad_ping_is_reset_and_counted(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n")
            async with attacker_host() as attacker:
                # A Ping whose nonce is too short to be a nonce.
                reply = await _send_raw(attacker, node, ids.PING, encode_frame(b"\x0a\x01x", 4096))
            assert reply == b""
            assert node.service.counters[ids.PING].get("bad_nonce") == 1
            nursery.cancel_scope.cancel()


async def test_stream_flood_from_one_peer_is_capped(tmp_path: Path) -> None:
    cap = ids.KAD_LIMITS.max_streams_per_peer
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n")
            before = _state(node)
            async with attacker_host() as attacker:
                await attacker.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addr)))
                streams = []
                refused = 0
                # Streams that never send a byte, each held open by the node
                # until its idle timeout: only `cap` may be held at once. The
                # node resets the rest, often before negotiation completes.
                for _ in range(cap + 8):
                    try:
                        streams.append(
                            await attacker.new_stream(node.service.peer_id, [TProtocol(ids.KAD)])
                        )
                    except StreamFailure:
                        refused += 1
                counters = node.service.counters[ids.KAD]
                while counters.get("too_many_streams") < 8:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert counters.get("too_many_streams") == 8
                # Another peer is still served meanwhile.
                other = nodes_other = await start_node(
                    nursery, tmp_path / "o", bootstrap=(node.addr,)
                )
                assert other.service.bootstrap_result.reached == 1
                del nodes_other
                for s in streams:
                    await s.reset()
            assert _state(node)[1:] == before[1:]
            nursery.cancel_scope.cancel()


def _weak_host(kind: str) -> IHost:
    pair = create_new_key_pair()
    if kind == "plaintext":
        sec = {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair)}
    else:
        sec = {TProtocol(SECIO_ID): SecioTransport(pair)}
    return new_host(key_pair=pair, sec_opt=sec)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["plaintext", "secio"])
async def test_dialer_without_noise_is_refused(tmp_path: Path, kind: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path / "n")
            async with attacker_host(_weak_host(kind)) as weak:
                with pytest.raises(Exception) as caught:
                    await weak.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.addr)))
                assert not isinstance(caught.value, AssertionError)
                assert weak.get_network().connections.get(node.service.peer_id) in (None, [])
            assert node.service.peer_id not in [p for p in node.service.host.get_connected_peers()]
            nursery.cancel_scope.cancel()
