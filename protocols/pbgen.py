"""Regenerate ``protocols/pb`` from ``proto/``: ``python -m protocols.pbgen``.

The generated modules are checked in; ``--check`` (and the unit test that
calls :func:`generate`) fails when they differ from what the pinned
``grpcio-tools`` would produce from the current ``.proto`` sources.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PB_DIR = ROOT / "protocols" / "pb"
STAMP = "# Generated from proto/{name} by `python -m protocols.pbgen`; do not edit.\n"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every ``proto/*.proto`` into ``out_dir``; return the files written."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    sources = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written: list[Path] = []
    for source in sources:
        for suffix in ("_pb2.py", "_pb2.pyi"):
            path = out_dir / (source.stem + suffix)
            path.write_text(STAMP.format(name=source.name) + path.read_text())
            written.append(path)
    return written


def stale_files() -> list[str]:
    """Names of checked-in generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp))}
    current = {p.name: p.read_bytes() for p in PB_DIR.glob("*_pb2.py*")}
    names = set(fresh) | set(current)
    return sorted(n for n in names if fresh.get(n) != current.get(n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: protocols/pb/{name}")
        return 1 if stale else 0
    for path in generate(PB_DIR):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
