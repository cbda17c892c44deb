"""Storage audit cost: ``python -m tests.bench.bench_audit [--repeat N]``.

For a 1 MiB and a 16 MiB shard with 4 KiB leaves: the time to compute the
audit root (the client, once per shard); the holder's time to answer a
challenge of 16 and of 64 random leaves (it rebuilds the tree from the shard
each time); the challenger's time to verify that answer; and the proof's
payload size (nonce, indices, leaves, paths; protobuf adds a few bytes per
field). Each time is the median of ``--repeat`` runs. Pure CPU, one thread,
no networking.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from node.market.audit import (
    DEFAULT_LEAF_SIZE,
    make_challenge,
    merkle_root,
    proof_size_bytes,
    prove,
    verify_proof,
)

_MIB = 1 << 20
_SHARD_SIZES = (_MIB, 16 * _MIB)
_CHALLENGE_SIZES = (16, 64)


def median_seconds(operation: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        operation()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def measure(shard_size: int, count: int, repeat: int) -> tuple[float, float, float, int]:
    """Median root, prove and verify seconds, and the proof's payload size."""
    data = os.urandom(shard_size)
    leaf_size = DEFAULT_LEAF_SIZE
    root = merkle_root(data, leaf_size)
    challenge = make_challenge(shard_size, leaf_size, count)
    proof = prove(data, challenge, leaf_size)
    verify_proof(root, shard_size, leaf_size, challenge, proof)
    return (
        median_seconds(lambda: merkle_root(data, leaf_size), repeat),
        median_seconds(lambda: prove(data, challenge, leaf_size), repeat),
        median_seconds(lambda: verify_proof(root, shard_size, leaf_size, challenge, proof), repeat),
        proof_size_bytes(proof),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs per median (default 20)")
    args = parser.parse_args()

    table = Table(
        title=f"Storage audits, {DEFAULT_LEAF_SIZE}-byte leaves (median of {args.repeat})"
    )
    table.add_column("shard", no_wrap=True)
    table.add_column("challenged", justify="right")
    table.add_column("root (ms)", justify="right")
    table.add_column("root (MiB/s)", justify="right")
    table.add_column("prove (ms)", justify="right")
    table.add_column("verify (ms)", justify="right")
    table.add_column("proof (bytes)", justify="right")
    for shard_size in _SHARD_SIZES:
        for count in _CHALLENGE_SIZES:
            root, prove_time, verify_time, size = measure(shard_size, count, args.repeat)
            table.add_row(
                f"{shard_size // _MIB} MiB",
                str(count),
                f"{root * 1e3:.2f}",
                f"{shard_size / _MIB / root:.0f}",
                f"{prove_time * 1e3:.2f}",
                f"{verify_time * 1e3:.3f}",
                str(size),
            )
    Console().print(table)


if __name__ == "__main__":
    main()
