"""kill -9 a node process while shards stream into it; nothing it acknowledged is lost.

A client host in this process stores shards on a real ``zhtp run`` process
over /zhtp/store/1.0.0, several at a time, and notes each shard the node
acknowledged. At a random moment the node gets SIGKILL — mid-transfer, often
mid-fsync — and is restarted on the same data dir. After the last round every
acknowledged shard must come back from the node intact.
"""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import blake3
import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.host import StreamOpener, build_host
from protocols.framing import PEER_FAILURES
from protocols.store import StoreRefused
from protocols.store.client import StoreClient

STORE_FAILURES: tuple[type[BaseException], ...] = (*PEER_FAILURES, StoreRefused)
ROUNDS = 6
SHARD = 256 << 10
WRITERS = 4


class NodeProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[str] | None = None
        self.addr = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "--data-dir", str(self.data_dir), "run", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        banner = json.loads(self.proc.stdout.readline())
        self.addr = banner["addrs"][0]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    data_dir = tmp_path / "node"
    # One port for every restart, so the client dials the same address.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    init = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "--data-dir",
            str(data_dir),
            "init",
            "--listen",
            f"/ip4/127.0.0.1/tcp/{port}",
            "--no-default-bootstrap",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    # This suite tests the holder's durability, not the market: admit shards
    # without a contract, as a private network would.
    config = data_dir / "config.toml"
    text = config.read_text()
    assert "require_contracts = true" in text
    config.write_text(text.replace("require_contracts = true", "require_contracts = false"))
    process = NodeProcess(data_dir)
    try:
        yield process
    finally:
        process.stop()


async def test_kill_9_during_store_loses_nothing_acknowledged(node: NodeProcess) -> None:
    rng = random.Random(0x2A)
    acknowledged: dict[bytes, bytes] = {}
    host = build_host(create_new_key_pair())
    client = StoreClient(StreamOpener(host), timeout=10.0)
    with trio.fail_after(240):
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            node.start()
            maddr = multiaddr.Multiaddr(node.addr)
            peer = ID.from_base58(re.sub(r".*/p2p/", "", node.addr)).to_bytes()
            addrs = (maddr.decapsulate(multiaddr.Multiaddr(f"/p2p/{ID(peer)}")).to_bytes(),)

            async def writer() -> None:
                while True:
                    data = rng.randbytes(SHARD)
                    address = blake3.blake3(data).digest()
                    try:
                        outcome = await client.store_shard(peer, addrs, address, data)
                    except STORE_FAILURES:
                        return  # the node died under us: this shard was never acknowledged
                    if outcome.held:
                        acknowledged[address] = data

            for _round in range(ROUNDS):
                async with trio.open_nursery() as nursery:
                    for _ in range(WRITERS):
                        nursery.start_soon(writer)
                    await trio.sleep(rng.uniform(0.3, 1.5))
                    node.kill()
                await host.disconnect(ID(peer))
                node.start()
                # Writers that dialled the dead node put it in py-libp2p's
                # 60 s negative dial cache; it is back, so clear that.
                host.get_network().unblock_peer(ID(peer))

            assert len(acknowledged) >= ROUNDS  # the test stored something each round
            held = await client.has_shards(peer, addrs, list(acknowledged))
            assert all(held), f"{held.count(False)} acknowledged shards missing after kill -9"
            for address, data in acknowledged.items():
                assert await client.fetch_shard(peer, addrs, address) == data
