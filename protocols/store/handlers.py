"""Server side of /zhtp/store/1.0.0: the decisions, and the holder they consult.

The handlers see typed messages and a :class:`ShardHolder` the node
implements; they never touch a stream (protocols/store/session.py does). An
upload is an :class:`Upload`: a small state machine fed with chunks that says
when to acknowledge, so the conversation loop only moves frames.

Flow control: the client may have at most ``window`` bytes unacknowledged,
and we acknowledge every ``window / 2`` bytes consumed. The default window
stays below Yamux's initial 256 KiB stream window (minus frame envelopes), so
a sender that respects it never blocks inside Yamux — stock py-libp2p resets
a stream whose writer waits there 5 s — however long we pause between reads.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.store import ShardCorrupt, ShardMismatch
from protocols.store.messages import (
    MAX_CHUNK,
    Ack,
    Fetch,
    FetchHeader,
    Has,
    HasResult,
    NotFound,
    Refused,
    RefuseReason,
    StoreBegin,
    Stored,
)

# 16 KiB below Yamux's initial window: room for the envelopes of the chunk
# frames in flight.
DEFAULT_WINDOW = 240 * 1024
# In-memory uploads at once, over all peers: bounds memory at about
# max_uploads * max_shard_size. More get Refused BUSY.
DEFAULT_MAX_UPLOADS = 32

ReservationT = TypeVar("ReservationT")


@dataclass(frozen=True)
class ShardSlice:
    """Part of a held shard, with the size of the whole (for FetchHeader)."""

    data: bytes
    total_size: int


class ShardHolder(Protocol[ReservationT]):
    """What the store protocol needs of the node's shard storage.

    ``ReservationT`` is the holder's own type for reserved space; the protocol
    only hands it back. Every reservation ends in exactly one successful
    ``commit`` or one ``release``: if ``commit`` raises (ShardMismatch or
    anything else) the reservation is still the holder's and ``release``
    follows.
    """

    def max_shard_size(self) -> int: ...

    async def has(self, addresses: Sequence[bytes]) -> list[bool]:
        """One answer per address, in order."""
        ...

    async def reserve(
        self, address: bytes, size: int, contract_id: bytes
    ) -> ReservationT | Refused:
        """Set aside ``size`` bytes for ``address``, or refuse (FULL, NO_CONTRACT, ...).

        ``contract_id`` is the StoreBegin's: a 32-byte contract ID, or empty
        when the client names none. A holder that stores only under contract
        refuses NO_CONTRACT, before setting anything aside, unless an active
        contract of its own with that ID covers ``address``.
        """
        ...

    async def commit(self, reservation: ReservationT, data: bytes) -> bool:
        """Verify BLAKE3 and store; False if already held. Raises ShardMismatch."""
        ...

    async def release(self, reservation: ReservationT) -> None: ...

    async def read(self, address: bytes, offset: int, length: int | None) -> ShardSlice | None:
        """``data[offset:offset + length]`` (to the end if None) and the total size.

        Slicing semantics: a range past the end gives fewer bytes, not an
        error (the handler answers OUT_OF_RANGE). None if the shard is not
        held; raises ShardCorrupt if the held copy fails verification.
        """
        ...


class UploadState(enum.Enum):
    RECEIVING = "receiving"
    COMMITTED = "committed"
    RELEASED = "released"


class Upload(Generic[ReservationT]):
    """One shard being received: counts bytes, enforces size and window, says when to ack."""

    def __init__(
        self, peer: bytes, request: StoreBegin, reservation: ReservationT, window: int
    ) -> None:
        self.peer = peer
        self.address = request.address
        self.size = request.size
        self.contract_id = request.contract_id
        self.reservation = reservation
        self.window = window
        self.received = 0
        self.acked = 0
        self.state = UploadState.RECEIVING
        self._data = bytearray()

    @property
    def complete(self) -> bool:
        return self.received == self.size

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    def accept(self, chunk: bytes) -> Ack | None:
        """Take the next chunk; the Ack to send now, if one is due.

        Raises RemoteProtocolError for bytes beyond the announced size or
        beyond the window; the chunk is then not taken.
        """
        total = self.received + len(chunk)
        if total > self.size:
            raise RemoteProtocolError("beyond_size", f"{total} > {self.size}")
        if total > self.acked + self.window:
            raise RemoteProtocolError("window_exceeded", f"{total - self.acked} > {self.window}")
        self._data += chunk
        self.received = total
        # No ack for the last bytes: Stored (or Refused) answers those.
        if not self.complete and self.received - self.acked >= (self.window + 1) // 2:
            self.acked = self.received
            return Ack(self.received)
        return None


@dataclass(frozen=True)
class FetchReply:
    """A FetchHeader and the bytes the chunks after it carry."""

    header: FetchHeader
    data: bytes


class StoreHandlers(Generic[ReservationT]):
    """Answers store, fetch and has requests from a ShardHolder."""

    def __init__(
        self,
        holder: ShardHolder[ReservationT],
        *,
        window: int = DEFAULT_WINDOW,
        fetch_chunk_size: int = MAX_CHUNK,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
    ) -> None:
        if window < 1 or not 1 <= fetch_chunk_size <= MAX_CHUNK or max_uploads < 1:
            raise ValueError("window, fetch_chunk_size and max_uploads must be positive")
        self._holder = holder
        self.window = window
        self.fetch_chunk_size = fetch_chunk_size
        self._max_uploads = max_uploads
        self._uploads = 0

    @property
    def uploads_in_progress(self) -> int:
        return self._uploads

    # -- StoreShard ------------------------------------------------------------

    async def begin_store(
        self, peer: bytes, request: StoreBegin
    ) -> Upload[ReservationT] | Stored | Refused:
        """Ready to receive (an Upload), already held (Stored), or a refusal.

        The checks, in order: TOO_LARGE; a shard already held is answered
        Stored(already_held) whatever the contract (holding it again costs
        nothing, and HasShards tells anyone that we hold it anyway); BUSY;
        then the holder's ``reserve``, which alone decides on the contract
        (NO_CONTRACT) and on space (FULL).
        """
        limit = self._holder.max_shard_size()
        if request.size > limit:
            return Refused(RefuseReason.TOO_LARGE, f"{request.size} > {limit} bytes")
        [held] = await self._holder.has([request.address])
        if held:
            return Stored(request.address, already_held=True)
        if self._uploads >= self._max_uploads:
            return Refused(RefuseReason.BUSY, f"{self._uploads} uploads in progress")
        reservation = await self._holder.reserve(request.address, request.size, request.contract_id)
        if isinstance(reservation, Refused):
            return reservation
        self._uploads += 1
        return Upload(peer, request, reservation, self.window)

    async def finish_store(self, upload: Upload[ReservationT]) -> Stored | Refused:
        """Commit a complete upload: Stored, or Refused HASH_MISMATCH (space released)."""
        if not upload.complete or upload.state is not UploadState.RECEIVING:
            raise LocalProtocolError("upload_not_ready", upload.state.value)
        try:
            fresh = await self._holder.commit(upload.reservation, upload.data)
        except ShardMismatch:
            await self.end_upload(upload)
            return Refused(RefuseReason.HASH_MISMATCH, "data does not hash to the address")
        upload.state = UploadState.COMMITTED
        self._uploads -= 1
        return Stored(upload.address, already_held=not fresh)

    async def end_upload(self, upload: Upload[ReservationT]) -> None:
        """Release the reservation unless committed or released; safe to call again."""
        if upload.state is UploadState.RECEIVING:
            upload.state = UploadState.RELEASED
            self._uploads -= 1
            await self._holder.release(upload.reservation)

    # -- FetchShard ------------------------------------------------------------

    async def fetch(self, peer: bytes, request: Fetch) -> FetchReply | NotFound | Refused:
        try:
            found = await self._holder.read(request.address, request.offset, request.length)
        except ShardCorrupt as error:
            return Refused(RefuseReason.CORRUPT, str(error)[:200])
        if found is None:
            return NotFound()
        total = found.total_size
        end = total if request.length is None else request.offset + request.length
        if request.offset > total or end > total:
            return Refused(RefuseReason.OUT_OF_RANGE, f"shard has {total} bytes")
        if len(found.data) != end - request.offset:
            raise LocalProtocolError(
                "holder_slice", f"{len(found.data)} bytes for a {end - request.offset}-byte range"
            )
        return FetchReply(FetchHeader(total, request.offset, end - request.offset), found.data)

    # -- HasShards -------------------------------------------------------------

    async def has(self, peer: bytes, request: Has) -> HasResult:
        held = await self._holder.has(request.addresses)
        if len(held) != len(request.addresses):
            raise LocalProtocolError("holder_has", f"{len(held)} answers")
        return HasResult(tuple(bool(h) for h in held))
