"""Real py-libp2p nodes on 127.0.0.1 in one trio run, for integration tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from node.config import NodeConfig
from node.service import NodeService

# Short timers so replication and refresh happen within a test's patience.
FAST = {
    "listen_addrs": ("/ip4/127.0.0.1/tcp/0",),
    "use_default_bootstrap": False,
    "request_timeout": 2.0,
    "dial_timeout": 2.0,
    "bucket_refresh_interval": 30.0,
    "republish_interval": 3600.0,
    "expiry_check_interval": 3600.0,
    # The file and DHT suites test storage itself; market suites turn it on.
    "require_contracts": False,
}


@dataclass
class RunningNode:
    service: NodeService
    scope: trio.CancelScope
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def peer_id(self) -> bytes:
        return self.service.peer_id.to_bytes()

    @property
    def addr(self) -> str:
        return self.service.full_addrs()[0]

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def start_node(
    nursery: trio.Nursery, data_dir: Path, *, bootstrap: tuple[str, ...] = (), **overrides: Any
) -> RunningNode:
    config = NodeConfig(data_dir=data_dir, bootstrap=bootstrap, **{**FAST, **overrides})
    service = NodeService(config)
    node = RunningNode(service, trio.CancelScope())

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with node.scope:
                await service.run(task_status=task_status)
        finally:
            node.stopped.set()

    await nursery.start(run)
    return node


async def start_network(
    nursery: trio.Nursery, root: Path, count: int, **overrides: Any
) -> list[RunningNode]:
    """Node 0 first, then the rest bootstrapping from it, a few at a time."""
    first = await start_node(nursery, root / "node-0", **overrides)
    nodes = [first]
    for i in range(1, count):
        nodes.append(
            await start_node(nursery, root / f"node-{i}", bootstrap=(first.addr,), **overrides)
        )
    return nodes


async def wait_for(predicate: Any, *, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; the test's ``trio.fail_after`` bounds it."""
    while not predicate():  # noqa: ASYNC110 - state lives in other tasks
        await trio.sleep(interval)
