"""Transport throughput: ``python -m tests.bench.bench_transport [--quick]``.

Two processes on loopback: this one sends, a server process it starts
receives. For each setup — raw trio TCP, stock py-libp2p (Noise + Yamux),
and ours (:mod:`protocols.transport`) — it measures:

- bulk: 64 MiB written in 256 KiB writes on one stream, timed until the
  receiver has counted every byte and said so;
- RPC: 64-byte request, 64-byte response round trips on one stream.

Runs are interleaved (raw, stock, ours, raw, ...) after one warm-up run
each, and the table shows medians, so the ratio ours ÷ raw compares runs
made under the same load. Both libp2p setups run without py-libp2p's
auto-connector, as ZHTP's node does. Last line: the speed of Noise's cipher
alone on one core, a ceiling for any Noise transport on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import multiaddr
import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as StockNoiseTransport
from rich.console import Console
from rich.table import Table

from protocols.transport import muxer_options, security_options, use_muxer_classes

Setup = Literal["raw", "stock", "ours"]
SETUPS: tuple[Setup, ...] = ("raw", "stock", "ours")
SINK = TProtocol("/zhtp-bench/sink/1.0.0")
ECHO = TProtocol("/zhtp-bench/echo/1.0.0")
WRITE_SIZE = 256 * 1024
READ_SIZE = 256 * 1024
RPC_SIZE = 64


def make_host(setup: Setup) -> IHost:
    pair = create_new_key_pair()
    config = ConnectionConfig(max_connections_per_peer=1)
    if setup == "ours":
        host = new_host(
            key_pair=pair,
            sec_opt=security_options(pair),
            muxer_opt=muxer_options(),
            connection_config=config,
        )
        use_muxer_classes(host)
    else:
        noise = StockNoiseTransport(pair, noise_privkey=create_noise_key_pair().private_key)
        host = new_host(
            key_pair=pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_preference="YAMUX",
            connection_config=config,
        )
    _disable_auto_connect(host)
    return host


def _disable_auto_connect(host: IHost) -> None:
    """As node/host.py does: py-libp2p's auto-connector would keep re-dialling
    every peer in the peerstore from both hosts in this process, and its work
    lands in the middle of the measurements."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:

        async def no_auto_connect() -> None:
            return None

        connector.maybe_connect = no_auto_connect


# -- byte streams: one interface over a trio socket and a libp2p stream ------


class Pipe:
    """What the measurements need from a connection, raw or libp2p."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        receive: Callable[[int], Awaitable[bytes]],
        end: Callable[[], Awaitable[None]],
    ) -> None:
        self.send, self.receive, self.end = send, receive, end

    async def receive_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await self.receive(n - len(data))
            if not chunk:
                raise EOFError(f"ended after {len(data)} of {n} bytes")
            data += chunk
        return data


def socket_pipe(stream: trio.SocketStream) -> Pipe:
    return Pipe(stream.send_all, stream.receive_some, stream.send_eof)


def libp2p_pipe(stream: INetStream) -> Pipe:
    async def receive(n: int) -> bytes:
        try:
            return await stream.read(n)
        except StreamEOF:
            return b""

    # Half-close so the receiver sees the end and can still answer.
    end = stream.close_write if isinstance(stream, NetStream) else stream.close
    return Pipe(stream.write, receive, end)


# -- server side ---------------------------------------------------------------


async def sink(pipe: Pipe) -> None:
    total = 0
    while chunk := await pipe.receive(READ_SIZE):
        total += len(chunk)
    await pipe.send(total.to_bytes(8, "big"))


async def echo(pipe: Pipe) -> None:
    while True:
        try:
            request = await pipe.receive_exactly(RPC_SIZE)
        except EOFError:
            return
        await pipe.send(request)


async def serve(setup: Setup) -> None:
    if setup == "raw":

        async def handle(stream: trio.SocketStream) -> None:
            pipe = socket_pipe(stream)
            kind = await pipe.receive_exactly(1)
            await (sink(pipe) if kind == b"S" else echo(pipe))
            await stream.aclose()

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        print(f"127.0.0.1:{port}", flush=True)
        await trio.serve_listeners(handle, listeners)
        return
    host = make_host(setup)

    async def handle_sink(stream: INetStream) -> None:
        await sink(libp2p_pipe(stream))
        await stream.close()

    async def handle_echo(stream: INetStream) -> None:
        await echo(libp2p_pipe(stream))
        await stream.close()

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        host.set_stream_handler(SINK, handle_sink)
        host.set_stream_handler(ECHO, handle_echo)
        print(f"{host.get_addrs()[0]}", flush=True)
        await trio.sleep_forever()


# -- client side ---------------------------------------------------------------


@dataclass
class Results:
    mb_per_s: dict[Setup, list[float]] = field(default_factory=dict)
    rpc_per_s: dict[Setup, list[float]] = field(default_factory=dict)


class Client:
    """Opens pipes to the server of each setup from one trio run."""

    def __init__(self, addrs: dict[Setup, str]) -> None:
        self._addrs = addrs
        self._hosts: dict[Setup, tuple[IHost, ID]] = {}

    async def open(
        self, setup: Setup, protocol: TProtocol
    ) -> tuple[Pipe, Callable[[], Awaitable[None]]]:
        if setup == "raw":
            address, port = self._addrs["raw"].rsplit(":", 1)
            stream = await trio.open_tcp_stream(address, int(port))
            await stream.send_all(b"S" if protocol == SINK else b"E")
            return socket_pipe(stream), stream.aclose
        host, peer = self._hosts[setup]
        net_stream = await host.new_stream(peer, [protocol])
        return libp2p_pipe(net_stream), net_stream.close

    async def run(self, nursery: trio.Nursery, setup: Setup) -> None:
        if setup == "raw" or setup in self._hosts:
            return
        host = make_host(setup)
        started = trio.Event()

        async def keep_running() -> None:
            async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                started.set()
                await trio.sleep_forever()

        nursery.start_soon(keep_running)
        await started.wait()
        info = info_from_p2p_addr(multiaddr.Multiaddr(self._addrs[setup]))
        await host.connect(info)
        self._hosts[setup] = (host, info.peer_id)


async def measure_bulk(client: Client, setup: Setup, size: int) -> float:
    pipe, close = await client.open(setup, SINK)
    block = bytes(range(256)) * (WRITE_SIZE // 256)
    started = time.perf_counter()
    for _ in range(size // WRITE_SIZE):
        await pipe.send(block)
    await pipe.end()
    counted = int.from_bytes(await pipe.receive_exactly(8), "big")
    elapsed = time.perf_counter() - started
    await close()
    if counted != size:
        raise RuntimeError(f"{setup}: receiver counted {counted} of {size} bytes")
    return size / elapsed / 1e6


async def measure_rpc(client: Client, setup: Setup, count: int) -> float:
    pipe, close = await client.open(setup, ECHO)
    request = bytes(range(RPC_SIZE))
    started = time.perf_counter()
    for _ in range(count):
        await pipe.send(request)
        if await pipe.receive_exactly(RPC_SIZE) != request:
            raise RuntimeError(f"{setup}: echo returned other bytes")
    elapsed = time.perf_counter() - started
    await pipe.end()
    await close()
    return count / elapsed


async def run_client(addrs: dict[Setup, str], runs: int, size: int, rpcs: int) -> Results:
    results = Results()
    client = Client(addrs)
    async with trio.open_nursery() as nursery:
        for setup in SETUPS:
            await client.run(nursery, setup)
        for setup in SETUPS:  # warm-up: first streams, identify, caches
            await measure_bulk(client, setup, size)
            await measure_rpc(client, setup, rpcs // 10)
        for _ in range(runs):
            for setup in SETUPS:
                results.mb_per_s.setdefault(setup, []).append(
                    await measure_bulk(client, setup, size)
                )
            for setup in SETUPS:
                results.rpc_per_s.setdefault(setup, []).append(
                    await measure_rpc(client, setup, rpcs)
                )
        nursery.cancel_scope.cancel()
    return results


def start_server(setup: Setup) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_transport", "--serve", setup],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    address = process.stdout.readline().strip()
    if not address:
        process.kill()
        raise RuntimeError(f"the {setup} server did not start")
    return process, address


def cipher_ceiling(size: int) -> float:
    """MB/s of Noise's cipher alone on one core: no transport can encrypt faster."""
    cipher = ChaCha20Poly1305(bytes(32))
    message = bytes(MAX_PLAINTEXT_LENGTH)
    count = size // len(message)
    started = time.perf_counter()
    for nonce in range(count):
        cipher.encrypt(nonce.to_bytes(12, "little"), message, None)
    return count * len(message) / (time.perf_counter() - started) / 1e6


def print_table(results: Results, runs: int, size: int, rpcs: int) -> None:
    raw = statistics.median(results.mb_per_s["raw"])
    table = Table(
        title=f"Loopback, 2 processes: {size >> 20} MiB in {WRITE_SIZE >> 10} KiB writes; "
        f"{rpcs} x {RPC_SIZE} B round trips; medians of {runs} interleaved runs"
    )
    for column in ("setup", "MB/s", "x raw", "runs (MB/s)", "round trips/s"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    names = {"raw": "raw trio TCP", "stock": "py-libp2p stock Noise+Yamux", "ours": "ours"}
    for setup in SETUPS:
        speeds = results.mb_per_s[setup]
        median = statistics.median(speeds)
        table.add_row(
            names[setup],
            f"{median:,.0f}",
            f"{median / raw:.2f}",
            " ".join(f"{s:,.0f}" for s in speeds),
            f"{statistics.median(results.rpc_per_s[setup]):,.0f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"ChaCha20-Poly1305 alone, one core: {cipher_ceiling(size):,.0f} MB/s "
        "(Noise must encrypt at one end and decrypt at the other)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run: a smoke test")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--serve", choices=SETUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve)
        return
    runs, size, rpcs = (1, 16 << 20, 300) if args.quick else (args.runs, 64 << 20, 3000)
    servers = {setup: start_server(setup) for setup in SETUPS}
    try:
        addrs = {setup: address for setup, (_, address) in servers.items()}
        results = trio.run(run_client, addrs, runs, size, rpcs)
    finally:
        for process, _ in servers.values():
            process.kill()
            process.wait()
    print_table(results, runs, size, rpcs)


if __name__ == "__main__":
    main()
