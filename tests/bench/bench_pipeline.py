"""Content pipeline throughput: ``python -m tests.bench.bench_pipeline [--quick]``.

Encodes and decodes 64 MiB (8 MiB with ``--quick``) of random data and of
text-like data (words from a fixed vocabulary, seeded), in memory, with no
networking:

- put: `encode_stream` over a BytesIO, AES-256-GCM, 4+2, 1 MiB segments;
- get: `decode_stream` from shards {0, 1, 4, 5} (zfec must rebuild two
  primaries: the slow path) and from the four primaries (the fast path);

each with 1 and 2 worker threads, in MB/s (10^6 bytes) of plaintext. Each
figure is the median of ``--repeat`` runs; "cores" is process CPU time over
wall time, to show whether the workers really ran in parallel, and "others"
the cores other processes kept busy meanwhile, since a shared machine
cannot give two workers two cores. A second
table gives single-thread throughput of each stage on one segment, to see
where the time goes. Goal: put >= 1000 MB/s, get >= 1500 MB/s on two cores.

``--tune-malloc`` first raises glibc's mmap and trim thresholds (what a node
could do at start-up): by default glibc maps and unmaps many ~1 MiB buffers
per segment, and with two workers the page faults and TLB shootdowns cost up
to a third more CPU per segment.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import functools
import io
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import trio
from rich.console import Console
from rich.table import Table

from node.content.compress import compress_segment, decompress_segment
from node.content.encrypt import new_content_key, open_segment, seal_segment
from node.content.erasure import ErasureCodec
from node.content.pipeline import SegmentParams, decode_stream, encode_stream
from node.content.segment_codec import EncodedSegment

MIB = 1 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SLOW_SHARDS = (0, 1, 4, 5)
PUT_GOAL_MBS = 1000.0
GET_GOAL_MBS = 1500.0


def random_data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def text_data(size: int, seed: int = 2) -> bytes:
    """Words of 2-12 lower-case letters from a 4096-word vocabulary, spaces and newlines."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    vocabulary = [
        "".join(rng.choices(letters, weights, k=rng.randint(2, 12))).encode() for _ in range(4096)
    ]
    words = rng.choices(vocabulary, k=size // 6 + 1)
    for i in range(0, len(words), 12):
        words[i] += b"\n"
    return b" ".join(words)[:size]


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep freed segment-sized buffers in the heap for reuse (glibc only).

    By default glibc serves each ~1 MiB buffer with a fresh mmap and gives it
    back on free, so every segment pays page faults for several megabytes
    of new memory. This is what a node could do once at start-up; the
    pipeline itself leaves process-wide policy alone.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * MIB) and libc.mallopt(_M_TRIM_THRESHOLD, 64 * MIB)
    )


@dataclass(frozen=True)
class Run:
    mbs: float
    cores: float  # CPU time of this process over wall time
    others: float  # cores busy with other processes meanwhile (the machine may be shared)


def _machine_busy_seconds() -> float:
    """CPU seconds spent outside idle and iowait by the whole machine (Linux)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


async def _put(
    data: bytes,
    key: bytes,
    codec: ErasureCodec,
    segment_size: int,
    workers: int,
    lookahead: int,
    keep: bool = False,
) -> list[EncodedSegment]:
    """The encoded segments, dropped as they come (as an uploader would) unless `keep`."""
    segments: list[EncodedSegment] = []
    async with encode_stream(
        io.BytesIO(data),
        segment_size=segment_size,
        key=key,
        codec=codec,
        workers=workers,
        lookahead=lookahead,
    ) as encoded:
        async for segment in encoded:
            if keep:
                segments.append(segment)
    return segments


async def _get(
    segments: Sequence[EncodedSegment],
    shard_numbers: Sequence[int],
    key: bytes,
    codec: ErasureCodec,
    workers: int,
    lookahead: int,
    out: list[bytes] | None = None,
) -> int:
    async def supply() -> AsyncIterator[tuple[SegmentParams, Mapping[int, bytes]]]:
        for segment in segments:
            yield SegmentParams.of(segment), {n: segment.shards[n] for n in shard_numbers}

    async def sink(data: bytes) -> None:
        if out is not None:
            out.append(data)

    return await decode_stream(
        supply(), sink, key=key, codec=codec, workers=workers, lookahead=lookahead
    )


def _timed(size: int, repeat: int, run: Callable[[], object]) -> Run:
    runs: list[Run] = []
    for _ in range(repeat):
        busy = _machine_busy_seconds()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        busy = _machine_busy_seconds() - busy
        runs.append(Run(size / wall / 1e6, cpu / wall, max(0.0, busy - cpu) / wall))
    runs.sort(key=lambda r: r.mbs)
    return runs[len(runs) // 2]


def bench_pipeline(
    data: bytes, segment_size: int, lookahead: int, repeat: int
) -> dict[tuple[str, int], Run]:
    key = new_content_key()
    codec = ErasureCodec(4, 2)
    segments = trio.run(_put, data, key, codec, segment_size, 2, lookahead, True)
    paths = {"get slow": SLOW_SHARDS, "get fast": tuple(range(codec.k))}
    for label, numbers in paths.items():
        out: list[bytes] = []
        trio.run(_get, segments, numbers, key, codec, 2, lookahead, out)
        if b"".join(out) != data:
            raise SystemExit(f"{label}: the decoded data differs from the original")
    results: dict[tuple[str, int], Run] = {}
    for workers in (1, 2):
        put = functools.partial(trio.run, _put, data, key, codec, segment_size, workers, lookahead)
        results["put", workers] = _timed(len(data), repeat, put)
        for label, numbers in paths.items():
            get = functools.partial(
                trio.run, _get, segments, numbers, key, codec, workers, lookahead
            )
            results[label, workers] = _timed(len(data), repeat, get)
    return results


def bench_stages(data: bytes, segment_size: int) -> dict[str, float]:
    """Single-thread MB/s of plaintext through each stage, on the first segment."""
    plain = data[:segment_size]
    key = new_content_key()
    codec = ErasureCodec(4, 2)
    stored, compressed = compress_segment(plain)
    sealed = seal_segment(key, 0, stored, compressed=compressed, plain_size=len(plain))
    shards = codec.encode(sealed)
    slow = {n: shards[n] for n in SLOW_SHARDS}
    fast = dict(enumerate(shards[: codec.k]))
    stages: dict[str, Callable[[], object]] = {
        "lz4 compress": lambda: compress_segment(plain),
        "aes-gcm seal": lambda: seal_segment(
            key, 0, stored, compressed=compressed, plain_size=len(plain)
        ),
        "zfec encode 4+2": lambda: codec.encode(sealed),
        "blake3 6 shards": lambda: [blake3.blake3(s).digest() for s in shards],
        "blake3 4 shards": lambda: [blake3.blake3(s).digest() for s in shards[:4]],
        "zfec decode slow": lambda: codec.decode(slow, len(sealed)),
        "zfec decode fast": lambda: codec.decode(fast, len(sealed)),
        "aes-gcm open": lambda: open_segment(
            key, 0, sealed, compressed=compressed, plain_size=len(plain)
        ),
    }
    if compressed:
        stages["lz4 decompress"] = lambda: decompress_segment(stored, len(plain))
    rates: dict[str, float] = {}
    for name, stage in stages.items():
        # Results stay alive for a few calls, as `lookahead` segments do in the
        # pipeline; freeing each at once would measure glibc's mmap/munmap instead.
        alive: collections.deque[object] = collections.deque(maxlen=4)
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < 0.3 or count < 3:
            alive.append(stage())
            count += 1
        rates[name] = count * len(plain) / elapsed / 1e6
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MiB per data set (smoke run)")
    parser.add_argument("--size-mib", type=int, default=None, help="data set size (default 64)")
    parser.add_argument("--segment-size", type=int, default=MIB)
    parser.add_argument("--lookahead", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="raise glibc's mmap and trim thresholds first (see tune_malloc)",
    )
    args = parser.parse_args(argv)
    malloc = "default malloc"
    if args.tune_malloc:
        malloc = "tuned malloc" if tune_malloc() else "malloc tuning unavailable"
    size = (args.size_mib or (8 if args.quick else 64)) * MIB
    repeat = args.repeat or (1 if args.quick else 3)

    datasets = {"random": random_data(size), "text": text_data(size)}
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "size": size, "malloc": malloc}
    # Stages first: after the pipeline runs, glibc's adaptive mmap threshold
    # may be back to mapping and unmapping every ~1 MiB buffer, which makes a
    # loop that frees each result at once measure page faults, not the stage.
    stages = {name: bench_stages(data, args.segment_size) for name, data in datasets.items()}
    pipeline = {
        name: bench_pipeline(data, args.segment_size, args.lookahead, repeat)
        for name, data in datasets.items()
    }

    if args.json:
        figures["pipeline"] = {
            f"{name} {op} w{workers}": {"mbs": run.mbs, "cores": run.cores, "others": run.others}
            for name, results in pipeline.items()
            for (op, workers), run in results.items()
        }
        figures["stages"] = stages
        print(json.dumps(figures, indent=2))
        return

    console = Console()
    table = Table(
        title=f"content pipeline, {size // MIB} MiB, AES-256-GCM, 4+2, "
        f"{args.segment_size // 1024} KiB segments, lookahead {args.lookahead}, "
        f"median of {repeat}, {os.cpu_count()} CPUs, {malloc}"
    )
    for column in ("data", "operation", "workers", "MB/s", "cores", "others", "goal"):
        table.add_column(column, justify="left" if column in ("data", "operation") else "right")
    for name, results in pipeline.items():
        for (op, workers), run in sorted(results.items()):
            goal = PUT_GOAL_MBS if op == "put" else GET_GOAL_MBS
            met = "" if workers == 1 else ("met" if run.mbs >= goal else f"< {goal:.0f}")
            table.add_row(
                name,
                op,
                str(workers),
                f"{run.mbs:,.0f}",
                f"{run.cores:.2f}",
                f"{run.others:.2f}",
                met,
            )
    console.print(table)

    stage_table = Table(title="single stages, one thread, MB/s of plaintext per segment")
    stage_table.add_column("stage")
    for name in datasets:
        stage_table.add_column(name, justify="right")
    for stage in dict.fromkeys([*stages["random"], *stages["text"]]):
        stage_table.add_row(
            stage,
            *(f"{stages[name][stage]:,.0f}" if stage in stages[name] else "-" for name in datasets),
        )
    console.print(stage_table)


if __name__ == "__main__":
    main()
