"""Byte buffers for the receive paths of Noise and Yamux: whole chunks, few copies.

Stock py-libp2p keeps each Yamux stream's unread bytes in a ``bytearray``
that grows with every frame and is sliced from the front on every read, and
reads a frame's header and body with two separate exact reads. Both cost a
copy (and often a reallocation) per frame. Here a payload stays the slice of
the decrypted message it arrived in until a reader takes it, and a frame is
cut out of the chunk it arrived in when it is there whole.

Nothing here does I/O of its own: :class:`ChunkReader` awaits whatever chunk
source it is given, so tests feed it from a list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from libp2p.io.exceptions import IncompleteReadError

Chunk = bytes | memoryview

_EMPTY = memoryview(b"")


class ChunkQueue:
    """A FIFO of received chunks read as one byte stream.

    ``len()`` is the number of unread bytes. ``take(n)`` copies each byte out
    exactly once; a chunk taken whole and already ``bytes`` is returned as is.
    """

    __slots__ = ("_chunks", "_head", "_size")

    def __init__(self) -> None:
        self._chunks: deque[Chunk] = deque()
        self._head = 0  # bytes of the first chunk already taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def append(self, chunk: Chunk) -> None:
        if len(chunk):
            self._chunks.append(chunk)
            self._size += len(chunk)

    def clear(self) -> None:
        self._chunks.clear()
        self._head = 0
        self._size = 0

    def take(self, n: int = -1) -> bytes:
        """Remove and return up to ``n`` bytes (all of them if ``n`` < 0)."""
        if n < 0 or n > self._size:
            n = self._size
        if n == 0:
            return b""
        first = self._chunks[0]
        available = len(first) - self._head
        if n <= available:
            if self._head == 0 and n == len(first):
                self._chunks.popleft()
                self._size -= n
                return bytes(first)  # no copy when ``first`` is already bytes
            return self._take_from_first(n)
        parts: list[Chunk] = []
        remaining = n
        while remaining:
            first = self._chunks[0]
            available = len(first) - self._head
            if remaining >= available:
                parts.append(memoryview(first)[self._head :] if self._head else first)
                self._chunks.popleft()
                self._head = 0
                remaining -= available
            else:
                parts.append(memoryview(first)[self._head : self._head + remaining])
                self._head += remaining
                remaining = 0
        self._size -= n
        return b"".join(parts)

    def _take_from_first(self, n: int) -> bytes:
        first = self._chunks[0]
        data = bytes(memoryview(first)[self._head : self._head + n])
        self._head += n
        if self._head == len(first):
            self._chunks.popleft()
            self._head = 0
        self._size -= n
        return data


class ChunkReader:
    """Exact-size reads over a source that returns chunks of any size.

    ``receive`` returns the next chunk, ``b""`` at end of stream, or raises.
    The common case on the Yamux receive path is a whole frame inside one
    decrypted Noise message: :meth:`take_buffered` then returns a view of it
    without awaiting or copying. Frames split across chunks (stock senders
    cut 64 KiB payloads in two Noise messages) go through the awaiting reads.
    """

    __slots__ = ("_chunk", "_pos", "_receive")

    def __init__(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        self._receive = receive
        self._chunk: memoryview = _EMPTY
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._chunk) - self._pos

    def take_buffered(self, n: int) -> memoryview | None:
        """The next ``n`` bytes if they are already here, else ``None``."""
        end = self._pos + n
        if end > len(self._chunk):
            return None
        view = self._chunk[self._pos : end]
        self._pos = end
        return view

    async def read_view(self, n: int) -> memoryview:
        """The next ``n`` bytes; a view without a copy when one chunk holds them."""
        if self._pos >= len(self._chunk):
            await self._refill(n, 0)
        view = self.take_buffered(n)
        if view is not None:
            return view
        return memoryview(await self.read_exactly(n))

    async def read_exactly(self, n: int) -> bytes:
        return b"".join(await self.read_pieces(n))

    async def read_pieces(self, n: int) -> list[memoryview]:
        """The next ``n`` bytes as views of the chunks they arrived in."""
        pieces: list[memoryview] = []
        remaining = n
        while remaining:
            if self._pos >= len(self._chunk):
                await self._refill(n, n - remaining)
            step = min(remaining, len(self._chunk) - self._pos)
            pieces.append(self._chunk[self._pos : self._pos + step])
            self._pos += step
            remaining -= step
        return pieces

    async def _refill(self, expected: int, received: int) -> None:
        chunk = await self._receive()
        if not chunk:
            raise IncompleteReadError(
                f"connection closed: expected {expected} bytes, received {received}",
                expected_bytes=expected,
                received_bytes=received,
            )
        self._chunk = memoryview(chunk)
        self._pos = 0
