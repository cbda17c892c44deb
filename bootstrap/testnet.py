"""Local testnets: N real ``zhtp run`` processes on 127.0.0.1, one bootstrap.

Theory of operation
-------------------
``up`` writes one data dir per node (``<dir>/node-<i>``) with a config that
listens on ``/ip4/127.0.0.1/tcp/0``, skips the packaged bootstrap list and
uses short maintenance intervals. node-0 starts first and is the bootstrap
peer; once its control API answers, every other node is started at once with
node-0's full multiaddr as its only bootstrap peer. ``up`` returns when every
node's routing table holds ``min_peers`` entries. Nodes that join at the same
moment often miss each other until their first bucket refresh; a node whose
table has stopped growing short of ``min_peers`` is asked (through its API) to
look up a random key, the same work that refresh would do, so ``up`` does not
wait ``bucket_refresh_interval`` for it.

The launcher owns the processes it starts until ``up`` returns: a timeout, a
node that exits early or an interrupt stops all of them before the error is
raised. After that, ``<dir>/testnet.json`` owns them. It is written (atomically)
as soon as the first process exists and completed once the net is up, so
``down`` can stop a testnet whose launcher was killed half-way.

``down`` signals only processes that are still the node they were: before a
pid is signalled, ``/proc/<pid>/cmdline`` must name that node's data dir, so a
pid the kernel has since given to another program is never touched (Linux
only; where ``/proc`` is missing no process is considered ours). ``down`` keeps
``testnet.json`` and marks it ``"stopped": true``, so a second ``down`` is a
no-op and ``status`` still lists the nodes; ``up`` may reuse the directory
(keeping each node's identity) once none of its processes runs.

``testnet.json`` holds ``{"nodes": [{"name", "peer_id", "multiaddrs",
"data_dir", "api_port", "pid"}, ...], "created": <ISO time>}`` plus
``"startup_seconds"`` once up, ``"starting": true`` while ``up`` runs and
``"stopped": true`` after ``down`` (or a failed ``up``). Each node's
``node.log`` holds the output of its latest run.

Talking to nodes goes through :class:`node.api.client.ApiClient`; this module
imports no libp2p.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.api.client import API_PORT_FILE, ApiClient, ApiFailed, ApiUnavailable
from node.config import ConfigError, NodeConfig, write_config

STATE_FILE = "testnet.json"
NODE_LOG = "node.log"
MAX_NODES = 64
DEFAULT_MIN_PEERS_CAP = 10

# Testnet-friendly maintenance: a small net heals and republishes within a minute.
TESTNET_SETTINGS: Mapping[str, Any] = {
    "listen_addrs": ("/ip4/127.0.0.1/tcp/0",),
    "use_default_bootstrap": False,
    "bucket_refresh_interval": 30.0,
    "republish_interval": 60.0,
    "expiry_check_interval": 10.0,
    # A testnet has no chain to earn tokens from: every node starts funded,
    # so storage deals are real from the first put.
    "faucet_tokens": 1_000_000,
    # Deals judged every 30 s for half an hour, so a testnet shows audits,
    # payments and reputation moving while one watches. (Audit work grows
    # with the number of contracts: shorter periods saturate a laptop once
    # a few hundred puts have been made.)
    "deal_period": 30.0,
    "deal_duration": 1800.0,
    "audits_per_period": 1,
}

POLL_INTERVAL = 0.2
# A table that has not grown for this long gets a lookup nudge (see _nudge).
NUDGE_AFTER = 2.0
API_TIMEOUT = 5.0
STOP_GRACE = 10.0
KILL_WAIT = 2.0
LOG_TAIL_LINES = 4

# Node processes this process started and has not yet collected, by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class TestnetError(Exception):
    """A testnet that cannot be started, inspected or stopped; the message says why."""

    __test__ = False  # not a pytest test class, despite the name


# -- processes ------------------------------------------------------------------------


def _owns(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live ``... --data-dir <data_dir> run`` process.

    A zombie has an empty command line and so counts as gone.
    """
    if pid <= 0:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(data_dir).encode() in args and b"run" in args


def _signal(pid: int, data_dir: Path, sig: signal.Signals) -> bool:
    if not _owns(pid, data_dir):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(targets: list[tuple[int, Path]], timeout: float) -> list[tuple[int, Path]]:
    """Wait up to ``timeout`` s for the targets to exit; return those still running."""
    deadline = time.monotonic() + timeout
    remaining = list(targets)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid, _ in remaining:
            _reap(pid)
        remaining = [(pid, d) for pid, d in remaining if _owns(pid, d)]
    return remaining


def _stop_pids(targets: list[tuple[int, Path]]) -> list[int]:
    """SIGTERM every target still ours, wait up to STOP_GRACE s, SIGKILL the rest.

    Returns the pids that were signalled.
    """
    signalled = [(pid, d) for pid, d in targets if _signal(pid, d, signal.SIGTERM)]
    stubborn = _wait_gone(signalled, STOP_GRACE)
    for pid, d in stubborn:
        _signal(pid, d, signal.SIGKILL)
    # SIGKILL cannot be refused, but the kernel takes a moment to tear a process down.
    _wait_gone(stubborn, KILL_WAIT)
    for pid, _ in signalled:
        _reap(pid)
    return [pid for pid, _ in signalled]


def _reap(pid: int) -> None:
    """Collect ``pid`` if this process started it and it has exited.

    Only our own ``Popen`` objects are waited on, never ``waitpid(-1)``: other
    children of a process that embeds the launcher are not ours to collect.
    """
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a node log, on one line; traceback frames and rules dropped."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = []
    for line in text.splitlines():
        # Exception groups draw boxes with | and +-; carets underline code.
        line = line.strip().lstrip("|+- ").strip()
        if line and line.strip("^~-") and not line.startswith("File "):
            kept.append(line)
    return " | ".join(kept[-lines:]) if kept else "(log is empty)"


# -- the state file ----------------------------------------------------------------------


def _state_path(dir: Path) -> Path:
    return dir / STATE_FILE


def _write_state(dir: Path, state: Mapping[str, Any]) -> None:
    path = _state_path(dir)
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    with open(tmp, "w") as handle:
        json.dump(state, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_state(dir: Path) -> dict[str, Any]:
    path = _state_path(dir)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise TestnetError(
            f"no testnet in {dir} (no {STATE_FILE}; start one with `zhtp testnet up`)"
        ) from None
    except (OSError, ValueError) as error:
        raise TestnetError(f"cannot read {path}: {error}") from error
    if not isinstance(state, dict) or not isinstance(state.get("nodes"), list):
        raise TestnetError(f"{path} is not a testnet file")
    return state


def _node_targets(state: Mapping[str, Any]) -> list[tuple[int, Path]]:
    out = []
    for node in state["nodes"]:
        try:
            out.append((int(node["pid"]), Path(node["data_dir"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


# -- up ------------------------------------------------------------------------------


@dataclass
class _Node:
    index: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    api: ApiClient | None = None
    info: dict[str, Any] = field(default_factory=dict)
    peers: int = 0
    # When the table size last changed, and when we last asked for a lookup.
    changed_at: float = 0.0
    nudged_at: float = 0.0

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def log(self) -> Path:
        return self.data_dir / NODE_LOG

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peer_id": self.info.get("peer_id"),
            "multiaddrs": list(self.info.get("addrs", [])),
            "data_dir": str(self.data_dir),
            "api_port": self.info.get("api_port"),
            "pid": self.process.pid if self.process is not None else None,
        }

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None


class _Progress:
    """A rich progress display (on a terminal) of nodes answering and tables filled."""

    def __init__(self, enabled: bool, nodes: int, min_peers: int) -> None:
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True)
        if not console.is_terminal:
            return  # a log file or CI gets no redraw noise
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._started = self._progress.add_task("nodes answering", total=nodes)
        self._filled = self._progress.add_task(f"tables with >= {min_peers} peers", total=nodes)

    @contextlib.contextmanager
    def shown(self) -> Iterator[_Progress]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            yield self

    def update(self, started: int, filled: int) -> None:
        if self._progress is not None:
            self._progress.update(self._started, completed=started)
            self._progress.update(self._filled, completed=filled)


def _check_not_running(dir: Path, count: int) -> None:
    if _state_path(dir).exists():
        try:
            state = _read_state(dir)
        except TestnetError:
            state = {"nodes": []}
        running = [pid for pid, d in _node_targets(state) if _owns(pid, d)]
        if running:
            raise TestnetError(
                f"a testnet is already running in {dir} (pids {', '.join(map(str, running))}); "
                f"stop it with `zhtp testnet down --dir {dir}`"
            )
    for i in range(count):
        data_dir = dir / f"node-{i}"
        if not (data_dir / API_PORT_FILE).exists():
            continue
        # Another process may run this node outside the testnet file.
        try:
            with ApiClient(data_dir, timeout=2.0) as api:
                info = api.get_json("/api/v0/id")
        except (ApiUnavailable, ApiFailed):
            (data_dir / API_PORT_FILE).unlink(missing_ok=True)  # left by a crashed node
            continue
        raise TestnetError(
            f"node-{i} in {dir} is already running (peer {info.get('peer_id')}); stop it first"
        )


def _node_config(node: _Node, bootstrap: tuple[str, ...], overrides: Mapping[str, Any]) -> None:
    settings = {**TESTNET_SETTINGS, "bootstrap": bootstrap, **overrides}
    try:
        config = NodeConfig(data_dir=node.data_dir, **settings)
    except (ConfigError, TypeError) as error:
        raise TestnetError(f"bad testnet setting: {error}") from error
    node.data_dir.mkdir(parents=True, exist_ok=True)
    write_config(config)


def _spawn(node: _Node) -> None:
    (node.data_dir / API_PORT_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "node.cli", "--data-dir", str(node.data_dir), "run"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(node.log, "wb") as log:
        node.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _CHILDREN[node.process.pid] = node.process


def _poll(node: _Node, min_peers: int) -> bool:
    """Advance one node: check it lives, learn its identity, read its table size.

    Returns True once its routing table holds ``min_peers`` entries.
    """
    assert node.process is not None
    code = node.process.poll()
    if code is not None:
        raise TestnetError(
            f"{node.name} exited with status {code} during startup; "
            f"end of {node.log}: {_log_tail(node.log)}"
        )
    if node.api is None:
        if not (node.data_dir / API_PORT_FILE).exists():
            return False
        try:
            node.api = ApiClient(node.data_dir, timeout=API_TIMEOUT)
        except ApiUnavailable:
            return False
    try:
        if not node.info:
            node.info = node.api.get_json("/api/v0/id")
        if min_peers == 0:
            return True
        status = node.api.get_json("/api/v0/status")
    except ApiUnavailable:
        return False  # bound but not yet serving; try again next round
    except ApiFailed as error:
        raise TestnetError(f"{node.name} API failed: {error}") from error
    peers = int(status["routing_table_size"])
    now = time.monotonic()
    if peers != node.peers or not node.changed_at:
        node.peers, node.changed_at = peers, now
    if peers >= min_peers:
        return True
    if now - max(node.changed_at, node.nudged_at) >= NUDGE_AFTER:
        _nudge(node.api)
        node.nudged_at = time.monotonic()
    return False


def _nudge(api: ApiClient) -> None:
    """Have a node look up a random key, as its next bucket refresh would.

    Nodes that join at the same moment often learn of each other only at
    their first bucket refresh; one lookup through the API does the same
    work now instead of ``bucket_refresh_interval`` seconds later.
    """
    with contextlib.suppress(ApiUnavailable, ApiFailed):
        api.get_json("/api/v0/dht/lookup", key=os.urandom(32).hex())


def _bootstrap_addr(node: _Node) -> str:
    addrs = [a for a in node.info.get("addrs", []) if a.startswith("/ip4/127.0.0.1/")]
    if not addrs:
        raise TestnetError(f"{node.name} reports no 127.0.0.1 address: {node.info.get('addrs')}")
    return str(addrs[0])


def up(
    dir: Path,
    nodes: int,
    *,
    min_peers: int | None = None,
    timeout: float = 120.0,
    progress: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start ``nodes`` node processes under ``dir``; return the testnet.json contents.

    Returns once every routing table holds ``min_peers`` peers (default
    ``min(nodes - 1, 10)``). Raises TestnetError, with every started process
    stopped again, on a bad argument, a timeout or a node that exits.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise TestnetError(f"a testnet has 1..{MAX_NODES} nodes, not {nodes}")
    wanted = min(nodes - 1, DEFAULT_MIN_PEERS_CAP) if min_peers is None else min_peers
    if not 0 <= wanted <= nodes - 1:
        raise TestnetError(
            f"min_peers must be 0..{nodes - 1} for a testnet of {nodes} nodes, not {wanted}"
        )
    if timeout <= 0:
        raise TestnetError("timeout must be positive")
    dir = dir.expanduser().resolve()
    try:
        dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TestnetError(f"cannot create {dir}: {error.strerror}") from error
    _check_not_running(dir, nodes)

    settings = dict(overrides or {})
    started = time.monotonic()
    deadline = started + timeout
    created = datetime.now(UTC).isoformat(timespec="seconds")
    members = [_Node(i, dir / f"node-{i}") for i in range(nodes)]

    def save(**extra: Any) -> dict[str, Any]:
        state = {
            "nodes": [m.record() for m in members if m.process is not None],
            "created": created,
            **extra,
        }
        _write_state(dir, state)
        return state

    display = _Progress(progress, nodes, wanted)
    try:
        with display.shown():
            first = members[0]
            _node_config(first, (), settings)
            _spawn(first)
            save(starting=True)
            # node-0 is everyone's bootstrap peer: it must answer before they start.
            while not _poll(first, 0):
                _wait(deadline, first, "to start")
            bootstrap = (_bootstrap_addr(first),)
            for member in members[1:]:
                _node_config(member, bootstrap, settings)
                _spawn(member)
            save(starting=True)
            ready: set[int] = set()
            while True:
                for member in members:
                    if member.index not in ready and _poll(member, wanted):
                        ready.add(member.index)
                display.update(sum(1 for m in members if m.info), len(ready))
                if len(ready) == nodes:
                    break
                laggard = min((m for m in members if m.index not in ready), key=lambda m: m.peers)
                _wait(deadline, laggard, f"to reach {wanted} peers (has {laggard.peers})")
        return save(startup_seconds=round(time.monotonic() - started, 2))
    except BaseException:
        spawned = [(m.process.pid, m.data_dir) for m in members if m.process is not None]
        if spawned:
            _stop_pids(spawned)
            save(stopped=True)
        raise
    finally:
        for member in members:
            member.close()


def _wait(deadline: float, node: _Node, what: str) -> None:
    if time.monotonic() >= deadline:
        raise TestnetError(
            f"timed out waiting for {node.name} {what}; end of {node.log}: {_log_tail(node.log)}"
        )
    time.sleep(POLL_INTERVAL)


# -- status and down ------------------------------------------------------------------------


def status(dir: Path) -> list[dict[str, Any]]:
    """One row per node: name, pid, peer_id, state, and peers/records when running."""
    dir = dir.expanduser().resolve()
    state = _read_state(dir)
    rows: list[dict[str, Any]] = []
    for node in state["nodes"]:
        data_dir = Path(node["data_dir"])
        pid = node.get("pid")
        running = isinstance(pid, int) and _owns(pid, data_dir)
        row: dict[str, Any] = {
            "name": node.get("name"),
            "pid": pid,
            "peer_id": node.get("peer_id"),
            "state": "running" if running else "stopped",
        }
        if running:
            try:
                with ApiClient(data_dir, timeout=API_TIMEOUT) as api:
                    info = api.get_json("/api/v0/status")
            except (ApiUnavailable, ApiFailed) as error:
                row["api_error"] = str(error)
            else:
                row["peers"] = info["routing_table_size"]
                row["records"] = info["records"]
        rows.append(row)
    return rows


def down(dir: Path) -> list[int]:
    """Stop exactly the node processes listed in ``testnet.json``; return their pids.

    The file is kept and marked ``"stopped": true``. Nodes already gone, and a
    second ``down``, are fine.
    """
    dir = dir.expanduser().resolve()
    state = _read_state(dir)
    stopped = _stop_pids(_node_targets(state))
    if not state.get("stopped"):
        state["stopped"] = True
        state.pop("starting", None)
        _write_state(dir, state)
    return stopped
