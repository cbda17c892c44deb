"""Our Noise + Yamux against stock py-libp2p on real hosts over 127.0.0.1.

Every test runs in both directions: our host dials a stock one, and a stock
host dials ours. The bytes have to mean the same thing to both, so
transfers are checked with sha256, and the connection is checked to really
use our classes at our end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as StockNoiseTransport
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.transport import (
    FastYamux,
    NoiseSession,
    muxer_options,
    security_options,
    use_muxer_classes,
)

Kind = Literal["ours", "stock"]
PROTOCOL = TProtocol("/zhtp-test/transfer/1.0.0")
MIB = 1 << 20
DIRECTIONS = [("ours", "stock"), ("stock", "ours")]


def make_host(kind: Kind) -> IHost:
    pair = create_new_key_pair()
    config = ConnectionConfig(max_connections_per_peer=1)
    if kind == "ours":
        host = new_host(
            key_pair=pair,
            sec_opt=security_options(pair),
            muxer_opt=muxer_options(),
            connection_config=config,
        )
        use_muxer_classes(host)
        return host
    noise = StockNoiseTransport(pair, noise_privkey=create_noise_key_pair().private_key)
    return new_host(
        key_pair=pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        connection_config=config,
    )


@dataclass
class Pair:
    dialer: IHost
    listener: IHost
    dialer_kind: Kind
    listener_kind: Kind

    async def open(self) -> INetStream:
        return await self.dialer.new_stream(self.listener.get_id(), [PROTOCOL])


@asynccontextmanager
async def hosts(dialer_kind: Kind, listener_kind: Kind) -> AsyncIterator[Pair]:
    dialer, listener = make_host(dialer_kind), make_host(listener_kind)
    address = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with dialer.run([address]), listener.run([address]):
        await dialer.connect(info_from_p2p_addr(listener.get_addrs()[0]))
        yield Pair(dialer, listener, dialer_kind, listener_kind)


def serve(pair: Pair, handler: object) -> None:
    pair.listener.set_stream_handler(PROTOCOL, handler)  # type: ignore[arg-type]


async def read_exactly(stream: INetStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        data += await stream.read(n - len(data))
    return bytes(data)


async def read_to_end(stream: INetStream, hasher: hashlib._Hash | None = None) -> int:
    total = 0
    while True:
        try:
            chunk = await stream.read(256 * 1024)
        except StreamEOF:
            return total
        if not chunk:
            return total
        total += len(chunk)
        if hasher is not None:
            hasher.update(chunk)


def pattern(size: int) -> bytes:
    return os.urandom(size)


async def write_in_blocks(stream: INetStream, data: bytes, block: int = 256 * 1024) -> None:
    view = memoryview(data)
    for start in range(0, len(data), block):
        await stream.write(bytes(view[start : start + block]))


def assert_our_classes(host: IHost, kind: Kind) -> None:
    [conn] = [c for conns in host.get_network().get_connections_map().values() for c in conns]
    muxed = conn.muxed_conn
    if kind == "ours":
        assert isinstance(muxed, FastYamux)
        assert isinstance(muxed.secured_conn, NoiseSession)
    else:
        assert type(muxed) is Yamux


@pytest.mark.parametrize(("dialer_kind", "listener_kind"), DIRECTIONS)
async def test_64_mib_on_one_stream_arrive_intact(dialer_kind: Kind, listener_kind: Kind) -> None:
    data = pattern(64 * MIB)
    digests: dict[str, str] = {}
    done = trio.Event()

    async def receive(stream: INetStream) -> None:
        hasher = hashlib.sha256()
        await read_to_end(stream, hasher)
        digests["received"] = hasher.hexdigest()
        await stream.write(b"ok")
        await stream.close()
        done.set()

    with trio.fail_after(120):
        async with hosts(dialer_kind, listener_kind) as pair:
            assert_our_classes(pair.dialer, dialer_kind)
            assert_our_classes(pair.listener, listener_kind)
            serve(pair, receive)
            stream = await pair.open()
            await write_in_blocks(stream, data)
            assert isinstance(stream, NetStream)
            await stream.close_write()
            assert await read_exactly(stream, 2) == b"ok"
            await done.wait()
    assert digests["received"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("dialer_kind", "listener_kind"), DIRECTIONS)
async def test_many_small_round_trips_on_one_stream(dialer_kind: Kind, listener_kind: Kind) -> None:
    async def echo(stream: INetStream) -> None:
        while True:
            try:
                size = int.from_bytes(await read_exactly(stream, 2), "big")
            except StreamEOF:
                break
            await stream.write(await read_exactly(stream, size))
        await stream.close()

    with trio.fail_after(60):
        async with hosts(dialer_kind, listener_kind) as pair:
            serve(pair, echo)
            stream = await pair.open()
            for i in range(500):
                request = os.urandom(1 + i % 200)
                await stream.write(len(request).to_bytes(2, "big") + request)
                assert await read_exactly(stream, len(request)) == request
            await stream.close()


@pytest.mark.parametrize(("dialer_kind", "listener_kind"), DIRECTIONS)
async def test_fifty_concurrent_streams(dialer_kind: Kind, listener_kind: Kind) -> None:
    payloads = [pattern(300_000 + i * 1000) for i in range(50)]

    async def digest_back(stream: INetStream) -> None:
        hasher = hashlib.sha256()
        await read_to_end(stream, hasher)
        await stream.write(hasher.digest())
        await stream.close()

    async def one(pair: Pair, payload: bytes) -> None:
        stream = await pair.open()
        await write_in_blocks(stream, payload, 64 * 1024)
        assert isinstance(stream, NetStream)
        await stream.close_write()
        assert await read_exactly(stream, 32) == hashlib.sha256(payload).digest()

    with trio.fail_after(120):
        async with hosts(dialer_kind, listener_kind) as pair:
            serve(pair, digest_back)
            async with trio.open_nursery() as nursery:
                for payload in payloads:
                    nursery.start_soon(one, pair, payload)


# A writer of ours waits for credit as long as it takes; a stock writer gives
# up after 5 s, so only directions where ours writes are tested here.
@pytest.mark.parametrize(("dialer_kind", "listener_kind"), [*DIRECTIONS, ("ours", "ours")])
async def test_a_reader_stalling_7_s_is_not_reset(dialer_kind: Kind, listener_kind: Kind) -> None:
    # More than any receive window, ours (4 MiB) or stock's (16 MiB): the
    # writer must run out of credit while the reader sleeps.
    data = pattern(40 * MIB)
    received: dict[str, str] = {}
    finished = trio.Event()

    async def stalling_reader(stream: INetStream) -> None:
        hasher = hashlib.sha256()
        hasher.update(await read_exactly(stream, MIB))
        await trio.sleep(7)
        await read_to_end(stream, hasher)
        received["digest"] = hasher.hexdigest()
        await stream.close()
        finished.set()

    async def stalled_writer(stream: INetStream) -> None:
        await write_in_blocks(stream, data)
        assert isinstance(stream, NetStream)
        await stream.close_write()

    with trio.fail_after(60):
        async with hosts(dialer_kind, listener_kind) as pair:
            if dialer_kind == "ours":  # the dialer writes, the listener stalls
                serve(pair, stalling_reader)
                await stalled_writer(await pair.open())
            else:  # the listener writes, the dialer stalls

                async def write_back(stream: INetStream) -> None:
                    await stalled_writer(stream)

                serve(pair, write_back)
                stream = await pair.open()
                await stream.write(b"go")
                await stalling_reader(stream)
            await finished.wait()
    assert received["digest"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("dialer_kind", "listener_kind"), DIRECTIONS)
@pytest.mark.parametrize("who_resets", ["reader", "writer"])
async def test_a_reset_mid_transfer_is_seen_by_both_sides(
    dialer_kind: Kind, listener_kind: Kind, who_resets: str
) -> None:
    seen: dict[str, type[BaseException]] = {}
    reader_done = trio.Event()

    async def reader(stream: INetStream) -> None:
        try:
            await read_exactly(stream, 2 * MIB)
            if who_resets == "reader":
                await stream.reset()
                seen["reader"] = StreamReset
            else:
                await read_to_end(stream)
                seen["reader"] = StreamEOF
        except StreamError as error:
            seen["reader"] = type(error)
        finally:
            reader_done.set()

    with trio.fail_after(60):
        async with hosts(dialer_kind, listener_kind) as pair:
            serve(pair, reader)
            stream = await pair.open()
            block = bytes(256 * 1024)
            try:
                for sent in range(4 * MIB, 1 << 40, len(block)):
                    await stream.write(block)
                    if who_resets == "writer" and sent >= 8 * MIB:
                        await stream.reset()
                        seen["writer"] = StreamReset
                        break
            except StreamError as error:
                seen["writer"] = type(error)
            await reader_done.wait()
    if who_resets == "writer":
        # Stock answers read(n) of a stream the peer reset with the end of the
        # stream (when nothing is buffered), and ours does the same because
        # callers rely on it; the writer never ended it, so the reader knows.
        assert seen["reader"] in (StreamReset, StreamEOF)
        seen["reader"] = StreamReset
    assert seen == {"reader": StreamReset, "writer": StreamReset}


# -- js-libp2p -------------------------------------------------------------------

JS_PACKAGES = (
    "libp2p@3.3.11",
    "@chainsafe/libp2p-noise@17.0.0",
    "@chainsafe/libp2p-yamux@8.0.1",
    "@libp2p/tcp@11.0.28",
)
# Node 20 lacks Promise.withResolvers, which js-libp2p 3 uses.
JS_POLYFILL = """\
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
"""
# listen: print our address, send back the sha256 (hex) of each stream's bytes.
# dial ADDR SIZE: send SIZE random bytes, print {sent: sha256 hex, reply: text}.
JS_PEER = """\
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createHash, randomBytes } from 'node:crypto'

const PROTOCOL = '__PROTOCOL__'
const [mode, target, sizeArg] = process.argv.slice(2)
const node = await createLibp2p({
  addresses: { listen: mode === 'listen' ? ['/ip4/127.0.0.1/tcp/0'] : [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()]
})

if (mode === 'listen') {
  await node.handle(PROTOCOL, async (stream) => {
    const hash = createHash('sha256')
    for await (const chunk of stream) hash.update(chunk.subarray())
    stream.send(new TextEncoder().encode(hash.digest('hex')))
    await stream.close()
  })
  console.log(node.getMultiaddrs()[0].toString())
  process.stdin.resume()
  process.stdin.on('end', async () => { await node.stop(); process.exit(0) })
} else {
  const stream = await node.dialProtocol(multiaddr(target), PROTOCOL)
  const size = Number(sizeArg)
  const hash = createHash('sha256')
  for (let sent = 0; sent < size;) {
    const chunk = randomBytes(Math.min(262144, size - sent))
    hash.update(chunk)
    sent += chunk.length
    if (!stream.send(chunk)) await stream.onDrain()
  }
  await stream.close()
  const parts = []
  for await (const chunk of stream) parts.push(Buffer.from(chunk.subarray()))
  console.log(JSON.stringify({ sent: hash.digest('hex'), reply: Buffer.concat(parts).toString() }))
  await node.stop()
}
""".replace("__PROTOCOL__", PROTOCOL)


@pytest.fixture
def js_peer(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs a js-libp2p peer; skips when node or npm can't provide one."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("js-libp2p interop needs node and npm on PATH")
    # The pytest cache keeps the install between runs; without it, install afresh.
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        root = cache.mkdir("js-libp2p-interop")
    else:
        root = tmp_path_factory.mktemp("js-libp2p-interop")
    if not (root / "node_modules" / "libp2p" / "package.json").exists():
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), *JS_PACKAGES],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.skip(f"npm could not install {', '.join(JS_PACKAGES)}: {result.stderr[-500:]}")
    (root / "polyfill.mjs").write_text(JS_POLYFILL)
    (root / "peer.mjs").write_text(JS_PEER)
    return [node, "--import", str(root / "polyfill.mjs"), str(root / "peer.mjs")]


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise EOFError(f"the js peer ended before printing its address: {line!r}")
        line += chunk
    return line.decode().strip()


async def test_ours_dials_js_libp2p(js_peer: list[str]) -> None:
    data = pattern(16 * MIB)
    with trio.fail_after(120):
        process = await trio.lowlevel.open_process(
            [*js_peer, "listen"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None and process.stdin is not None
            address = multiaddr.Multiaddr(await _read_line(process.stdout))
            host = make_host("ours")
            async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                info = info_from_p2p_addr(address)
                await host.connect(info)
                assert_our_classes(host, "ours")
                stream = await host.new_stream(info.peer_id, [PROTOCOL])
                await write_in_blocks(stream, data)
                assert isinstance(stream, NetStream)
                await stream.close_write()
                digest = await read_exactly(stream, 64)
            assert digest.decode() == hashlib.sha256(data).hexdigest()
            await process.stdin.aclose()
            await process.wait()
        finally:
            process.kill()


async def test_js_libp2p_dials_ours(js_peer: list[str]) -> None:
    muxers: list[object] = []

    async def digest_back(stream: INetStream) -> None:
        muxers.append(stream.muxed_conn)
        hasher = hashlib.sha256()
        await read_to_end(stream, hasher)
        await stream.write(hasher.hexdigest().encode())
        await stream.close()

    with trio.fail_after(120):
        host = make_host("ours")
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            host.set_stream_handler(PROTOCOL, digest_back)
            address = f"{host.get_addrs()[0]}"
            result = await trio.run_process(
                [*js_peer, "dial", address, str(16 * MIB)], capture_stdout=True
            )
    [muxer] = muxers
    assert isinstance(muxer, FastYamux) and isinstance(muxer.secured_conn, NoiseSession)
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert report["reply"] == report["sent"]
