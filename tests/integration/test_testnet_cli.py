"""The local testnet, driven the way a developer drives it: through the CLI.

The ``slow`` tests start real ``zhtp run`` processes on 127.0.0.1. Every
process a test starts has the test's own temporary directory on its command
line, so cleanup can find and kill exactly those even when an assertion (or
``zhtp testnet down`` itself) fails. The unmarked tests check the launcher's
process bookkeeping with stand-in processes and start no node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrap import testnet
from bootstrap.testnet import STATE_FILE, TestnetError

ZHTP = [sys.executable, "-m", "node.cli"]
CLI_TIMEOUT = 180.0
NODES = 6


def zhtp(
    *args: str | Path | int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ZHTP, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zhtp: error: "), lines[0]
    return lines[0]


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie: a zombie's command line is empty."""
    return _cmdline(pid)[:1] not in ([], [b""])


def processes_under(root: Path) -> list[int]:
    """Live processes whose command line names a path under ``root``."""
    marker = str(root).encode()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and any(marker in arg for arg in _cmdline(int(entry.name)))
    ]


def kill_under(root: Path) -> None:
    for pid in processes_under(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Any]:
    """Start Python processes that sleep, with given arguments on their command lines."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, ignore_term: bool = False) -> subprocess.Popen[bytes]:
        code = "import signal, time\n"
        if ignore_term:
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += "print('ready', flush=True)\ntime.sleep(120)\n"
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def write_state(dir: Path, nodes: list[tuple[int, Path]]) -> None:
    dir.mkdir(parents=True, exist_ok=True)
    state = {
        "nodes": [
            {"name": f"node-{i}", "peer_id": None, "data_dir": str(d), "pid": pid}
            for i, (pid, d) in enumerate(nodes)
        ],
        "created": "2026-01-01T00:00:00+00:00",
    }
    (dir / STATE_FILE).write_text(json.dumps(state))


# -- bookkeeping, without nodes ----------------------------------------------------------


def test_up_rejects_bad_node_counts(tmp_path: Path) -> None:
    for count in (0, -1, testnet.MAX_NODES + 1):
        with pytest.raises(TestnetError, match=r"1\.\.64 nodes"):
            testnet.up(tmp_path / "net", count, progress=False)
    with pytest.raises(TestnetError, match="min_peers"):
        testnet.up(tmp_path / "net", 3, min_peers=3, progress=False)
    assert not (tmp_path / "net").exists()


def test_status_and_down_without_a_testnet_are_one_line_errors(tmp_path: Path) -> None:
    for command in ("status", "down"):
        result = zhtp("testnet", command, "--dir", tmp_path)
        assert result.returncode == 1
        assert "no testnet in" in one_error_line(result)


def test_down_never_signals_a_reused_pid(tmp_path: Path, stand_in: Any) -> None:
    # The pids in testnet.json now belong to other programs: one unrelated, one
    # a CLI command naming the same data dir (not the node itself).
    stranger = stand_in("unrelated", "run")
    client = stand_in("--data-dir", str(tmp_path / "node-1"), "peers")
    write_state(tmp_path, [(stranger.pid, tmp_path / "node-0"), (client.pid, tmp_path / "node-1")])
    assert testnet.down(tmp_path) == []
    assert stranger.poll() is None
    assert client.poll() is None
    assert json.loads((tmp_path / STATE_FILE).read_text())["stopped"] is True


def test_down_stops_listed_processes_and_kills_stubborn_ones(
    tmp_path: Path, stand_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testnet, "STOP_GRACE", 0.5)
    polite = stand_in("--data-dir", str(tmp_path / "node-0"), "run")
    stubborn = stand_in("--data-dir", str(tmp_path / "node-1"), "run", ignore_term=True)
    bystander = stand_in("--data-dir", str(tmp_path / "elsewhere"), "run")
    write_state(tmp_path, [(polite.pid, tmp_path / "node-0"), (stubborn.pid, tmp_path / "node-1")])
    assert sorted(testnet.down(tmp_path)) == sorted([polite.pid, stubborn.pid])
    assert polite.wait(timeout=5) == -signal.SIGTERM
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    assert bystander.poll() is None
    assert testnet.down(tmp_path) == []  # a second down is harmless


def test_up_refuses_while_a_listed_node_runs(tmp_path: Path, stand_in: Any) -> None:
    node = stand_in("--data-dir", str(tmp_path / "node-0"), "run")
    write_state(tmp_path, [(node.pid, tmp_path / "node-0")])
    with pytest.raises(TestnetError, match="already running"):
        testnet.up(tmp_path, 2, progress=False)
    assert node.poll() is None
    assert not (tmp_path / "node-1").exists()


def test_bad_command_lines_exit_2_with_one_line(tmp_path: Path) -> None:
    for argv in (
        ("testnet", "up", "--nodes", "many", "--dir", tmp_path),
        ("testnet", "up", "--nodes", "3"),
        ("dht", "get"),
        ("testnet", "sideways", "--dir", tmp_path),
    ):
        result = zhtp(*argv)
        assert result.returncode == 2, argv
        one_error_line(result)
        assert result.stdout == ""


# -- real node processes ---------------------------------------------------------------


@dataclass
class Net:
    dir: Path
    info: dict[str, Any]

    def data_dir(self, i: int) -> Path:
        return self.dir / f"node-{i}"

    @property
    def pids(self) -> list[int]:
        return [n["pid"] for n in self.info["nodes"]]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("testnet")
    dir = root / "net"
    try:
        started = time.monotonic()
        info = ok_json(zhtp("testnet", "up", "--nodes", NODES, "--dir", dir, "--json"))
        print(f"testnet up --nodes {NODES}: {time.monotonic() - started:.1f} s")
        yield Net(dir, info)
    finally:
        if (dir / STATE_FILE).exists():
            zhtp("testnet", "down", "--dir", dir)
        kill_under(root)


@pytest.mark.slow
def test_up_writes_testnet_json_and_fills_every_table(net: Net) -> None:
    on_disk = json.loads((net.dir / STATE_FILE).read_text())
    assert on_disk == net.info
    nodes = net.info["nodes"]
    assert [n["name"] for n in nodes] == [f"node-{i}" for i in range(NODES)]
    assert len({n["peer_id"] for n in nodes}) == NODES
    assert len(set(net.pids)) == NODES
    for i, node in enumerate(nodes):
        assert node["data_dir"] == str(net.data_dir(i))
        assert alive(node["pid"])
        assert node["multiaddrs"]
        assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in node["multiaddrs"])
        assert all(a.endswith(f"/p2p/{node['peer_id']}") for a in node["multiaddrs"])
        status = ok_json(zhtp("--data-dir", net.data_dir(i), "status", "--json"))
        assert status["peer_id"] == node["peer_id"]
        assert status["routing_table_size"] >= min(NODES - 1, 10)
        assert status["running_alone"] is False


@pytest.mark.slow
def test_dht_put_on_one_node_get_on_another(net: Net, tmp_path: Path) -> None:
    payload = os.urandom(20_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    put = ok_json(zhtp("--data-dir", net.data_dir(1), "dht", "put", source, "--json"))
    assert put["key"].startswith("/zhtp/blob/")
    assert put["accepted"] >= 3, put
    out = tmp_path / "fetched.bin"
    result = zhtp("--data-dir", net.data_dir(NODES - 1), "dht", "get", put["key"], "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == payload


@pytest.mark.slow
def test_file_put_on_one_node_get_on_another(net: Net, tmp_path: Path) -> None:
    payload = os.urandom(3 * (1 << 20) + 12_345)
    source = tmp_path / "photo.jpg"
    source.write_bytes(payload)
    put = ok_json(zhtp("--data-dir", net.data_dir(1), "put", source, "--tag", "holiday", "--json"))
    assert put["capability"].startswith("zhtp://" + put["cid"] + "#")
    assert put["segments"] == 4 and put["under_replicated_segments"] == 0
    out = tmp_path / "copy.jpg"
    got = zhtp("--data-dir", net.data_dir(NODES - 1), "get", put["capability"], "-o", out)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == payload
    # The capability can also come from a file, out of argv and shell history.
    cap_file = tmp_path / "cap.txt"
    cap_file.write_text(put["capability"] + "\n")
    again = tmp_path / "again.jpg"
    got = zhtp("--data-dir", net.data_dir(2), "get", "--ref-file", cap_file, "-o", again)
    assert got.returncode == 0, got.stderr
    assert again.read_bytes() == payload
    neither = zhtp("--data-dir", net.data_dir(2), "get", "-o", again)
    assert "one of the two" in one_error_line(neither)
    stat = ok_json(zhtp("--data-dir", net.data_dir(2), "stat", put["cid"], "--json"))
    assert stat["name"] == "photo.jpg" and stat["mime_type"] == "image/jpeg"
    assert stat["tags"] == ["holiday"] and stat["size"] == len(payload)
    repair = ok_json(zhtp("--data-dir", net.data_dir(4), "repair", put["cid"], "--json"))
    assert repair["healthy"] is True and repair["shards_checked"] == 24
    listed = ok_json(zhtp("--data-dir", net.data_dir(1), "ls", "--json"))["uploads"]
    assert [u["cid"] for u in listed] == [put["cid"]]
    assert "capability" not in listed[0]  # secrets only on request


@pytest.mark.slow
def test_public_file_reads_by_cid_and_encrypted_one_does_not(net: Net, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"shared words " * 10_000)
    public = ok_json(zhtp("--data-dir", net.data_dir(2), "put", source, "--public", "--json"))
    assert "capability" not in public
    out = tmp_path / "public-copy.txt"
    assert zhtp("--data-dir", net.data_dir(0), "get", public["cid"], "-o", out).returncode == 0
    assert out.read_bytes() == source.read_bytes()
    private = ok_json(zhtp("--data-dir", net.data_dir(2), "put", source, "--json"))
    denied = zhtp("--data-dir", net.data_dir(0), "get", private["cid"], "-o", tmp_path / "no")
    assert "shared by capability only" in one_error_line(denied)
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_wrong_key_fails_cleanly_and_leaves_no_file(net: Net, tmp_path: Path) -> None:
    source = tmp_path / "secret.bin"
    source.write_bytes(os.urandom(300_000))
    put = ok_json(zhtp("--data-dir", net.data_dir(3), "put", source, "--json"))
    wrong = put["capability"].split("#")[0] + "#" + "A" * 43
    out = tmp_path / "stolen.bin"
    result = zhtp("--data-dir", net.data_dir(4), "get", wrong, "-o", out)
    assert "authentication failed" in one_error_line(result)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zhtp-get-")]


@pytest.mark.slow
def test_get_of_unknown_cid_and_garbage_references(net: Net, tmp_path: Path) -> None:
    unknown = "bafib4i" + "a" * 52
    result = zhtp("--data-dir", net.data_dir(0), "get", unknown, "-o", tmp_path / "x")
    assert result.returncode == 1
    for garbage in ("not-a-cid", "zhtp://", "Qm" + "1" * 44):
        result = zhtp("--data-dir", net.data_dir(0), "get", garbage)
        assert result.returncode == 1
        one_error_line(result)


@pytest.mark.slow
def test_identity_published_on_one_node_is_found_from_another(net: Net) -> None:
    env = {**os.environ, "ZHTP_PASSPHRASE": "a passphrase for tests"}
    alice = net.data_dir(1)
    created = ok_json(
        zhtp(
            "--data-dir", alice, "identity", "new", "--name", "alice", "--force", "--json", env=env
        )
    )
    published = ok_json(zhtp("--data-dir", alice, "identity", "publish", "--json"))
    assert published["accepted"] >= 1
    found = ok_json(
        zhtp("--data-dir", net.data_dir(4), "identity", "lookup", created["identity"], "--json")
    )
    assert found["identity"] == created["identity"] and found["name"] == "alice"
    unknown = "zid1" + "a" * 52
    missing = zhtp("--data-dir", net.data_dir(4), "identity", "lookup", unknown)
    assert "no node has identity" in one_error_line(missing)


@pytest.mark.slow
def test_dht_get_of_unknown_key_is_one_error_line(net: Net, tmp_path: Path) -> None:
    unknown = "/zhtp/blob/" + os.urandom(32).hex()
    out = tmp_path / "never.bin"
    result = zhtp("--data-dir", net.data_dir(NODES - 1), "dht", "get", unknown, "-o", out)
    assert result.returncode == 1
    assert "no valid record" in one_error_line(result)
    assert not out.exists()


@pytest.mark.slow
def test_testnet_status_json(net: Net) -> None:
    rows = ok_json(zhtp("testnet", "status", "--dir", net.dir, "--json"))["nodes"]
    assert [r["pid"] for r in rows] == net.pids
    for row, node in zip(rows, net.info["nodes"], strict=True):
        assert row["name"] == node["name"]
        assert row["peer_id"] == node["peer_id"]
        assert row["state"] == "running"
        assert row["peers"] >= min(NODES - 1, 10)
        assert row["records"] >= 0


@pytest.mark.slow
def test_testnet_down_stops_exactly_its_pids(net: Net, stand_in: Any) -> None:
    # Runs last in this module: it ends the shared testnet.
    bystander = stand_in("--data-dir", str(net.dir / "not-a-node"), "run")
    stopped = ok_json(zhtp("testnet", "down", "--dir", net.dir, "--json"))["stopped"]
    assert sorted(stopped) == sorted(net.pids)
    assert wait_until(lambda: not any(alive(pid) for pid in net.pids))
    assert bystander.poll() is None
    for i in range(NODES):
        assert not (net.data_dir(i) / "api.port").exists()  # clean shutdown
    again = ok_json(zhtp("testnet", "down", "--dir", net.dir, "--json"))
    assert again == {"stopped": []}
    rows = ok_json(zhtp("testnet", "status", "--dir", net.dir, "--json"))["nodes"]
    assert {r["state"] for r in rows} == {"stopped"}


@pytest.mark.slow
def test_up_failure_stops_what_it_started_and_shows_the_log(tmp_path: Path) -> None:
    # node-0's API port is taken, so node-0 exits during startup.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            with pytest.raises(TestnetError, match="node-0") as caught:
                testnet.up(tmp_path, 3, timeout=60, progress=False, overrides={"api_port": port})
        finally:
            leftovers = processes_under(tmp_path)
            kill_under(tmp_path)
    assert "node.log" in str(caught.value)
    assert leftovers == []


@pytest.mark.slow
def test_up_timeout_stops_what_it_started(tmp_path: Path) -> None:
    try:
        with pytest.raises(TestnetError, match="timed out"):
            testnet.up(tmp_path, 2, timeout=0.3, progress=False)
        leftovers = processes_under(tmp_path)
    finally:
        kill_under(tmp_path)
    assert leftovers == []
    assert json.loads((tmp_path / STATE_FILE).read_text())["stopped"] is True


@pytest.mark.slow
def test_demo_json(tmp_path: Path) -> None:
    # The demo makes its testnet under $TMPDIR: point it here so cleanup can find it.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        result = zhtp("demo", "--nodes", "3", "--json", env=env)
        leftovers = processes_under(tmp_path)
    finally:
        kill_under(tmp_path)
    report = ok_json(result)
    assert report["round_trip_ok"] is True
    assert report["nodes"] == 3
    assert report["cid"].startswith("b")
    assert report["segments"] == 4
    assert report["contracts"] == 2  # the writer's two peers, one contract each
    assert set(report["seconds"]) == {"up", "put", "get", "down"}
    assert leftovers == []
    assert list(tmp_path.iterdir()) == []  # the demo removed its directory
