"""DHT benchmarks on real node processes: ``python -m tests.bench.bench_dht``.

Starts a local testnet (20 nodes by default), then measures:
- iterative lookup latency (p50/p95, as timed inside the node) and hops;
- /zhtp/ping/1.0.0 round-trip time between two node processes;
- Kademlia RPCs per second from this process (a libp2p client) to one node,
  sequential and with 8 in flight;
- idle RSS and CPU per node, and how many idle nodes this machine would fit.
Prints one table; ``--json`` prints the figures as JSON instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bootstrap.testnet import down, up

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bench_lookups(ports: list[int], count: int, rng: random.Random) -> dict[str, float]:
    seconds: list[float] = []
    hops: list[int] = []
    with httpx.Client(timeout=60) as http:
        for _ in range(count):
            port = rng.choice(ports)
            key = "/zhtp/blob/" + rng.randbytes(32).hex()
            info = http.get(
                f"http://127.0.0.1:{port}/api/v0/dht/lookup", params={"key": key}
            ).json()
            seconds.append(info["seconds"])
            hops.append(info["max_hops"])
    return {
        "lookup_p50_ms": _pct(seconds, 0.5) * 1000,
        "lookup_p95_ms": _pct(seconds, 0.95) * 1000,
        "lookup_hops_mean": statistics.mean(hops),
        "lookup_hops_max": max(hops),
    }


def bench_ping(port: int, target: str, count: int) -> dict[str, float]:
    rtts: list[float] = []
    with httpx.Client(timeout=30, headers={"x-zhtp-client": "bench"}) as http:
        for _ in range(count):
            info = http.post(f"http://127.0.0.1:{port}/api/v0/ping", json={"addr": target}).json()
            rtts.append(info["rtt_ms"])
    return {"ping_rtt_p50_ms": _pct(rtts, 0.5), "ping_rtt_p95_ms": _pct(rtts, 0.95)}


def bench_rpc(target: str, seconds: float) -> dict[str, float]:
    """FIND_NODE requests per second from a libp2p client in this process."""
    import multiaddr
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair

    from bootstrap.peers import parse_peer_addr
    from node.host import StreamOpener, build_host
    from protocols.kad.client import KadClient

    peer = parse_peer_addr(target)
    results: dict[str, float] = {}

    async def main() -> None:
        host = build_host(create_new_key_pair())
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            client = KadClient(StreamOpener(host), timeout=10)
            await client.find_node(peer, b"warm-up")
            for label, workers in (("rpc_per_s_sequential", 1), ("rpc_per_s_8_in_flight", 8)):
                done = 0
                deadline = trio.current_time() + seconds

                async def worker(deadline: float = deadline) -> None:
                    nonlocal done
                    while trio.current_time() < deadline:
                        await client.find_node(peer, os.urandom(32))
                        done += 1

                started = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for _ in range(workers):
                        nursery.start_soon(worker)
                results[label] = done / (trio.current_time() - started)

    trio.run(main)
    return results


def bench_idle(pids: list[int], settle: float) -> dict[str, float]:
    time.sleep(settle)
    cpu_before = {p: _cpu_seconds(p) for p in pids}
    window = 10.0
    time.sleep(window)
    cpu = [(_cpu_seconds(p) - cpu_before[p]) / window for p in pids]
    rss = [_rss_bytes(p) for p in pids]
    mib = 1 << 20
    total_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = os.cpu_count() or 1
    # Leave a fifth of the machine for the OS and the user's own work.
    fit_mem = int(total_mem * 0.8 / statistics.mean(rss))
    mean_cpu = max(statistics.mean(cpu), 1e-4)
    fit_cpu = int(cores * 0.8 / mean_cpu)
    return {
        "idle_rss_mean_mib": statistics.mean(rss) / mib,
        "idle_rss_max_mib": max(rss) / mib,
        "idle_cpu_mean_pct": statistics.mean(cpu) * 100,
        "nodes_fit_by_memory": fit_mem,
        "nodes_fit_by_cpu": fit_cpu,
    }


ROWS = [
    ("lookup_p50_ms", "lookup latency p50", "ms", "≤ 20"),
    ("lookup_p95_ms", "lookup latency p95", "ms", ""),
    ("lookup_hops_mean", "lookup hops, mean", "", ""),
    ("lookup_hops_max", "lookup hops, max", "", ""),
    ("ping_rtt_p50_ms", "ping RTT p50 (node → node)", "ms", ""),
    ("ping_rtt_p95_ms", "ping RTT p95 (node → node)", "ms", ""),
    ("rpc_per_s_sequential", "FIND_NODE RPCs/s, 1 in flight", "/s", ""),
    ("rpc_per_s_8_in_flight", "FIND_NODE RPCs/s, 8 in flight", "/s", ""),
    ("idle_rss_mean_mib", "idle RSS per node, mean", "MiB", "≤ 120"),
    ("idle_rss_max_mib", "idle RSS per node, max", "MiB", ""),
    ("idle_cpu_mean_pct", "idle CPU per node", "%", ""),
    ("nodes_fit_by_memory", "idle nodes that fit (80% of RAM)", "", ""),
    ("nodes_fit_by_cpu", "idle nodes that fit (80% of cores)", "", ""),
]


def print_table(results: dict[str, Any], nodes: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ZHTP DHT benchmark, {nodes}-node testnet on 127.0.0.1")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("target")
    for key, label, unit, target in ROWS:
        value = results[key]
        text = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        table.add_row(label, text, unit, target)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--rpc-seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="zhtp-bench-") as tmp:
        net_dir = Path(tmp)
        net = up(net_dir, args.nodes, progress=not args.json)
        try:
            nodes = net["nodes"]
            ports = [n["api_port"] for n in nodes]
            results: dict[str, Any] = {"nodes": args.nodes}
            results.update(bench_idle([n["pid"] for n in nodes], settle=5.0))
            results.update(bench_lookups(ports, args.lookups, rng))
            results.update(bench_ping(ports[0], nodes[1]["multiaddrs"][0], args.pings))
            results.update(bench_rpc(nodes[1]["multiaddrs"][0], args.rpc_seconds))
        finally:
            down(net_dir)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results, args.nodes)


if __name__ == "__main__":
    main()
