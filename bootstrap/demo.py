"""``zhtp demo``: the first thing a newcomer runs.

Starts a local testnet in a temporary directory, puts a 4 MiB random file
through node-1 (encrypted, erasure-coded, its shards spread over the
testnet), gets it back through the last node, checks the bytes, and
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

from bootstrap.testnet import MAX_NODES, TESTNET_SETTINGS, TestnetError, down, up
from node.api.client import ApiClient, ApiFailed, ApiUnavailable

PAYLOAD_SIZE = 4 << 20
MIN_DEMO_NODES = 2
DEMO_TIMEOUT = 120.0


def _short(peer_id: str) -> str:
    return f"{peer_id[:8]}…{peer_id[-6:]}"


def _seconds(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _round_trip(net: dict[str, Any], payload_file: Path) -> dict[str, Any]:
    """Put ``payload_file`` through node-1, get it back through the last node."""
    nodes = net["nodes"]
    writer, reader = nodes[1], nodes[-1]
    payload = payload_file.read_bytes()
    try:
        with ApiClient(Path(writer["data_dir"])) as api:
            put = api.upload(
                "/api/v0/put",
                [payload],
                [("name", payload_file.name), ("size", str(len(payload)))],
            )
    except (ApiUnavailable, ApiFailed) as error:
        raise TestnetError(
            f"demo: putting the file through {writer['name']} failed: {error}"
        ) from error
    capability = put["capability"]
    try:
        started = time.monotonic()
        with (
            ApiClient(Path(reader["data_dir"])) as api,
            api.download("/api/v0/get", {"ref": capability}) as response,
        ):
            fetched = response.read()
        get_seconds = _seconds(started)
    except (ApiUnavailable, ApiFailed) as error:
        raise TestnetError(
            f"demo: getting {put['cid']} through {reader['name']} failed: {error}"
        ) from error
    if fetched != payload:
        raise TestnetError(
            f"demo: {reader['name']} returned {len(fetched)} bytes for {put['cid']} "
            f"that differ from the {len(payload)} bytes put"
        )
    return {
        "cid": put["cid"],
        "size": len(payload),
        "segments": put["segments"],
        "shard_copies": put["shard_copies"],
        "holders": put["holders"],
        "contracts": put.get("contracts", 0),
        "writer": writer["name"],
        "reader": reader["name"],
        "round_trip_ok": True,
        "put_seconds": put["seconds"],
        "get_seconds": get_seconds,
    }


def _report(result: dict[str, Any]) -> str:
    t = result["seconds"]
    mib = result["size"] / (1 << 20)
    lines = [
        f"ZHTP demo: {result['nodes']} node processes on 127.0.0.1",
        f"  testnet up        {t['up']:.1f} s (every routing table filled)",
        f"  put               {mib:.1f} MiB of random bytes through {result['writer']}"
        f" in {t['put'] * 1000:.0f} ms: encrypted, {result['segments']} segments,"
        f" {result['shard_copies']} shards (4+2) on {result['holders']} nodes",
        f"  storage deals     {result['contracts']} signed contracts, escrow locked in"
        f" {result['writer']}'s book, audited every {TESTNET_SETTINGS['deal_period']:g} s",
        f"  content ID        {result['cid']}",
        f"  got back through  {result['reader']} in {t['get'] * 1000:.0f} ms",
        "  round trip        OK (bytes match)",
    ]
    if result["kept"]:
        lines += [
            f"  testnet kept in   {result['dir']}",
            f"  try:  zhtp --data-dir {result['dir']}/node-2 put FILE",
            f"        zhtp --data-dir {result['dir']}/node-0 get <capability> -o copy",
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
