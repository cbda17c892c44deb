"""encode_stream / decode_stream: order, bounded memory, threads, and errors.

Everything is in memory. The bounds are checked exactly, without timing: the
consumer (or sink), holding segment i, waits until the pipeline is idle — no
task can run and no worker thread call is in progress — and then finds that
exactly segments i .. i+lookahead-1 have been read (or pulled). A pipeline
that read one segment too many, or kept fewer in flight, fails.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import node.content.pipeline as pipeline
from node.content.encrypt import KEY_SIZE
from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.pipeline import SegmentParams, decode_stream, encode_stream
from node.content.segment import MIN_SEGMENT_SIZE
from node.content.segment_codec import EncodedSegment, decode_segment, encode_segment
from tests.unit.test_content_stages import random_bytes, text_bytes

CHECK = settings(derandomize=True, deadline=None, max_examples=15)

SEG = MIN_SEGMENT_SIZE
KEY = bytes(range(KEY_SIZE))
CODEC = ErasureCodec(4, 2)
# A hang guard for waits that only a broken pipeline would never satisfy; it
# asserts nothing about speed.
HANG_GUARD_SECONDS = 60

Supply = AsyncIterator[tuple[SegmentParams, Mapping[int, bytes]]]


async def encode_all(
    data: bytes, *, key: bytes | None = KEY, **options: Any
) -> list[EncodedSegment]:
    out: list[EncodedSegment] = []
    async with encode_stream(
        io.BytesIO(data), segment_size=SEG, key=key, codec=CODEC, **options
    ) as segments:
        async for segment in segments:
            out.append(segment)
    return out


async def supply_from(
    segments: Sequence[EncodedSegment], numbers: Sequence[int] = (0, 1, 4, 5)
) -> Supply:
    for segment in segments:
        yield SegmentParams.of(segment), {n: segment.shards[n] for n in numbers}


async def decode_all(
    supply: Supply, *, key: bytes | None = KEY, **options: Any
) -> tuple[bytes, int]:
    parts: list[bytes] = []

    async def sink(data: bytes) -> None:
        parts.append(data)

    written = await decode_stream(supply, sink, key=key, codec=CODEC, **options)
    return b"".join(parts), written


# -- round trips -----------------------------------------------------------------


@CHECK
@given(
    size=st.sampled_from([0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 5]),
    encrypted=st.booleans(),
    text=st.booleans(),
    workers=st.integers(1, 3),
    lookahead=st.integers(1, 5),
)
async def test_stream_round_trip(
    size: int, encrypted: bool, text: bool, workers: int, lookahead: int
) -> None:
    data = text_bytes(size) if text else random_bytes(size)
    key = KEY if encrypted else None
    options = {"workers": workers, "lookahead": lookahead}
    segments = await encode_all(data, key=key, **options)
    assert [s.index for s in segments] == list(range(-(-size // SEG)))
    assert sum(s.plain_size for s in segments) == size
    for numbers in ((0, 1, 2, 3), (0, 1, 4, 5), (2, 3, 4, 5)):
        decoded, written = await decode_all(supply_from(segments, numbers), key=key, **options)
        assert decoded == data
        assert written == size


async def test_encode_stream_matches_encode_segment() -> None:
    data = text_bytes(2 * SEG + 9)
    segments = await encode_all(data, key=None)
    for segment in segments:
        start = segment.index * SEG
        assert segment == encode_segment(
            segment.index, data[start : start + SEG], key=None, codec=CODEC
        )


async def test_encode_stream_of_empty_source_yields_nothing() -> None:
    assert await encode_all(b"") == []


async def test_decode_stream_of_no_segments_writes_nothing() -> None:
    assert await decode_all(supply_from([])) == (b"", 0)


async def test_decode_stream_may_start_at_a_later_segment() -> None:
    data = random_bytes(4 * SEG)
    segments = await encode_all(data)
    decoded, _ = await decode_all(supply_from(segments[2:]))
    assert decoded == data[2 * SEG :]


# -- order and concurrency ---------------------------------------------------------


async def test_encode_stream_yields_in_order_when_workers_finish_out_of_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Segment 0's encoding waits until segment 1's has finished.
    one_done = threading.Event()
    finished: list[int] = []

    def encode(index: int, data: bytes, **kwargs: Any) -> EncodedSegment:
        if index == 0:
            assert one_done.wait(HANG_GUARD_SECONDS), "segment 1 never ran alongside 0"
        result = encode_segment(index, data, **kwargs)
        finished.append(index)
        if index == 1:
            one_done.set()
        return result

    monkeypatch.setattr(pipeline, "encode_segment", encode)
    segments = await encode_all(random_bytes(4 * SEG), workers=2, lookahead=4)
    assert finished.index(1) < finished.index(0)
    assert [s.index for s in segments] == [0, 1, 2, 3]


async def test_decode_stream_writes_in_order_when_workers_finish_out_of_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(4 * SEG)
    segments = await encode_all(data)
    one_done = threading.Event()
    finished: list[int] = []
    real_decode = decode_segment

    def decode(shards: Mapping[int, bytes], *, index: int, **kwargs: Any) -> bytes:
        if index == 0:
            assert one_done.wait(HANG_GUARD_SECONDS), "segment 1 never ran alongside 0"
        result = real_decode(shards, index=index, **kwargs)
        finished.append(index)
        if index == 1:
            one_done.set()
        return result

    monkeypatch.setattr(pipeline, "decode_segment", decode)
    decoded, _ = await decode_all(supply_from(segments), workers=2, lookahead=4)
    assert finished.index(1) < finished.index(0)
    assert decoded == data


async def test_encode_stream_runs_no_more_workers_than_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = threading.Lock()
    running = 0
    most = 0
    both_running = threading.Event()

    def encode(index: int, data: bytes, **kwargs: Any) -> EncodedSegment:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                both_running.set()
        # Give a second worker every chance to start alongside this one.
        both_running.wait(0.05)
        try:
            return encode_segment(index, data, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(pipeline, "encode_segment", encode)
    await encode_all(random_bytes(8 * SEG), workers=1, lookahead=8)
    assert most == 1


class ThreadTracker:
    """Counts `trio.to_thread.run_sync` calls in progress, to tell when a pipeline is idle.

    The count rises on the event loop before the thread starts, so "no task
    can run and no call is in progress" means the pipeline has done all it
    can without the consumer: reading any further would need a permit.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running = 0
        self._changed = trio.Event()
        self._run_sync = trio.to_thread.run_sync
        monkeypatch.setattr(trio.to_thread, "run_sync", self._tracked)

    async def _tracked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.running += 1
        try:
            return await self._run_sync(fn, *args, **kwargs)
        finally:
            self.running -= 1
            self._changed.set()
            self._changed = trio.Event()

    async def settle(self) -> None:
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if not self.running:
                return
            await self._changed.wait()


class CountingSource(io.BytesIO):
    """A source that counts the segments read from it, and by which threads."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0
        self.read_threads: set[int] = set()

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if chunk:
            self.reads += 1
            self.read_threads.add(threading.get_ident())
        return chunk


@pytest.mark.parametrize("lookahead", [1, 2, 4])
async def test_encode_stream_keeps_at_most_lookahead_segments_in_flight(
    lookahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = 10
    threads = ThreadTracker(monkeypatch)
    source = CountingSource(random_bytes(total * SEG))
    indices: list[int] = []
    async with encode_stream(
        source, segment_size=SEG, key=KEY, codec=CODEC, workers=2, lookahead=lookahead
    ) as segments:
        async for segment in segments:
            indices.append(segment.index)
            # Holding segment i, with everything else done that can be done:
            # exactly segments i .. i+lookahead-1 have been read.
            await threads.settle()
            assert source.reads == min(total, segment.index + lookahead)
    assert indices == list(range(total))
    # Reading happened in worker threads, never on the event loop's thread.
    assert threading.get_ident() not in source.read_threads


async def test_encode_stream_stops_reading_when_the_consumer_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = ThreadTracker(monkeypatch)
    source = CountingSource(random_bytes(20 * SEG))
    async with encode_stream(
        source, segment_size=SEG, key=KEY, codec=CODEC, workers=2, lookahead=3
    ) as segments:
        async for segment in segments:
            assert segment.index == 0
            await threads.settle()
            assert source.reads == 3
            break
    await threads.settle()
    assert source.reads == 3


class CountingSupply:
    """Shards for `decode_stream`, counting the segments pulled."""

    def __init__(self, segments: Sequence[EncodedSegment]) -> None:
        self.segments = segments
        self.pulled = 0

    async def supply(self) -> Supply:
        for segment in self.segments:
            self.pulled += 1
            yield SegmentParams.of(segment), {n: segment.shards[n] for n in (0, 1, 4, 5)}


@pytest.mark.parametrize("lookahead", [1, 2, 4])
async def test_decode_stream_keeps_at_most_lookahead_segments_in_flight(
    lookahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = 10
    data = random_bytes(total * SEG)
    supply = CountingSupply(await encode_all(data))
    threads = ThreadTracker(monkeypatch)
    parts: list[bytes] = []

    async def sink(plain: bytes) -> None:
        index = len(parts)
        parts.append(plain)
        # Writing segment i, with everything else done that can be done:
        # exactly segments i .. i+lookahead-1 have been pulled.
        await threads.settle()
        assert supply.pulled == min(total, index + lookahead)

    await decode_stream(supply.supply(), sink, key=KEY, codec=CODEC, lookahead=lookahead)
    assert b"".join(parts) == data


async def test_decode_stream_decodes_in_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    segments = await encode_all(random_bytes(3 * SEG))
    threads: set[int] = set()
    real_decode = decode_segment

    def decode(*args: Any, **kwargs: Any) -> bytes:
        threads.add(threading.get_ident())
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_segment", decode)
    await decode_all(supply_from(segments))
    assert threads
    assert threading.get_ident() not in threads


# -- errors --------------------------------------------------------------------------


async def tampered_supply(
    segments: Sequence[EncodedSegment], bad: set[int], shard: int = 4
) -> Supply:
    for segment in segments:
        shards = {n: segment.shards[n] for n in (0, 1, 4, 5)}
        if segment.index in bad:
            shards[shard] = bytes([shards[shard][0] ^ 1]) + shards[shard][1:]
        yield SegmentParams.of(segment), shards


async def test_decode_stream_raises_the_content_error_itself_after_writing_earlier_segments() -> (
    None
):
    data = random_bytes(5 * SEG)
    segments = await encode_all(data)
    parts: list[bytes] = []

    async def sink(plain: bytes) -> None:
        parts.append(plain)

    with pytest.raises(ContentError, match="segment 2: shard 4 does not match its BLAKE3 address"):
        await decode_stream(tampered_supply(segments, {2}), sink, key=KEY, codec=CODEC)
    assert b"".join(parts) == data[: 2 * SEG]


async def test_decode_stream_reports_the_first_bad_segment_in_order() -> None:
    segments = await encode_all(random_bytes(5 * SEG))
    with pytest.raises(ContentError, match="segment 1: shard 5"):
        await decode_all(tampered_supply(segments, {1, 3}, shard=5), workers=2, lookahead=5)


async def test_decode_stream_rejects_a_wrong_key() -> None:
    segments = await encode_all(random_bytes(2 * SEG))
    with pytest.raises(ContentError, match="segment 0: authentication failed"):
        await decode_all(supply_from(segments), key=bytes(KEY_SIZE))


async def test_decode_stream_rejects_a_skipped_segment() -> None:
    segments = await encode_all(random_bytes(4 * SEG))
    with pytest.raises(ContentError, match="expected segment 2, got segment 3"):
        await decode_all(supply_from([segments[0], segments[1], segments[3]]))


async def test_decode_stream_rejects_a_repeated_segment() -> None:
    segments = await encode_all(random_bytes(2 * SEG))
    with pytest.raises(ContentError, match="expected segment 1, got segment 0"):
        await decode_all(supply_from([segments[0], segments[0]]))


async def test_decode_stream_rejects_too_few_shards() -> None:
    segments = await encode_all(random_bytes(2 * SEG))
    with pytest.raises(ContentError, match="segment 0: need 4 shards"):
        await decode_all(supply_from(segments, (0, 1, 2)))


async def test_decode_stream_raises_the_sinks_error_itself() -> None:
    segments = await encode_all(random_bytes(3 * SEG))

    async def full_disk(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await decode_stream(supply_from(segments), full_disk, key=KEY, codec=CODEC)


async def test_decode_stream_raises_the_suppliers_error_itself() -> None:
    segments = await encode_all(random_bytes(3 * SEG))

    async def failing_fetch() -> Supply:
        yield SegmentParams.of(segments[0]), dict(enumerate(segments[0].shards))
        raise ConnectionError("every holder of segment 1 is gone")

    with pytest.raises(ConnectionError, match="every holder"):
        await decode_all(failing_fetch())


class BrokenSource(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= SEG:
            raise OSError(5, "Input/output error")
        return super().read(size)


async def test_encode_stream_raises_the_sources_error_itself() -> None:
    with pytest.raises(OSError, match="Input/output error"):
        async with encode_stream(
            BrokenSource(random_bytes(3 * SEG)), segment_size=SEG, key=KEY, codec=CODEC
        ) as segments:
            async for _ in segments:
                pass


async def test_encode_stream_raises_the_consumers_error_itself() -> None:
    with pytest.raises(KeyError, match="consumer"):
        async with encode_stream(
            io.BytesIO(random_bytes(3 * SEG)), segment_size=SEG, key=KEY, codec=CODEC
        ) as segments:
            async for _ in segments:
                raise KeyError("consumer")


def encode_stream_with(**overrides: Any) -> Callable[[], Awaitable[None]]:
    options: dict[str, Any] = {"segment_size": SEG, "key": KEY, "codec": CODEC} | overrides

    async def run() -> None:
        async with encode_stream(io.BytesIO(b"data"), **options) as segments:
            async for _ in segments:
                pass

    return run


async def test_encode_stream_rejects_a_bad_segment_size() -> None:
    with pytest.raises(ValueError, match="segment size 1000"):
        await encode_stream_with(segment_size=1000)()


async def test_encode_stream_rejects_a_bad_key() -> None:
    with pytest.raises(ValueError, match="content key must be 32 bytes"):
        await encode_stream_with(key=b"short")()


async def test_encode_stream_rejects_zero_workers() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        await encode_stream_with(workers=0)()


async def test_encode_stream_rejects_zero_lookahead() -> None:
    with pytest.raises(ValueError, match="lookahead must be at least 1"):
        await encode_stream_with(lookahead=0)()


async def test_decode_stream_rejects_zero_lookahead() -> None:
    with pytest.raises(ValueError, match="lookahead must be at least 1"):
        await decode_all(supply_from([]), lookahead=0)


async def test_decode_stream_rejects_a_bad_key() -> None:
    with pytest.raises(ValueError, match="content key must be 32 bytes"):
        await decode_all(supply_from([]), key=KEY[:16])
