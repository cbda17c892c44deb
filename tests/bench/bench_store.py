"""Shard transfer against raw TCP, two processes: ``python -m tests.bench.bench_store``.

A server process listens twice on loopback: a raw trio TCP socket (sink and
source) and a node libp2p host serving /zhtp/store/1.0.0 with shards held in
memory, so the figure is the protocol and its transport, not the disk (the
disk has its own benchmark, bench_storage). This process sends and fetches
the same bytes both ways and prints MB/s and the ratio to raw TCP, measured
in the same run, interleaved, medians of several rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial

import blake3
import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from node.host import StreamOpener, build_host, set_handler, stream_peer
from protocols import ids
from protocols.framing import Counters
from protocols.store.client import StoreClient
from protocols.store.handlers import ShardSlice, StoreHandlers
from protocols.store.messages import Refused, RefuseReason
from protocols.store.session import serve_store_stream

RAW_CHUNK = 256 << 10


class MemoryHolder:
    """Shards in a dict: the server side of the benchmark, no disk."""

    def __init__(self) -> None:
        self.shards: dict[bytes, bytes] = {}

    def max_shard_size(self) -> int:
        return 64 << 20

    async def has(self, addresses: Sequence[bytes]) -> list[bool]:
        return [a in self.shards for a in addresses]

    async def reserve(
        self, address: bytes, size: int, contract_id: bytes
    ) -> tuple[bytes, int] | Refused:
        if size > self.max_shard_size():
            return Refused(RefuseReason.TOO_LARGE)
        return (address, size)

    async def commit(self, reservation: tuple[bytes, int], data: bytes) -> bool:
        fresh = reservation[0] not in self.shards
        self.shards[reservation[0]] = data
        return fresh

    async def release(self, reservation: tuple[bytes, int]) -> None:
        return None

    async def read(self, address: bytes, offset: int, length: int | None) -> ShardSlice | None:
        data = self.shards.get(address)
        if data is None:
            return None
        end = len(data) if length is None else offset + length
        return ShardSlice(data[offset:end], len(data))


async def serve() -> None:
    """The server process: prints its two addresses, serves until stdin closes."""
    holder = MemoryHolder()
    handlers = StoreHandlers(holder)
    counters = Counters()
    host = build_host(create_new_key_pair())

    async def raw(stream: trio.SocketStream) -> None:
        # First byte: b"s" = client sends N bytes to us; b"f" = we send N bytes.
        header = await stream.receive_some(9)
        mode, size = header[:1], int.from_bytes(header[1:9], "big")
        if mode == b"s":
            got = 0
            while got < size:
                chunk = await stream.receive_some(RAW_CHUNK)
                if not chunk:
                    return
                got += len(chunk)
            await stream.send_all(b"k")
        else:
            block = bytes(RAW_CHUNK)
            sent = 0
            while sent < size:
                await stream.send_all(block[: min(RAW_CHUNK, size - sent)])
                sent += min(RAW_CHUNK, size - sent)

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]), trio.open_nursery() as n:
        set_handler(
            host,
            ids.STORE,
            lambda s: serve_store_stream(s, stream_peer(s), handlers, counters),
        )
        listeners = await n.start(partial(trio.serve_tcp, raw, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        addr = next(str(a) for a in host.get_addrs() if "127.0.0.1" in str(a))
        print(
            json.dumps({"raw_port": port, "addr": addr, "peer_id": host.get_id().to_base58()}),
            flush=True,
        )
        await trio.wrap_file(sys.stdin).read()
        n.cancel_scope.cancel()


async def raw_round(port: int, mode: bytes, size: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    started = time.perf_counter()
    await stream.send_all(mode + size.to_bytes(8, "big"))
    if mode == b"s":
        block = bytes(RAW_CHUNK)
        sent = 0
        while sent < size:
            await stream.send_all(block[: min(RAW_CHUNK, size - sent)])
            sent += min(RAW_CHUNK, size - sent)
        await stream.receive_some(1)
    else:
        got = 0
        while got < size:
            chunk = await stream.receive_some(RAW_CHUNK)
            if not chunk:
                break
            got += len(chunk)
    await stream.aclose()
    return time.perf_counter() - started


async def client(
    info: dict[str, str], shard_size: int, total: int, rounds: int
) -> dict[str, float]:
    import base58

    host = build_host(create_new_key_pair())
    peer = base58.b58decode(info["peer_id"])
    maddr = multiaddr.Multiaddr(info["addr"])
    addrs = (maddr.decapsulate(multiaddr.Multiaddr(f"/p2p/{info['peer_id']}")).to_bytes(),)
    store = StoreClient(StreamOpener(host), timeout=120)
    count = max(1, total // shard_size)

    def shards_for(round_: int) -> list[tuple[bytes, bytes]]:
        # Fresh shards every round: a held shard is answered without a transfer.
        out = []
        for i in range(count):
            seed = (round_ * count + i).to_bytes(8, "big")
            data = (seed * (shard_size // 8 + 1))[:shard_size]
            out.append((blake3.blake3(data).digest(), data))
        return out

    shards = shards_for(0)
    samples: dict[str, list[float]] = {"raw_send": [], "raw_fetch": [], "store": [], "fetch": []}
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await store.has_shards(peer, addrs, [shards[0][0]])  # connect once, outside the timing
        for round_ in range(1, rounds + 1):
            shards = shards_for(round_)
            samples["raw_send"].append(
                count
                * shard_size
                / await raw_round(int(info["raw_port"]), b"s", count * shard_size)
            )
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for address, data in shards:
                    nursery.start_soon(store.store_shard, peer, addrs, address, data)
            samples["store"].append(count * shard_size / (time.perf_counter() - started))
            samples["raw_fetch"].append(
                count
                * shard_size
                / await raw_round(int(info["raw_port"]), b"f", count * shard_size)
            )
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for address, _ in shards:
                    nursery.start_soon(store.fetch_shard, peer, addrs, address)
            samples["fetch"].append(count * shard_size / (time.perf_counter() - started))
    return {name: statistics.median(values) / 1e6 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--shard-size", type=int, default=4 << 20)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve)
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_store", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        total = (16 if args.quick else 64) << 20
        rounds = 3 if args.quick else 7
        figures = trio.run(client, info, args.shard_size, total, rounds)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    figures["store_ratio"] = figures["store"] / figures["raw_send"]
    figures["fetch_ratio"] = figures["fetch"] / figures["raw_fetch"]
    if args.json:
        print(json.dumps(figures))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Shard transfer between two processes ({args.shard_size >> 10} KiB shards, "
        f"{total >> 20} MiB per round)"
    )
    table.add_column("direction")
    table.add_column("raw trio TCP", justify="right")
    table.add_column("/zhtp/store", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        "client → holder (StoreShard)",
        f"{figures['raw_send']:.0f} MB/s",
        f"{figures['store']:.0f} MB/s",
        f"{figures['store_ratio']:.2f}",
    )
    table.add_row(
        "holder → client (FetchShard)",
        f"{figures['raw_fetch']:.0f} MB/s",
        f"{figures['fetch']:.0f} MB/s",
        f"{figures['fetch_ratio']:.2f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
