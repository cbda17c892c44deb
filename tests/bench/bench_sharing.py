"""What identity-based access costs on put and get: ``python -m tests.bench.bench_sharing``.

Starts six node processes and, for a 1 MiB and a 64 MiB random file, times
put (upload + seal + publish) on node-1 and get (manifest + open capsule +
download) on node-5 at each level: capability (no capsules, the baseline),
standard (HPKE/X25519, Ed25519) and quantum-resistant (HPKE/X-Wing, Ed25519 +
ML-DSA-65). Each file is shared with one other identity, so it carries two
capsules. The client-side crypto (seal, verify + open) is also timed on its
own. Median of ``--repeat`` runs (default 3). ``--json`` prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bootstrap.testnet import down, up
from node.access import open_content_key, seal, verify_owner
from node.api.client import ApiClient
from node.cli_sharing import seal_and_publish
from node.content.address import format_capability, parse_cid, parse_reference
from node.content.manifest import KeyWrapping, decode_manifest, encode_manifest
from node.identity import Identity, make_identity_record

NODES = 6
CHUNK = 1 << 20
SIZES = (1 << 20, 64 << 20)
LEVELS = ("capability", "standard", "quantum-resistant")


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i : i + CHUNK])


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


class People:
    def __init__(self) -> None:
        self.alice = Identity.generate(with_mldsa=True)
        self.bob = Identity.generate(with_mldsa=True)
        self.alice_record = make_identity_record(self.alice, name="alice", sequence=1)
        self.bob_public = self.bob.public_identity(name="bob", sequence=1)


def _put(api: ApiClient, people: People, data: bytes, level: str) -> str:
    params: list[tuple[str, str | int | bool]] = [("size", str(len(data)))]
    if level != "capability":
        params.append(("seal", "1"))
    info: dict[str, Any] = api.upload("/api/v0/put", _chunks(data), params)
    if level == "capability":
        return str(info["capability"])
    published = seal_and_publish(
        api,
        info,
        owner=people.alice,
        owner_record=people.alice_record,
        recipients=[people.bob_public],
        level=level,
    )
    return str(published["cid"])


def _get(api: ApiClient, people: People, ref: str) -> bytes:
    if "#" not in ref:
        reply = api.post_json("/api/v0/manifest", {"ref": ref})
        manifest = decode_manifest(base64.b64decode(reply["manifest"]))
        key = open_content_key(manifest, people.bob)
        ref = format_capability(parse_cid(ref), key)
    with api.download("/api/v0/get", {"ref": ref}) as response:
        return response.read()


def _crypto_only(api: ApiClient, people: People, data: bytes, level: str) -> tuple[float, float]:
    """(seal s, verify + open s) for a manifest of this file's shape."""
    info = api.upload("/api/v0/put", _chunks(data), [("size", str(len(data))), ("seal", "1")])
    unsealed = decode_manifest(base64.b64decode(info["unpublished_manifest"]))
    key = parse_reference(info["capability"]).key
    assert key is not None
    seal_s, sealed = _timed(
        lambda: encode_manifest(
            seal(
                unsealed,
                key,
                owner=people.alice,
                owner_record=people.alice_record,
                recipients=[people.bob_public],
                key_wrapping=KeyWrapping(level),
            )
        )
    )

    def open_it() -> bytes:
        manifest = decode_manifest(sealed)
        verify_owner(manifest)
        return open_content_key(manifest, people.bob)

    open_s, opened = _timed(open_it)
    assert opened == key
    return seal_s, open_s


def run(repeat: int) -> list[dict[str, Any]]:
    people = People()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zhtp-bench-sharing-") as tmp:
        directory = Path(tmp) / "net"
        info = up(directory, NODES)
        try:
            writer = ApiClient(Path(info["nodes"][1]["data_dir"]), timeout=600)
            reader = ApiClient(Path(info["nodes"][NODES - 1]["data_dir"]), timeout=600)
            for size in SIZES:
                for level in LEVELS:
                    puts, gets, seals, opens = [], [], [], []
                    for _ in range(repeat):
                        data = os.urandom(size)
                        put_s, ref = _timed(partial(_put, writer, people, data, level))
                        get_s, back = _timed(partial(_get, reader, people, ref))
                        assert back == data
                        puts.append(put_s)
                        gets.append(get_s)
                        if level != "capability":
                            seal_s, open_s = _crypto_only(writer, people, data, level)
                            seals.append(seal_s)
                            opens.append(open_s)
                    rows.append(
                        {
                            "size_mib": size >> 20,
                            "level": level,
                            "put_s": statistics.median(puts),
                            "get_s": statistics.median(gets),
                            "seal_ms": statistics.median(seals) * 1000 if seals else 0.0,
                            "open_ms": statistics.median(opens) * 1000 if opens else 0.0,
                        }
                    )
            writer.close()
            reader.close()
        finally:
            down(directory)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeat)
    if args.json:
        print(json.dumps(rows))
        return
    base = {(r["size_mib"], "put"): r["put_s"] for r in rows if r["level"] == "capability"}
    base |= {(r["size_mib"], "get"): r["get_s"] for r in rows if r["level"] == "capability"}
    print(
        f"{'file':>7}  {'level':<18} {'put s':>7} {'vs cap':>8} {'get s':>7} {'vs cap':>8} "
        f"{'seal ms':>8} {'open ms':>8}"
    )
    for r in rows:
        size = r["size_mib"]
        put_delta = (r["put_s"] - base[(size, "put")]) * 1000
        get_delta = (r["get_s"] - base[(size, "get")]) * 1000
        print(
            f"{size:>4} MiB  {r['level']:<18} {r['put_s']:>7.3f} {put_delta:>+6.0f}ms "
            f"{r['get_s']:>7.3f} {get_delta:>+6.0f}ms {r['seal_ms']:>8.2f} {r['open_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
