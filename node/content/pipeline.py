"""Streaming put and get of whole files through the segment codec.

Theory of operation
-------------------
Both directions are the same small machine:

- a *feeder* task takes a permit, queues a *slot* for the next segment, in
  index order, and starts a worker thread for it: for `encode_stream` the
  worker reads the next segment from the source and encodes it; for
  `decode_stream` the feeder first pulls the segment's shards from the
  caller's iterator and the worker decodes them;
- the *deliverer* (the generator body for `encode_stream`, the sink loop
  for `decode_stream`) waits on the slots in that order and hands each
  result on.

A semaphore of `lookahead` permits bounds the segments in flight: a permit
is taken before a segment is read or pulled, and given back only once the
consumer or sink is done with that segment. Memory is thus a few segments
whatever the file size, and a slow consumer stops the reading. A
`CapacityLimiter(workers)` bounds the threads doing CPU work; zfec, AES-GCM,
BLAKE3 and LZ4 release the GIL, so two workers use two cores while the
event loop stays free to answer pings (STYLE rule 9).

An encode worker reads its segment itself, under a lock that hands out
segments in order, rather than in a thread call of its own: one thread
round trip per segment instead of two saves about a tenth of the CPU time
(tests/bench/bench_pipeline.py). Whichever worker takes the lock next gets
the next segment, so a worker fills the slot of the index it read, not
necessarily the one it was started for.

A worker's ContentError (a bad shard, a failed tag) is kept in its slot and
raised when the deliverer reaches that segment, so the error reported is
the first bad segment in file order. Any error stops the whole stream and is
raised as itself, not in an ExceptionGroup: the tasks are how these
functions work, not part of what they promise.

`encode_stream` is used as ``async with encode_stream(...) as segments:
async for segment in segments: ...``; the ``async with`` owns the tasks, so
leaving it early stops the reading and the workers (trio.as_safe_channel).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import BinaryIO, Generic, ParamSpec, TypeVar

import trio

from node.content.encrypt import validate_content_key
from node.content.erasure import ErasureCodec
from node.content.errors import ContentError
from node.content.segment import iter_segments, validate_segment_size
from node.content.segment_codec import EncodedSegment, decode_segment, encode_segment

__all__ = ["SegmentParams", "decode_stream", "encode_stream"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

Sink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SegmentParams:
    """What decoding one segment needs besides its shards: its manifest entry."""

    index: int
    plain_size: int
    stored_size: int
    compressed: bool
    addresses: Sequence[bytes]  # BLAKE3-256 of every shard, k + m of them

    @classmethod
    def of(cls, segment: EncodedSegment) -> SegmentParams:
        return cls(
            index=segment.index,
            plain_size=segment.plain_size,
            stored_size=segment.stored_size,
            compressed=segment.compressed,
            addresses=tuple(segment.addresses),
        )


class _Slot(Generic[_T]):
    """One segment's result (or ContentError), filled in by a worker task."""

    __slots__ = ("_error", "_value", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self._value: tuple[_T] | None = None
        self._error: ContentError | None = None

    def set(self, value: _T) -> None:
        self._value = (value,)
        self.done.set()

    def fail(self, error: ContentError) -> None:
        self._error = error
        self.done.set()

    async def result(self) -> _T:
        await self.done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None  # `done` is only set with a value or an error
        return self._value[0]


async def _run_into(slot: _Slot[_T], job: Callable[[], _T], limiter: trio.CapacityLimiter) -> None:
    try:
        slot.set(await trio.to_thread.run_sync(job, limiter=limiter))
    except ContentError as exc:  # bad input: reported in segment order by the deliverer
        slot.fail(exc)


class _OrderedReader:
    """Hands the segments of a source, in order, to whichever worker thread asks next."""

    def __init__(self, source: BinaryIO, segment_size: int) -> None:
        self._segments = iter_segments(source, segment_size)
        self._lock = threading.Lock()
        self._next_index = 0

    def next(self) -> tuple[int, bytes | None]:
        """The next segment's index and bytes; None for the bytes once the source is done."""
        with self._lock:
            index = self._next_index
            self._next_index += 1
            return index, next(self._segments, None)

    def close(self) -> None:
        # Only called once no worker thread is left reading (trio does not
        # abandon threads on cancellation).
        self._segments.close()


def _check_concurrency(workers: int, lookahead: int) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if lookahead < 1:
        raise ValueError(f"lookahead must be at least 1, got {lookahead}")


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextlib.contextmanager
def _raise_lone_error() -> Iterator[None]:
    """Re-raise a nursery's only real error as itself rather than in a group.

    The cancellations it caused in sibling tasks are dropped; two real
    errors at once stay a group, since neither may be hidden.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        real = [exc for exc in _leaves(group) if not isinstance(exc, trio.Cancelled)]
        if len(real) != 1:
            raise
        error = real[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context


def _as_safe_channel(
    fn: Callable[_P, AsyncGenerator[_T, None]],
) -> Callable[_P, AbstractAsyncContextManager[trio.abc.ReceiveChannel[_T]]]:
    """`trio.as_safe_channel`, typed here: the trio-stubs package that libp2p
    installs shadows trio's own annotations and predates this function."""
    wrapped: Callable[_P, AbstractAsyncContextManager[trio.abc.ReceiveChannel[_T]]]
    wrapped = trio.as_safe_channel(fn)  # type: ignore[attr-defined]
    return wrapped


@_as_safe_channel
async def encode_stream(
    source: BinaryIO,
    *,
    segment_size: int,
    key: bytes | None,
    codec: ErasureCodec,
    compress: bool = True,
    workers: int = 2,
    lookahead: int = 4,
) -> AsyncGenerator[EncodedSegment, None]:
    """The encoded segments of `source`, in index order (none for an empty source).

    At most `lookahead` segments are read and not yet finished with by the
    consumer; at most `workers` are read and encoded at once. `key` None
    stores the content unencrypted. Errors reading `source` are raised as
    they are.

    A worker reads its own segment, so reading a slow source (a pipe, a
    socket) overlaps encoding only across workers, and leaving the ``async
    with`` early waits for a read in progress to return.
    """
    validate_segment_size(segment_size)
    _check_concurrency(workers, lookahead)
    if key is not None:
        validate_content_key(key)
    window = trio.Semaphore(lookahead)
    limiter = trio.CapacityLimiter(workers)
    # A slot holds None once the source has no segment for it.
    send, receive = trio.open_memory_channel[_Slot[EncodedSegment | None]](lookahead)
    slots: dict[int, _Slot[EncodedSegment | None]] = {}

    def read_and_encode(reader: _OrderedReader) -> tuple[int, EncodedSegment | None]:
        index, data = reader.next()
        if data is None:
            return index, None
        return index, encode_segment(index, data, key=key, codec=codec, compress=compress)

    async def work(reader: _OrderedReader) -> None:
        index, segment = await trio.to_thread.run_sync(read_and_encode, reader, limiter=limiter)
        slots.pop(index).set(segment)

    async def feed(reader: _OrderedReader) -> None:
        async with send:
            for index in itertools.count():
                await window.acquire()
                slot = slots[index] = _Slot[EncodedSegment | None]()
                nursery.start_soon(work, reader)
                await send.send(slot)

    with contextlib.closing(_OrderedReader(source, segment_size)) as reader, _raise_lone_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, reader)
            async with receive:
                async for slot in receive:
                    segment = await slot.result()
                    if segment is None:
                        break
                    yield segment
                    window.release()
            # The source is done: stop the feeder, which may be waiting for a permit.
            nursery.cancel_scope.cancel()


async def decode_stream(
    segments: AsyncIterable[tuple[SegmentParams, Mapping[int, bytes]]],
    sink: Sink,
    *,
    key: bytes | None,
    codec: ErasureCodec,
    workers: int = 2,
    lookahead: int = 4,
) -> int:
    """Decode consecutive segments and write their plain bytes, in order, to `sink`.

    `segments` yields each segment's parameters with at least k of its
    shards, in index order from any starting index; it is pulled from as
    soon as a permit is free, so the caller's fetches of later segments
    overlap the decoding and writing of earlier ones. At most `lookahead`
    segments are pulled and not yet written; at most `workers` are decoded at
    once. Returns the number of bytes written.

    Raises ContentError for the first segment, in order, that fails to
    decode, or if `segments` skips or repeats an index; errors from
    `segments` and `sink` are raised as they are. What was written before an
    error stays written: a caller writing to a file should write to a
    temporary one and rename it only on success.
    """
    _check_concurrency(workers, lookahead)
    if key is not None:
        validate_content_key(key)
    window = trio.Semaphore(lookahead)
    limiter = trio.CapacityLimiter(workers)
    send, receive = trio.open_memory_channel[_Slot[bytes]](lookahead)

    async def feed() -> None:
        async with send:
            iterator = aiter(segments)
            expected: int | None = None
            while True:
                await window.acquire()
                try:
                    params, shards = await anext(iterator)
                except StopAsyncIteration:
                    return
                if expected is not None and params.index != expected:
                    raise ContentError(
                        f"segments out of order: expected segment {expected}, "
                        f"got segment {params.index}"
                    )
                expected = params.index + 1
                slot = _Slot[bytes]()
                job = functools.partial(
                    decode_segment,
                    shards,
                    index=params.index,
                    plain_size=params.plain_size,
                    stored_size=params.stored_size,
                    compressed=params.compressed,
                    key=key,
                    codec=codec,
                    addresses=params.addresses,
                )
                nursery.start_soon(_run_into, slot, job, limiter)
                await send.send(slot)

    written = 0
    with _raise_lone_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async with receive:
                async for slot in receive:
                    data = await slot.result()
                    await sink(data)
                    written += len(data)
                    window.release()
    return written
