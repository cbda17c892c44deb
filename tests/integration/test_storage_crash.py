"""Nothing acknowledged is lost when a storing process is killed.

A real process (`tests.integration.crash_writer`) stores and deletes shards
in one directory, printing each acknowledgement only after the call
returned. The test kills it with SIGKILL at a random point -- at start-up,
mid-reconcile, mid-write, between rename and insert -- and starts it again
on the same directory, round after round. Afterwards every acknowledged
shard must be there and verify, every acknowledged delete must have stuck,
and the index and the files must agree exactly.

SIGKILL ends the process but not the kernel, so this proves the ordering
(file before row, row before acknowledgement, clean-up at start-up), not
the fsyncs; those are checked by the unit tests' call-order assertions.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import blake3

from node.storage.shards import ShardStore

ROUNDS = 20
# Guards against a hung writer only; no assertion depends on timing.
HANG_GUARD = 60.0
WRITER = [sys.executable, "-m", "tests.integration.crash_writer"]


@dataclass
class Round:
    acknowledgements: list[str]
    stderr: str


def run_and_kill(root: Path, db_path: Path, seed: int, rng: random.Random) -> Round:
    """Start the writer, let it acknowledge a random number of writes, then SIGKILL it."""
    wanted = rng.choice([0, 0, 1, 3, 10, 30])
    extra_delay = rng.uniform(0.0, 0.02)
    proc = subprocess.Popen(
        [*WRITER, str(root), str(db_path), str(seed)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    received: list[bytes] = []
    try:
        acked = 0
        while acked < wanted:
            line = lines.get(timeout=HANG_GUARD)
            if line is None:
                break  # the writer died on its own; stderr will say why
            received.append(line)
            acked += line[:2] in (b"+ ", b"- ")
        time.sleep(extra_delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    reader.join(HANG_GUARD)
    while (line := lines.get_nowait()) is not None:
        received.append(line)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    # A line cut short by the kill was never completely acknowledged.
    complete = [line.decode() for line in received if line.endswith(b"\n")]
    return Round([line.rstrip("\n") for line in complete], stderr)


def test_acknowledged_shards_survive_sigkill(tmp_path: Path) -> None:
    root, db_path = tmp_path / "shards", tmp_path / "node.sqlite3"
    rng = random.Random(20240611)
    # Last event per address: "+" stored, "-" deleted, "~" a delete that
    # may have been cut short (either outcome is correct).
    last: dict[bytes, str] = {}
    for seed in range(ROUNDS):
        result = run_and_kill(root, db_path, seed, rng)
        assert "Traceback" not in result.stderr, result.stderr
        for line in result.acknowledgements:
            kind, _, rest = line.partition(" ")
            if kind in ("+", "-", "~"):
                last[bytes.fromhex(rest)] = kind
            else:
                assert kind == "reconciled", line

    stored = {address for address, kind in last.items() if kind == "+"}
    deleted = {address for address, kind in last.items() if kind == "-"}
    assert stored, "the writer acknowledged nothing: the test tested nothing"

    with ShardStore(root, db_path, max_bytes=1 << 30) as store:
        store.reconcile(verify=True)
        for address in stored:
            data = store.read(address)  # re-verifies BLAKE3
            assert blake3.blake3(data).digest() == address
        assert not any(store.has_many(sorted(deleted)))

        # Index and files agree exactly, nothing is damaged or left over.
        indexed = set(store.addresses())
        files = {bytes.fromhex(p.name): p.stat().st_size for p in root.glob("??/*")}
        assert set(files) == indexed
        assert stored <= indexed
        stats = store.stats()
        assert (stats.missing, stats.corrupt, stats.quarantined) == (0, 0, 0)
        assert store.damaged_addresses() == []
        assert os.listdir(root / "tmp") == []
        assert os.listdir(root / "quarantine") == []
        assert store.used_bytes() == sum(files.values()) == stats.bytes
