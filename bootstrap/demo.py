"""``zhtp demo``: the first thing a newcomer runs.

Starts a local testnet in a temporary directory, stores a small random file
through node-1, fetches it back through the last node, checks the bytes, and
stops the testnet again (or leaves it running with ``keep``). Any failure is a
:class:`~bootstrap.testnet.TestnetError` whose message says what broke and
where the node logs are; the testnet is stopped either way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bootstrap.testnet import MAX_NODES, TestnetError, down, up
from node.api.client import ApiClient, ApiFailed, ApiUnavailable

PAYLOAD_SIZE = 16 * 1024
MIN_DEMO_NODES = 2
DEMO_TIMEOUT = 120.0


def _short(peer_id: str) -> str:
    return f"{peer_id[:8]}…{peer_id[-6:]}"


def _seconds(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _round_trip(net: dict[str, Any], payload_file: Path) -> dict[str, Any]:
    """Put ``payload_file`` through node-1, get it through the last node."""
    nodes = net["nodes"]
    writer, reader = nodes[1], nodes[-1]
    payload = payload_file.read_bytes()
    try:
        started = time.monotonic()
        with ApiClient(Path(writer["data_dir"])) as api:
            put = api.post_bytes("/api/v0/dht/put", payload)
        put_seconds = _seconds(started)
    except (ApiUnavailable, ApiFailed) as error:
        raise TestnetError(f"demo: storing through {writer['name']} failed: {error}") from error
    if put["accepted"] < 1:
        failures = "; ".join(f"{_short(p)}: {r}" for p, r in put.get("failures", {}).items())
        raise TestnetError(
            f"demo: no node accepted the record stored through {writer['name']}"
            + (f" ({failures})" if failures else "")
        )
    try:
        started = time.monotonic()
        with ApiClient(Path(reader["data_dir"])) as api:
            fetched = api.get_bytes("/api/v0/dht/get", key=put["key"])
        get_seconds = _seconds(started)
    except (ApiUnavailable, ApiFailed) as error:
        raise TestnetError(
            f"demo: fetching {put['key']} through {reader['name']} failed: {error}"
        ) from error
    if fetched != payload:
        raise TestnetError(
            f"demo: {reader['name']} returned {len(fetched)} bytes for {put['key']} "
            f"that differ from the {len(payload)} bytes stored"
        )
    names = {n["peer_id"]: n["name"] for n in nodes}
    return {
        "key": put["key"],
        "size": len(payload),
        "writer": writer["name"],
        "reader": reader["name"],
        "accepted": put["accepted"],
        "target": put["target"],
        "holders": [names.get(h, h) for h in put["holders"]],
        "round_trip_ok": True,
        "put_seconds": put_seconds,
        "get_seconds": get_seconds,
    }


def _report(result: dict[str, Any]) -> str:
    t = result["seconds"]
    lines = [
        f"ZHTP demo: {result['nodes']} node processes on 127.0.0.1",
        f"  testnet up        {t['up']:.1f} s (every routing table filled)",
        f"  stored            {result['size']} random bytes through {result['writer']}"
        f" in {t['put'] * 1000:.0f} ms",
        f"  key               {result['key']}",
        f"  accepted by       {result['accepted']} of {result['target']} holders: "
        + ", ".join(result["holders"]),
        f"  fetched through   {result['reader']} in {t['get'] * 1000:.0f} ms",
        "  round trip        OK (bytes match)",
    ]
    if result["kept"]:
        lines += [
            f"  testnet kept in   {result['dir']}",
            f"  try:  zhtp --data-dir {result['dir']}/node-0 dht get {result['key']} -o copy.bin",
            f"  stop: zhtp testnet down --dir {result['dir']} && rm -r {result['dir']}",
        ]
    else:
        lines.append(f"  testnet down      {t['down']:.1f} s")
    return "\n".join(lines)


def run_demo(*, nodes: int = 6, json_output: bool = False, keep: bool = False) -> None:
    """Run the demo and print its report (text, or one JSON object)."""
    if not MIN_DEMO_NODES <= nodes <= MAX_NODES:
        raise TestnetError(f"the demo runs {MIN_DEMO_NODES}..{MAX_NODES} nodes, not {nodes}")
    dir = Path(tempfile.mkdtemp(prefix="zhtp-demo-"))
    seconds: dict[str, float] = {}
    ok = False
    started_net = False
    try:
        started = time.monotonic()
        net = up(dir, nodes, timeout=DEMO_TIMEOUT, progress=not json_output)
        started_net = True
        seconds["up"] = _seconds(started)
        payload_file = dir / "payload.bin"
        payload_file.write_bytes(os.urandom(PAYLOAD_SIZE))
        result = _round_trip(net, payload_file)
        seconds["put"] = result.pop("put_seconds")
        seconds["get"] = result.pop("get_seconds")
        ok = True
    except TestnetError as error:
        # Keep the directory: the node logs are the first thing to look at.
        raise TestnetError(f"{error} (node logs are in {dir})") from error
    finally:
        if started_net and not (ok and keep):
            started = time.monotonic()
            down(dir)
            seconds["down"] = _seconds(started)
        if ok and not keep:
            shutil.rmtree(dir, ignore_errors=True)
    result = {"nodes": nodes, **result, "seconds": seconds, "kept": keep}
    if keep:
        result["dir"] = str(dir)
    print(json.dumps(result) if json_output else _report(result), flush=True)
