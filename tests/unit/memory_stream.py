"""In-memory byte streams for unit tests: no sockets, scriptable, observable.

:func:`memory_stream_pair` returns two connected :class:`MemoryStream` ends
that satisfy ``protocols.framing.ByteStream`` with py-libp2p semantics:

- ``read(n)`` returns up to ``n`` bytes (never more than ``max_chunk``, so a
  test can deliver a frame one byte at a time) and waits while nothing has
  arrived; at end of stream it returns ``b""`` or raises ``EOFError``,
  depending on ``eof`` (py-libp2p stream types differ, and the framing code
  must handle both);
- ``close()`` half-closes: the other end reads EOF, this end can still read;
- ``reset()`` aborts both directions: the other end's reads and writes raise
  ``trio.BrokenResourceError``.

Every end records how often ``close()`` and ``reset()`` were called, what it
wrote, and how many bytes are still unread, so tests can assert exactly how a
stream was finished and how much a reader consumed. ``feed``/``feed_eof``
inject bytes from the test itself when no peer end is needed.
"""

from __future__ import annotations

from typing import Literal

import trio

EofStyle = Literal["empty", "error"]


class _Pipe:
    """One direction of a pair: bytes written by one end, read by the other."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.broken = False
        self.delivered = 0
        self._lot = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        await self._lot.park()


class MemoryStream:
    def __init__(
        self, incoming: _Pipe, outgoing: _Pipe, *, eof: EofStyle, max_chunk: int | None
    ) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self.eof_style: EofStyle = eof
        self.max_chunk = max_chunk
        self.close_calls = 0
        self.reset_calls = 0
        self.read_calls = 0
        self.written = bytearray()

    # -- what the test observes ------------------------------------------

    @property
    def closed(self) -> bool:
        return self.close_calls > 0

    @property
    def was_reset(self) -> bool:
        return self.reset_calls > 0

    @property
    def unread(self) -> int:
        """Bytes that have arrived for this end but were never read."""
        return len(self._incoming.buffer)

    @property
    def delivered(self) -> int:
        """Bytes this end's reads have returned so far."""
        return self._incoming.delivered

    def feed(self, data: bytes) -> None:
        """Make ``data`` arrive at this end as if the other end had written it."""
        self._incoming.buffer += data
        self._incoming.wake()

    def feed_eof(self) -> None:
        """End the incoming direction as if the other end had closed."""
        self._incoming.eof = True
        self._incoming.wake()

    # -- ByteStream --------------------------------------------------------

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.read_calls += 1
        pipe = self._incoming
        while not (pipe.buffer or pipe.eof or pipe.broken):
            await pipe.wait()  # cancellable; nothing has been taken yet
        if pipe.broken:
            raise trio.BrokenResourceError("stream was reset")
        if pipe.buffer:
            size = len(pipe.buffer) if n is None else n
            if self.max_chunk is not None:
                size = min(size, self.max_chunk)
            data = bytes(pipe.buffer[:size])
            del pipe.buffer[:size]
            pipe.delivered += len(data)
            # The bytes are taken: yield without being cancellable, or they'd be lost.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        await trio.lowlevel.cancel_shielded_checkpoint()
        if self.eof_style == "error":
            raise EOFError("end of stream")
        return b""

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.reset_calls or self.close_calls:
            raise trio.ClosedResourceError("write after close/reset")
        if self._outgoing.broken:
            raise trio.BrokenResourceError("stream was reset by the other end")
        self._outgoing.buffer += data
        self.written += data
        self._outgoing.wake()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def close(self) -> None:
        self.close_calls += 1
        self._outgoing.eof = True
        self._outgoing.wake()
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        self.reset_calls += 1
        for pipe in (self._incoming, self._outgoing):
            pipe.broken = True
            pipe.wake()
        await trio.lowlevel.checkpoint()


def memory_stream_pair(
    *, eof: EofStyle = "empty", max_chunk: int | None = None
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends; ``eof``/``max_chunk`` apply to both."""
    a_to_b, b_to_a = _Pipe(), _Pipe()
    a = MemoryStream(b_to_a, a_to_b, eof=eof, max_chunk=max_chunk)
    b = MemoryStream(a_to_b, b_to_a, eof=eof, max_chunk=max_chunk)
    return a, b


def loaded_stream(
    data: bytes, *, end: bool = True, eof: EofStyle = "empty", max_chunk: int | None = None
) -> MemoryStream:
    """A stream whose incoming side already holds ``data`` (then EOF if ``end``)."""
    stream, _ = memory_stream_pair(eof=eof, max_chunk=max_chunk)
    stream.feed(data)
    if end:
        stream.feed_eof()
    return stream
