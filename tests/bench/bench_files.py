"""File benchmarks on a local testnet: ``python -m tests.bench.bench_files``.

Starts six node processes, then measures through the control API exactly
what ``zhtp put`` and ``zhtp get`` do:
- one 64 MiB random file: put on node-1, get on node-5, MB/s of file bytes;
- 200 small objects (4 KiB): put on rotating nodes, get each from another
  node, objects per second for put and for get;
- peak RSS (VmHWM) of every node process over the whole run.
Every put is a storage deal (quotes, contracts, escrow) with audit periods of
a day, as on a real network; ``--deal-period`` shortens them.
``--quick`` uses 16 MiB and 50 objects; ``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bootstrap.testnet import down, up
from node.api.client import ApiClient

NODES = 6
CHUNK = 1 << 20


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i : i + CHUNK])


def _put(node: dict[str, Any], data: bytes, public: bool = False) -> dict[str, Any]:
    params: list[tuple[str, str | int | bool]] = [("size", str(len(data)))]
    if public:
        params.append(("public", "1"))
    with ApiClient(Path(node["data_dir"])) as api:
        info: dict[str, Any] = api.upload("/api/v0/put", _chunks(data), params)
    return info


def _get(node: dict[str, Any], ref: str) -> bytes:
    with (
        ApiClient(Path(node["data_dir"])) as api,
        api.download("/api/v0/get", {"ref": ref}) as response,
    ):
        return response.read()


def bench_large(nodes: list[dict[str, Any]], size: int, rng: random.Random) -> dict[str, float]:
    data = rng.randbytes(size)
    started = time.perf_counter()
    put = _put(nodes[1], data)
    put_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got = _get(nodes[-1], put["capability"])
    get_seconds = time.perf_counter() - started
    if got != data:
        raise SystemExit("large file came back different")
    mb = size / 1e6
    return {"put_mb_s": mb / put_seconds, "get_mb_s": mb / get_seconds, "size_mib": size / 2**20}


def bench_small(nodes: list[dict[str, Any]], count: int, rng: random.Random) -> dict[str, float]:
    objects = [rng.randbytes(4096) for _ in range(count)]
    refs = []
    started = time.perf_counter()
    for i, data in enumerate(objects):
        refs.append(_put(nodes[i % len(nodes)], data)["capability"])
    put_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for i, (ref, data) in enumerate(zip(refs, objects, strict=True)):
        if _get(nodes[(i + 3) % len(nodes)], ref) != data:
            raise SystemExit(f"object {i} came back different")
    get_seconds = time.perf_counter() - started
    return {"put_per_s": count / put_seconds, "get_per_s": count / get_seconds, "count": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--deal-period", type=float, default=86_400.0)
    args = parser.parse_args()
    size = (16 if args.quick else 64) << 20
    count = 50 if args.quick else 200
    rng = random.Random(7)
    root = Path(tempfile.mkdtemp(prefix="zhtp-bench-files-"))
    try:
        # Storage deals as a real network runs them (a day per audit period),
        # so this measures put and get, not a testnet's 10-second audits;
        # --deal-period sets another period (seconds).
        period = args.deal_period
        net = up(
            root,
            NODES,
            progress=not args.json,
            overrides={"deal_period": period, "deal_duration": period * 30},
        )
        nodes = net["nodes"]
        large = bench_large(nodes, size, rng)
        small = bench_small(nodes, count, rng)
        rss = [_peak_rss(n["pid"]) / 2**20 for n in nodes]
    finally:
        down(root)
    figures = {
        **{f"large_{k}": v for k, v in large.items()},
        **{f"small_{k}": v for k, v in small.items()},
    }
    figures["peak_rss_mib_max"] = max(rss)
    figures["peak_rss_mib_mean"] = sum(rss) / len(rss)
    if args.json:
        print(json.dumps(figures))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ZHTP files on a {NODES}-node local testnet ({os.cpu_count()} cores)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row(f"{large['size_mib']:.0f} MiB put (node-1)", f"{large['put_mb_s']:.1f} MB/s")
    table.add_row(f"{large['size_mib']:.0f} MiB get (node-5)", f"{large['get_mb_s']:.1f} MB/s")
    table.add_row(f"{count} x 4 KiB put", f"{small['put_per_s']:.1f} objects/s")
    table.add_row(f"{count} x 4 KiB get", f"{small['get_per_s']:.1f} objects/s")
    table.add_row(
        "peak RSS per node (max / mean)", f"{max(rss):.0f} / {sum(rss) / len(rss):.0f} MiB"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
