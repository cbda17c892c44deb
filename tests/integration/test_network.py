"""A network of real nodes on loopback: joining, lookups, replicated records."""

from __future__ import annotations

from pathlib import Path

import trio

from node.records.names import make_name_record
from node.records.validators import blob_key
from protocols.kad.keyspace import distance, kad_id
from tests.integration.netutil import RunningNode, start_network, start_node, wait_for

NODES = 12


async def test_nodes_join_and_lookup_finds_the_true_closest(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # k=4 so "the k closest" is a strict subset of the 11 other nodes.
            nodes = await start_network(nursery, tmp_path, NODES, k=4)
            for node in nodes:
                await wait_for(lambda n=node: len(n.service.dht.table) >= 3)
            ids = [n.peer_id for n in nodes]
            for searcher in (nodes[3], nodes[-1]):
                for target in (ids[0], ids[7], b"some record key"):
                    report = await searcher.service.dht.lookup(target)
                    others = [i for i in ids if i != searcher.peer_id]
                    truth = sorted(others, key=lambda i: distance(kad_id(i), kad_id(target)))[:4]
                    assert [c.peer_id for c in report.closest] == truth
            nursery.cancel_scope.cancel()


async def test_every_table_fills(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, NODES)
            # With k=20 and 12 nodes every node can know every other one.
            for node in nodes:
                await wait_for(lambda n=node: len(n.service.dht.table) >= NODES - 2)
            for node in nodes:
                assert node.peer_id not in node.service.dht.table
            nursery.cancel_scope.cancel()


async def _holders(nodes: list[RunningNode], key: bytes) -> list[RunningNode]:
    return [n for n in nodes if n.service.store.get(key) is not None]


async def test_blob_put_get_survives_putter_and_is_rereplicated(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(
                nursery,
                tmp_path,
                NODES,
                replication=3,
                republish_interval=1.0,
                expiry_check_interval=0.5,
            )
            for node in nodes:
                await wait_for(lambda n=node: len(n.service.dht.table) >= NODES - 2)
            value = b"the quick brown fox" * 100
            key = blob_key(value)
            putter, getter = nodes[2], nodes[9]
            report = await putter.service.dht.put(key, value)
            assert report.accepted == 3
            got = await getter.service.dht.get(key)
            assert got.value == value

            # The putter leaves: the record is still found.
            await putter.stop()
            live = [n for n in nodes if n is not putter]
            got = await getter.service.dht.get(key)
            assert got.value == value

            # Two holders leave: the survivors re-replicate to the new closest set.
            holders = [n for n in await _holders(live, key) if n is not getter]
            for gone in holders[:2]:
                await gone.stop()
                live.remove(gone)
            target = kad_id(key)
            closest3 = sorted(live, key=lambda n: distance(kad_id(n.peer_id), target))[:3]

            def replicated() -> bool:
                return all(n.service.store.get(key) is not None for n in closest3)

            await wait_for(replicated, interval=0.2)
            got = await live[-1].service.dht.get(key)
            assert got.value == value
            nursery.cancel_scope.cancel()


async def test_name_record_update_wins_everywhere(tmp_path: Path) -> None:
    from node.identity import Identity

    owner = Identity.generate(with_mldsa=False)
    far_future = 4_000_000_000_000
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_network(nursery, tmp_path, 8, replication=5)
            for node in nodes:
                await wait_for(lambda n=node: len(n.service.dht.table) >= 6)
            key, v1 = make_name_record(owner, "site", b"version 1", 1, far_future)
            _, v2 = make_name_record(owner, "site", b"version 2", 2, far_future)
            assert (await nodes[1].service.dht.put(key, v1)).accepted >= 3
            assert (await nodes[2].service.dht.put(key, v2)).accepted >= 3
            # Replaying the old record is refused by every holder of the new one.
            replayer = next(n for n in nodes if n.service.store.get(key) is None)
            replay = await replayer.service.dht.put(key, v1)
            assert len(replay.failures) >= 3
            # A refusal is a reset: libp2p streams carry no error message.
            assert set(replay.failures.values()) == {"refused"}
            for node in nodes:
                got = await node.service.dht.get(key)
                assert got.value == v2
            # get() repaired the replayer's stale local copy too.
            for node in await _holders(nodes, key):
                stored = node.service.store.get(key)
                assert stored is not None and stored.value == v2
            nursery.cancel_scope.cancel()


async def test_lone_node_runs_alone(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # A bootstrap peer that does not exist: a free port nobody listens on.
            ghost = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWH7pcjhU4Ef3cbAumnsGKonewxCe787iC7iXg9y1pDBAN"
            node = await start_node(nursery, tmp_path / "alone", bootstrap=(ghost,))
            assert node.service.bootstrap_result.configured == 1
            assert node.service.bootstrap_result.reached == 0
            assert len(node.service.dht.table) == 0
            value = b"kept locally"
            report = await node.service.dht.put(blob_key(value), value)
            assert report.accepted == 1 and report.target == 1
            nursery.cancel_scope.cancel()
