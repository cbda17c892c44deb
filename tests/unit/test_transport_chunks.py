"""ChunkQueue and ChunkReader: byte-exact over any chunking, copies only when taken."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.io.exceptions import IncompleteReadError

from protocols.transport.chunks import ChunkQueue, ChunkReader

chunk_lists = st.lists(st.binary(min_size=0, max_size=300), max_size=20)


@given(chunks=chunk_lists, sizes=st.lists(st.integers(min_value=-1, max_value=700), max_size=40))
def test_queue_reads_of_any_size_return_the_bytes_in_order(
    chunks: list[bytes], sizes: list[int]
) -> None:
    queue = ChunkQueue()
    for index, chunk in enumerate(chunks):
        # Receivers append views of decrypted messages as well as bytes.
        queue.append(memoryview(chunk) if index % 2 else chunk)
    expected = b"".join(chunks)
    assert len(queue) == len(expected)
    taken = b""
    for size in sizes:
        part = queue.take(size)
        assert len(part) == (
            len(expected) - len(taken) if size < 0 else min(size, len(expected) - len(taken))
        )
        taken += part
        assert len(queue) == len(expected) - len(taken)
    taken += queue.take()
    assert taken == expected
    assert not queue


def test_a_whole_bytes_chunk_is_returned_without_a_copy() -> None:
    queue = ChunkQueue()
    chunk = b"x" * 1000
    queue.append(chunk)
    assert queue.take(1000) is chunk


def test_take_zero_and_clear() -> None:
    queue = ChunkQueue()
    queue.append(b"abc")
    assert queue.take(0) == b""
    queue.clear()
    assert len(queue) == 0
    assert queue.take() == b""


def _source(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    pending = list(chunks)

    async def receive() -> bytes:
        return pending.pop(0) if pending else b""

    return receive


async def test_reader_cuts_buffered_frames_without_awaiting() -> None:
    reader = ChunkReader(_source([b"headerpayload", b"next"]))
    assert reader.take_buffered(6) is None  # nothing received yet
    assert await reader.read_exactly(6) == b"header"
    view = reader.take_buffered(7)
    assert view is not None and bytes(view) == b"payload"
    assert reader.take_buffered(1) is None  # the next chunk is not here yet
    assert await reader.read_exactly(4) == b"next"


@given(chunks=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=20), data=st.data())
async def test_reader_reassembles_reads_across_chunks(
    chunks: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(chunks)
    reader = ChunkReader(_source(chunks))
    got = b""
    while len(got) < len(whole):
        n = data.draw(st.integers(min_value=1, max_value=len(whole) - len(got)))
        pieces = await reader.read_pieces(n)
        assert sum(len(p) for p in pieces) == n
        got += b"".join(pieces)
    assert got == whole


async def test_reader_end_of_stream_reports_how_much_arrived() -> None:
    reader = ChunkReader(_source([b"abc"]))
    with pytest.raises(IncompleteReadError) as caught:
        await reader.read_exactly(5)
    assert caught.value.expected_bytes == 5
    assert caught.value.received_bytes == 3
    assert not caught.value.is_clean_close
    with pytest.raises(IncompleteReadError) as clean:
        await reader.read_exactly(1)
    assert clean.value.is_clean_close


async def test_read_view_takes_a_fresh_chunk_without_copying_when_it_fits() -> None:
    reader = ChunkReader(_source([b"0123456789", b"ab", b"cdef"]))
    assert bytes(await reader.read_view(4)) == b"0123"
    assert bytes(await reader.read_view(6)) == b"456789"
    assert bytes(await reader.read_view(3)) == b"abc"  # spans two chunks: joined
    assert bytes(await reader.read_view(3)) == b"def"
    with pytest.raises(IncompleteReadError):
        await reader.read_view(1)
