"""A node's shard traffic, to be killed: ``python -m tests.integration.crash_writer ROOT DB SEED``.

Opens the store and reconciles it, as a starting node does, then stores
random shards from several threads until it is killed, and now and then
deletes one of its own. Each line on stdout is an acknowledgement, printed
only after the call returned -- the moment a node would answer its peer:

    + <address hex>    stored
    ~ <address hex>    about to delete (printed before the call)
    - <address hex>    deleted
    reconciled <report>  (once, before any store; for the test's log)
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
from pathlib import Path

import blake3

from node.storage.shards import ShardStore

THREADS = 3
MAX_BYTES = 1 << 30
# Mostly small shards, some large enough that a kill lands mid-write.
SIZES = (1, 100, 4096, 65_536, 262_144)


def main() -> None:
    root, db_path, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    out = sys.stdout.buffer
    out_lock = threading.Lock()

    def acknowledge(line: str) -> None:
        with out_lock:
            out.write(line.encode() + b"\n")
            out.flush()

    store = ShardStore(root, db_path, max_bytes=MAX_BYTES)
    acknowledge(f"reconciled {store.reconcile()}")

    def traffic(name: str, rng: random.Random) -> None:
        mine: list[bytes] = []
        for n in itertools.count():
            if mine and rng.random() < 0.1:
                address = mine.pop(rng.randrange(len(mine)))
                # Said before the call: killed mid-delete, the shard may be
                # either there or gone, and the test must accept both.
                acknowledge(f"~ {address.hex()}")
                store.delete(address)
                acknowledge(f"- {address.hex()}")
                continue
            # A unique prefix: were two threads to store the same shard, their
            # acknowledgements could interleave with a delete in any order.
            data = f"{name}:{n}:".encode() + rng.randbytes(rng.randint(0, rng.choice(SIZES)))
            address = blake3.blake3(data).digest()
            reservation = store.reserve(address, len(data))
            try:
                store.commit(reservation, data)
            finally:
                store.release(reservation)
            mine.append(address)
            acknowledge(f"+ {address.hex()}")

    threads = [
        threading.Thread(
            target=traffic, args=(f"{seed}.{i}", random.Random(seed * THREADS + i)), daemon=True
        )
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
