"""The node: one libp2p host serving ping, Kademlia and shard storage, and the API.

``NodeService.run`` owns every task of a running node. Resources: the libp2p
host (TCP listeners), ``records.sqlite`` (records, shard index, uploads),
``shards/`` (one file per shard) and ``api.port`` in the data dir.
Readiness is reported with ``task_status.started()`` once the host listens,
the API answers and bootstrapping has been attempted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from bootstrap.peers import default_peers, parse_peer_addrs
from node.api.client import API_PORT_FILE
from node.config import NodeConfig
from node.content.errors import ContentError
from node.content.manifest import decode_manifest, manifest_record_key
from node.dht import Dht, dialable
from node.files.get import GetFailed, NotFound
from node.files.network import FileNetwork
from node.files.node_network import NodeFileNetwork
from node.files.repair import RepairReport, repair_file
from node.host import StreamOpener as HostStreamOpener
from node.host import build_host, load_or_create_key, peer_id_of, set_handler, stream_peer
from node.identity import IDENTITY_PREFIX, IdentityRecordValidator
from node.market.deals import DealPolicy
from node.market.desk import ProviderState
from node.market_node import ContractedFileNetwork, NodeMarket, node_signing_key, wall_ms
from node.records.book import RecordBook
from node.records.contracts import CONTRACT_PREFIX, ContractRecordValidator
from node.records.names import NAME_PREFIX, NameValidator
from node.records.store import RecordStore
from node.records.tags import TAG_PREFIX, TagIndexValidator
from node.records.validators import (
    BLOB_PREFIX,
    MANIFEST_PREFIX,
    BlobValidator,
    ManifestValidator,
    NamespacedValidator,
)
from node.storage.atomic import write_file_atomically
from node.storage.holder import LocalShardHolder
from node.storage.shards import ShardStore
from node.storage.uploads import UploadLog
from protocols import ids
from protocols.framing import PEER_FAILURES, Counters, StreamGate, serve_stream
from protocols.kad.keyspace import distance, kad_id
from protocols.kad.messages import decode_message, encode_message
from protocols.market.client import MarketClient
from protocols.market.session import serve_market_stream
from protocols.ping.messages import NodeStatus, Tier, decode_ping, encode_pong
from protocols.ping.service import PingHandler, ping
from protocols.store import ShardCorrupt
from protocols.store.client import StoreClient
from protocols.store.handlers import StoreHandlers
from protocols.store.session import serve_store_stream

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

RECORDS_DB = "records.sqlite"
SHARDS_DIR = "shards"
# 64 MiB segments (files above 4 GiB) over k=4 give 16 MiB shards; a holder
# buffers one upload in memory until it verifies, so the cap also bounds that.
MAX_SHARD_SIZE = (16 << 20) + (64 << 10)
ANNOUNCE_QUEUE = 4096
ANNOUNCE_WORKERS = 4

TIERS = {"hot": Tier.HOT, "warm": Tier.WARM, "cold": Tier.COLD, "archive": Tier.ARCHIVE}


# A failed repair of one file is logged; the loop goes on with the next.
REPAIR_FAILURES: tuple[type[BaseException], ...] = (GetFailed, ContentError, *PEER_FAILURES)


def package_version() -> str:
    try:
        return version("zhtp")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _local_ips() -> list[str]:
    """IPv4 addresses of this machine, loopback first, for 0.0.0.0 listeners."""
    found = ["127.0.0.1"]
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in found and not ip.startswith("127."):
            found.append(ip)
    return found


def expand_unspecified(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Replace 0.0.0.0 listen addresses by this machine's addresses, so peers can dial them."""
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        text = str(addr)
        if text.startswith("/ip4/0.0.0.0/"):
            rest = text[len("/ip4/0.0.0.0") :]
            out.extend(multiaddr.Multiaddr(f"/ip4/{ip}{rest}") for ip in _local_ips())
        else:
            out.append(addr)
    return out


class ListenError(Exception):
    """None of the configured listen addresses could be bound."""


@dataclass(frozen=True)
class BootstrapResult:
    configured: int
    reached: int


class NodeService:
    """A running ZHTP node. Start it with ``await nursery.start(service.run)``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # Private to its owner: the database holds capabilities (secret keys).
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(config.data_dir / RECORDS_DB)
        self.key_pair = load_or_create_key(config.data_dir)
        self.peer_id: ID = peer_id_of(self.key_pair)
        self.host = build_host(
            self.key_pair, dial_timeout=config.dial_timeout, addrs_factory=expand_unspecified
        )
        self.counters = {
            ids.KAD: Counters(),
            ids.PING: Counters(),
            ids.STORE: Counters(),
            ids.MARKET: Counters(),
            "market": Counters(),
            "dht": Counters(),
            "files": Counters(),
        }
        db_path = config.data_dir / RECORDS_DB
        self.store = RecordStore(db_path)
        self.shards = ShardStore(
            config.data_dir / SHARDS_DIR, db_path, max_bytes=config.max_storage_bytes
        )
        self.uploads = UploadLog(db_path)
        validator = NamespacedValidator(
            {
                BLOB_PREFIX: BlobValidator(config.max_record_size),
                MANIFEST_PREFIX: ManifestValidator(config.max_record_size),
                IDENTITY_PREFIX: IdentityRecordValidator(),
                NAME_PREFIX: NameValidator(),
                TAG_PREFIX: TagIndexValidator(),
                CONTRACT_PREFIX: ContractRecordValidator(),
            }
        )
        self.book = RecordBook(self.store, validator)
        self.open_stream = HostStreamOpener(self.host)
        self.dht = Dht(
            config=config,
            local_peer_id=self.peer_id.to_bytes(),
            open_stream=self.open_stream,
            book=self.book,
            self_addrs=self.listen_addrs,
            peer_addrs=self.known_addrs,
            counters=self.counters["dht"],
        )
        self.ping_handler = PingHandler(self.status)
        # Newly stored shards wait here to be announced with ADD_PROVIDER; a
        # burst larger than the queue is caught up by the reprovide loop.
        self._announce_send, self._announce_receive = trio.open_memory_channel[bytes](
            ANNOUNCE_QUEUE
        )
        self.holder = LocalShardHolder(
            self.shards,
            max_shard_size=MAX_SHARD_SIZE,
            on_stored=self._queue_announce,
            # Under the market a shard is stored only under a contract of ours.
            admit=self._admits if config.require_contracts else None,
        )
        self.store_handlers = StoreHandlers(self.holder)
        self.store_client = StoreClient(self.open_stream)
        self.files = NodeFileNetwork(
            dht=self.dht,
            client=self.store_client,
            holder=self.holder,
            local_peer_id=self.peer_id.to_bytes(),
            self_addrs=self.listen_addrs,
        )
        self.market = NodeMarket(
            db_path=db_path,
            party_id=self.peer_id.to_bytes(),
            key=node_signing_key(self.key_pair.private_key.to_bytes()),
            pricing=config.pricing,
            tier_percent={
                p.name: p.price_percent for p in config.tier_policy if p.name in config.tiers
            },
            quote_validity_ms=int(config.quote_validity * 1000),
            deal_policy=DealPolicy(
                duration_ms=int(config.deal_duration * 1000),
                period_ms=int(config.deal_period * 1000),
                audits_per_period=config.audits_per_period,
            ),
            provider_state=self._provider_state,
            client=MarketClient(self.open_stream),
            read_shard=self._read_shard_for_audit,
            ping=lambda peer_id, addrs: ping(self.open_stream, peer_id, addrs),
            fetch_range=lambda peer_id, addrs, address, offset, length: (
                self.store_client.fetch_shard(peer_id, addrs, address, offset, length)
            ),
            publish_record=self._publish_record,
            peer_addrs=self.known_addrs,
            counters=self.counters["market"],
        )
        self.bootstrap_result = BootstrapResult(0, 0)
        self.api_port: int | None = None
        self._gates = {
            ids.KAD: StreamGate(ids.KAD_LIMITS.max_streams_per_peer),
            ids.PING: StreamGate(ids.PING_LIMITS.max_streams_per_peer),
            ids.STORE: StreamGate(ids.STORE_LIMITS.max_streams_per_peer),
            ids.MARKET: StreamGate(ids.MARKET_LIMITS.max_streams_per_peer),
        }

    # -- facts about this node ---------------------------------------------

    def listen_addrs(self) -> tuple[bytes, ...]:
        """Our dialable transport addresses (without /p2p), as binary multiaddrs."""
        suffix = multiaddr.Multiaddr(f"/p2p/{self.peer_id.to_base58()}")
        out = []
        for addr in self.host.get_addrs():
            if str(addr).endswith(str(suffix)):
                addr = addr.decapsulate(suffix)
            out.append(addr.to_bytes())
        return dialable(out)

    def full_addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs() if "/ip4/0.0.0.0/" not in str(a)]

    def known_addrs(self, peer_id: bytes) -> tuple[bytes, ...]:
        """Transport addresses the peerstore (identify) has for a peer, without /p2p."""
        pid = ID(peer_id)
        try:
            addrs = self.host.get_peerstore().addrs(pid)
        except Exception:  # the peerstore raises PeerStoreError for unknown peers
            return ()
        suffix = multiaddr.Multiaddr(f"/p2p/{pid.to_base58()}")
        out = []
        for addr in addrs:
            if str(addr).endswith(str(suffix)):
                addr = addr.decapsulate(suffix)
            out.append(addr.to_bytes())
        return tuple(out)

    def free_storage(self) -> int:
        try:
            disk_free = shutil.disk_usage(self.config.data_dir).free
        except OSError:
            disk_free = 0
        return min(self.shards.free_bytes(), disk_free)

    def _admits(self, address: bytes, contract_id: bytes) -> bool:
        return self.market.admits(address, contract_id)

    async def _read_shard_for_audit(self, address: bytes) -> bytes | None:
        try:
            found = await self.holder.read(address, 0, None)
        except ShardCorrupt:
            return None  # quarantined by the store: the audit fails, as it should
        return None if found is None else found.data

    async def _publish_record(self, key: bytes, value: bytes) -> int:
        report = await self.dht.put(key, value)
        return report.accepted

    def _provider_state(self) -> ProviderState:
        capacity = self.config.max_storage_bytes
        free = self.free_storage()
        # Quality is measured per contract period; until deals run, none.
        return ProviderState(capacity_bytes=capacity, used_bytes=capacity - free, quality_bp=None)

    def status(self) -> NodeStatus:
        return NodeStatus(
            version=package_version(),
            listen_addrs=self.listen_addrs(),
            free_storage_bytes=self.free_storage(),
            tiers=tuple(TIERS[t] for t in self.config.tiers if t in TIERS),
        )

    # -- protocol handlers ---------------------------------------------------

    async def _serve_kad(self, stream: INetStream) -> None:
        await serve_stream(
            stream,
            stream_peer(stream),
            limits=ids.KAD_LIMITS,
            decode=decode_message,
            encode=encode_message,
            handler=self.dht.handlers.handle,
            counters=self.counters[ids.KAD],
            gate=self._gates[ids.KAD],
        )

    async def _serve_ping(self, stream: INetStream) -> None:
        await serve_stream(
            stream,
            stream_peer(stream),
            limits=ids.PING_LIMITS,
            decode=decode_ping,
            encode=encode_pong,
            handler=self.ping_handler.handle,
            counters=self.counters[ids.PING],
            gate=self._gates[ids.PING],
        )

    async def _serve_store(self, stream: INetStream) -> None:
        await serve_store_stream(
            stream,
            stream_peer(stream),
            self.store_handlers,
            self.counters[ids.STORE],
            self._gates[ids.STORE],
        )

    async def _serve_market(self, stream: INetStream) -> None:
        await serve_market_stream(
            stream,
            stream_peer(stream),
            self.market,
            self.counters[ids.MARKET],
            self._gates[ids.MARKET],
        )

    # -- announcing held shards ------------------------------------------------

    def _queue_announce(self, address: bytes) -> None:
        try:
            self._announce_send.send_nowait(address)
        except trio.WouldBlock:
            self.counters["files"].inc("announce_deferred")

    async def _announce(self, address: bytes) -> None:
        if self.config.require_contracts and not await self.market.verify_stored(address):
            return  # a contract named a wrong Merkle root: ended, not announced
        try:
            await self.dht.provide(address)
        except PEER_FAILURES:
            self.counters["files"].inc("announce_failed")
        else:
            self.counters["files"].inc("shards_announced")

    async def _announce_worker(self) -> None:
        async with self._announce_receive:
            async for address in self._announce_receive:
                await self._announce(address)

    async def _reprovide_loop(self) -> None:
        """Re-announce every held shard before provider records expire elsewhere."""
        while True:
            await trio.sleep(self.config.provider_ttl / 2)
            for address in await trio.to_thread.run_sync(self.shards.addresses):
                await self._announce(address)

    # -- repair ------------------------------------------------------------------

    async def repair(self, content_id: bytes) -> RepairReport:
        """Check one file and rebuild shards that lost every holder."""
        raw = await self.files.find_record(manifest_record_key(content_id))
        if raw is None:
            raise NotFound("no node has the manifest for this content ID")
        network: FileNetwork = self.files
        if self.config.require_contracts:
            network = ContractedFileNetwork(self.files, self.market)
        report = await repair_file(network, decode_manifest(raw))
        self.counters["files"].inc("shards_rebuilt", report.shards_rebuilt)
        if report.lost_segments:
            self.counters["files"].inc("segments_lost", len(report.lost_segments))
        return report

    async def _responsible_for(self, key: bytes) -> bool:
        """Whether this node is the closest live node to ``key`` (so it repairs it)."""
        found = await self.dht.lookup(key)
        target = kad_id(key)
        mine = distance(target, kad_id(self.peer_id.to_bytes()))
        return all(mine < distance(target, c.kad_id) for c in found.closest)

    async def _repair_loop(self) -> None:
        """Every repair interval, repair the files whose manifests this node is closest to."""
        while True:
            await trio.sleep(self.config.repair_interval * random.uniform(0.8, 1.2))
            keys = await trio.to_thread.run_sync(self.store.keys)
            for key in keys:
                if not key.startswith(MANIFEST_PREFIX):
                    continue
                try:
                    if await self._responsible_for(key):
                        await self.repair(key[len(MANIFEST_PREFIX) :])
                except REPAIR_FAILURES as error:
                    log.warning("repair of %s failed: %s", key[len(MANIFEST_PREFIX) :].hex(), error)

    # -- lifecycle -----------------------------------------------------------

    def bootstrap_peers(self) -> list[str]:
        peers = list(self.config.bootstrap)
        if self.config.use_default_bootstrap:
            peers += [p for p in default_peers() if p not in peers]
        return peers

    async def join(self) -> BootstrapResult:
        peers = parse_peer_addrs(self.bootstrap_peers())
        reached = await self.dht.bootstrap(peers)
        self.bootstrap_result = BootstrapResult(len(peers), reached)
        return self.bootstrap_result

    async def run(
        self,
        *,
        serve_api: Callable[..., Awaitable[None]] | None = None,
        task_status: TaskStatus[NodeService] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen_addrs]
        port_file = self.config.data_dir / API_PORT_FILE
        try:
            async with self.host.run(listen), trio.open_nursery() as nursery:
                if not self.host.get_addrs():
                    # py-libp2p logs a failed bind and carries on without a
                    # listener; a node nobody can dial must not pretend to run.
                    raise ListenError(
                        "could not listen on "
                        + ", ".join(self.config.listen_addrs)
                        + " (address in use or not available)"
                    )
                set_handler(self.host, ids.KAD, self._serve_kad)
                set_handler(self.host, ids.PING, self._serve_ping)
                report = await trio.to_thread.run_sync(self.shards.reconcile)
                if report.orphans_removed or report.missing:
                    log.warning("shard store reconciled at start-up: %s", report)
                set_handler(self.host, ids.STORE, self._serve_store)
                await trio.to_thread.run_sync(
                    self.market.fund_from_faucet, self.config.faucet_tokens, wall_ms()
                )
                set_handler(self.host, ids.MARKET, self._serve_market)
                await nursery.start(self.market.run_auditor)
                await nursery.start(self.dht.run)
                for _ in range(ANNOUNCE_WORKERS):
                    nursery.start_soon(self._announce_worker)
                nursery.start_soon(self._reprovide_loop)
                nursery.start_soon(self._repair_loop)
                if serve_api is not None:
                    # serve_api(node, *, task_status) reports the port it bound.
                    self.api_port = await nursery.start(serve_api, self)
                    write_file_atomically(port_file, f"{self.api_port}\n".encode(), mode=0o644)
                await self.join()
                task_status.started(self)
        finally:
            if self.api_port is not None:
                port_file.unlink(missing_ok=True)
            self.market.close()
            self.uploads.close()
            self.shards.close()
            self.store.close()


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite keeps the mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
