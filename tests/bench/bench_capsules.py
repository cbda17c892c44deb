"""Key capsule cost: ``python -m tests.bench.bench_capsules [--repeat N]``.

For each encryption level, the time to wrap the content key for one recipient
(import the raw public key, encapsulate, seal) and to unwrap it (decapsulate,
open) with an already loaded private key, each the median of ``--repeat``
runs; the time to load a private key from its raw form (an X-Wing seed
expands into an ML-KEM key pair);
and the encoded capsule size, which the manifest carries once per recipient.
Pure CPU, one thread, no networking.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from node.content.capsules import (
    EncryptionLevel,
    capsule_size,
    encode_capsule,
    generate_private_key,
    private_key_from_bytes,
    public_key_bytes,
    unwrap_content_key,
    wrap_content_key,
)
from node.content.encrypt import new_content_key

_LEVELS = (EncryptionLevel.STANDARD, EncryptionLevel.QUANTUM_RESISTANT)


def median_seconds(operation: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        operation()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def measure(level: EncryptionLevel, repeat: int) -> tuple[float, float, float, int]:
    """Median wrap, unwrap and key-load seconds, and the capsule's encoded size."""
    private_key = generate_private_key(level)
    public_key = public_key_bytes(private_key)
    recipient_id = os.urandom(32)
    context = os.urandom(32)
    content_key = new_content_key()

    def wrap() -> object:
        return wrap_content_key(
            content_key,
            recipient_id=recipient_id,
            recipient_public_key=public_key,
            level=level,
            manifest_context=context,
        )

    capsule = wrap_content_key(
        content_key,
        recipient_id=recipient_id,
        recipient_public_key=public_key,
        level=level,
        manifest_context=context,
    )

    def unwrap() -> object:
        return unwrap_content_key(
            capsule,
            recipient_id=recipient_id,
            recipient_private_key=private_key,
            manifest_context=context,
        )

    assert unwrap() == content_key
    seed = os.urandom(32)
    size = len(encode_capsule(capsule))
    assert size == capsule_size(level)
    return (
        median_seconds(wrap, repeat),
        median_seconds(unwrap, repeat),
        median_seconds(lambda: private_key_from_bytes(level, seed), repeat),
        size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="runs per median (default 200)")
    args = parser.parse_args()

    table = Table(title=f"Key capsules, one recipient (median of {args.repeat})")
    table.add_column("level", no_wrap=True)
    table.add_column("wrap (ms)", justify="right")
    table.add_column("unwrap (ms)", justify="right")
    table.add_column("load private key (ms)", justify="right")
    table.add_column("capsule (bytes)", justify="right")
    for level in _LEVELS:
        wrap, unwrap, load, size = measure(level, args.repeat)
        table.add_row(
            level.value,
            f"{wrap * 1e3:.3f}",
            f"{unwrap * 1e3:.3f}",
            f"{load * 1e3:.3f}",
            str(size),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
