"""Shard store benchmarks: ``python -m tests.bench.bench_storage``.

Measures, on a real filesystem (``--dir``, default the system temp dir):
- durable commits (hash, temp file, fsync, rename, directory fsync, SQLite
  insert with synchronous=FULL) per second and MiB/s, for 256 KiB and 4 MiB
  shards, from one thread and from four;
- read + BLAKE3 re-verification MiB/s (files in the page cache: this is the
  CPU cost of verifying, not the disk's read speed);
- BLAKE3 alone, for scale; start-up reconcile (sizes only) in shards/s.
Generating the random shards is not timed. Prints one table; ``--json``
prints the figures as JSON instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3

from node.storage.shards import ShardStore

KIB = 1 << 10
MIB = 1 << 20
SIZES = {"256 KiB": 256 * KIB, "4 MiB": 4 * MIB}
THREADS = (1, 4)


def _filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (Linux)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and target.startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


class ShardMaker:
    """Distinct shards of one size: a fixed random body behind a unique counter."""

    def __init__(self, size: int, seed: int) -> None:
        self._body = random.Random(seed).randbytes(size - 8)
        self._next = 0
        self._lock = threading.Lock()
        self.seed = seed

    def make(self) -> tuple[bytes, bytes]:
        with self._lock:
            n = self._next
            self._next += 1
        data = (self.seed << 32 | n).to_bytes(8, "big") + self._body
        return blake3.blake3(data).digest(), data


def bench_commits(store: ShardStore, size: int, seconds: float, threads: int) -> dict[str, float]:
    maker = ShardMaker(size, seed=size + threads)
    busy = [0.0] * threads
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < deadline:
            address, data = maker.make()
            started = time.perf_counter()
            reservation = store.reserve(address, size)
            try:
                store.commit(reservation, data)
            finally:
                store.release(reservation)
            busy[i] += time.perf_counter() - started
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    wall = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - wall
    # With one thread the untimed shard generation is left out; with several
    # they overlap, so wall time is the honest denominator there.
    elapsed = busy[0] if threads == 1 else wall
    done = sum(counts)
    return {"ops_per_s": done / elapsed, "mib_per_s": done * size / MIB / elapsed, "n": done}


def bench_reads(store: ShardStore, addresses: list[bytes], size: int, seconds: float) -> float:
    done = 0
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    while time.monotonic() < deadline:
        for address in addresses:
            store.read(address)
            done += 1
    return done * size / MIB / (time.perf_counter() - started)


def bench_hash(size: int, seconds: float) -> float:
    data = random.Random(1).randbytes(size)
    done = 0
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    while time.monotonic() < deadline:
        blake3.blake3(data).digest()
        done += 1
    return done * size / MIB / (time.perf_counter() - started)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(directory: Path, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"filesystem": _filesystem_of(directory)}
    root, db_path = directory / "shards", directory / "node.sqlite3"
    with ShardStore(root, db_path, max_bytes=1 << 50) as store:
        for label, size in SIZES.items():
            results[f"hash {label}"] = bench_hash(size, seconds)
            for threads in THREADS:
                results[f"commit {label} x{threads}"] = bench_commits(
                    store, size, seconds, threads=threads
                )
            ours = [a for a in store.addresses() if store.size_of(a) == size][:64]
            results[f"read {label}"] = bench_reads(store, ours, size, seconds)
        count = store.stats().count
    with ShardStore(root, db_path, max_bytes=1 << 50) as store:
        results["reconcile_shards_per_s"] = count / timed(store.reconcile)
        results["reconcile_shards"] = count
    return results


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"ZHTP shard store ({results['filesystem']}, {os.cpu_count()} cores, "
        "fsync on every commit)"
    )
    table.add_column("figure")
    table.add_column("shard", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("MiB/s", justify="right")
    for label in SIZES:
        for threads in THREADS:
            figure = results[f"commit {label} x{threads}"]
            name = "durable commit" + ("" if threads == 1 else f", {threads} threads")
            table.add_row(name, label, f"{figure['ops_per_s']:,.0f}", f"{figure['mib_per_s']:,.1f}")
        read = results[f"read {label}"]
        table.add_row("read + verify (page cache)", label, "", f"{read:,.0f}")
        table.add_row("BLAKE3 only, 1 thread", label, "", f"{results[f'hash {label}']:,.0f}")
    table.add_row(
        f"reconcile, sizes only ({results['reconcile_shards']:,} shards)",
        "",
        f"{results['reconcile_shards_per_s']:,.0f}",
        "",
    )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to create the test store")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zhtp-bench-storage-", dir=args.dir) as tmp:
        results = run(Path(tmp), args.seconds)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
