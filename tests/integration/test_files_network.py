"""Files over real nodes on loopback: put on one, get on another, lose holders, meet liars."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from node.content.address import Reference, parse_reference
from node.files.get import GetFailed, GetReport, read_file, resolve
from node.files.put import PutOptions, PutResult, put_file
from node.service import NodeService
from protocols.store.handlers import ShardSlice
from tests.integration.netutil import RunningNode, start_network, wait_for

NODES = 8
SEGMENT = 256 << 10


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def put(node: RunningNode, data: bytes, *, public: bool = False) -> PutResult:
    service = node.service
    options = PutOptions(
        policy=service.config.policy("warm"), segment_size=SEGMENT, public=public, name="f.bin"
    )
    return await put_file(service.files, chunks_of(data), options)


async def get(node: RunningNode, ref: Reference) -> tuple[bytes, GetReport]:
    out = bytearray()

    async def write(chunk: bytes) -> None:
        out.extend(chunk)

    manifest = await resolve(node.service.files, ref)
    report = await read_file(node.service.files, manifest, ref.key, write)
    return bytes(out), report


def holders_of(nodes: list[RunningNode], address: bytes) -> list[RunningNode]:
    return [n for n in nodes if n.service.shards.has(address)]


async def joined(nodes: list[RunningNode]) -> None:
    for node in nodes:
        await wait_for(lambda n=node: len(n.service.dht.table) >= NODES - 2)


async def test_put_on_one_node_get_on_another(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            data = os.urandom(3 * SEGMENT + 1234)
            result = await put(nodes[1], data)
            assert result.segments == 4 and result.under_replicated_segments == 0
            assert result.capability is not None
            ref = parse_reference(result.capability)
            got, _ = await get(nodes[6], ref)
            assert got == data
            # Eight nodes: every shard of a segment sits on a different node.
            manifest = await resolve(nodes[6].service.files, ref)
            for segment in manifest.segments:
                holders = [h.peer_id for a in segment.shard_addresses for h in holders_of(nodes, a)]
                assert len(holders) == len(set(holders)) == 6
            nursery.cancel_scope.cancel()


async def test_public_file_reads_with_the_cid_alone(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            data = b"the same words again and again " * 20_000
            result = await put(nodes[2], data, public=True)
            assert result.capability is None
            got, _ = await get(nodes[5], parse_reference(result.cid))
            assert got == data
            nursery.cancel_scope.cancel()


async def test_two_holders_stop_and_the_file_still_reads(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            data = os.urandom(2 * SEGMENT)
            result = await put(nodes[0], data)
            assert result.capability is not None
            ref = parse_reference(result.capability)
            manifest = await resolve(nodes[7].service.files, ref)
            first = manifest.segments[0].shard_addresses
            # Stop the holders of data shards 0 and 1 (never the reader).
            victims = {
                holders_of(nodes, first[0])[0].peer_id,
                holders_of(nodes, first[1])[0].peer_id,
            }
            reader = next(n for n in nodes[1:] if n.peer_id not in victims)
            for node in nodes:
                if node.peer_id in victims:
                    await node.stop()
            got, report = await get(reader, ref)
            assert got == data
            assert report.failed_fetches >= 1
            nursery.cancel_scope.cancel()


async def test_a_lying_holder_is_detected_and_skipped(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            data = os.urandom(SEGMENT)
            result = await put(nodes[0], data)
            assert result.capability is not None
            ref = parse_reference(result.capability)
            manifest = await resolve(nodes[3].service.files, ref)
            liar = holders_of(nodes, manifest.segments[0].shard_addresses[0])[0]
            if liar is nodes[3]:
                liar = holders_of(nodes, manifest.segments[0].shard_addresses[1])[0]
            honest_read = liar.service.holder.read

            async def lying_read(
                address: bytes, offset: int, length: int | None
            ) -> ShardSlice | None:
                piece = await honest_read(address, offset, length)
                if piece is None:
                    return None
                return ShardSlice(bytes(len(piece.data)), piece.total_size)

            liar.service.holder.read = lying_read  # type: ignore[method-assign]
            liar.service.store_handlers._holder = liar.service.holder  # same object, patched
            got, report = await get(nodes[3], ref)
            assert got == data
            assert report.bad_copies == 1
            nursery.cancel_scope.cancel()


async def test_holders_announce_themselves_as_providers(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            result = await put(nodes[0], os.urandom(1000), public=True)
            manifest = await resolve(nodes[4].service.files, parse_reference(result.cid))
            address = manifest.segments[0].shard_addresses[2]
            holder = holders_of(nodes, address)[0]
            searcher: NodeService = nodes[5].service

            async def announced() -> bool:
                providers = await searcher.dht.find_providers(address)
                return holder.peer_id in {p.peer_id for p in providers}

            while not await announced():  # noqa: ASYNC110 - state lives in other nodes
                await trio.sleep(0.2)
            nursery.cancel_scope.cancel()


async def test_three_holders_stopped_is_a_clean_error(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            result = await put(nodes[0], os.urandom(SEGMENT // 2))
            assert result.capability is not None
            ref = parse_reference(result.capability)
            manifest = await resolve(nodes[7].service.files, ref)
            addresses = manifest.segments[0].shard_addresses
            holders = {h.peer_id for a in addresses for h in holders_of(nodes, a)}
            reader = next(n for n in nodes if n.peer_id not in holders)
            # Stop holders until only k-1 = 3 shards of the segment remain.
            victims = [n for n in nodes if n.peer_id in holders][:3]
            for node in victims:
                await node.stop()
            with pytest.raises(GetFailed, match=r"segment 0: only 3 of the 4 shards needed"):
                await get(reader, ref)
            nursery.cancel_scope.cancel()


async def test_repair_rebuilds_what_stopped_holders_took(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            await joined(nodes)
            data = os.urandom(SEGMENT)
            result = await put(nodes[0], data)
            assert result.capability is not None
            ref = parse_reference(result.capability)
            manifest = await resolve(nodes[0].service.files, ref)
            addresses = manifest.segments[0].shard_addresses
            first = [holders_of(nodes, a)[0] for a in addresses[:2]]
            # The repairer holds no shard of the segment, so stopping the
            # holders of shards 2 and 3 below never stops the repairer.
            repairer = next(n for n in nodes if not any(n.service.shards.has(a) for a in addresses))
            for node in first:
                await node.stop()
            live = [n for n in nodes if n not in first]
            report = await repairer.service.repair(ref.digest)
            assert (report.shards_missing, report.shards_rebuilt) == (2, 2)
            # Every shard has a live holder again: two more holders may go.
            for address in addresses:
                assert any(n.service.shards.has(address) for n in live)
            second = [
                next(h for h in holders_of(live, a) if h is not repairer) for a in addresses[2:4]
            ]
            for node in second:
                await node.stop()
            got, _ = await get(repairer, ref)
            assert got == data
            nursery.cancel_scope.cancel()
