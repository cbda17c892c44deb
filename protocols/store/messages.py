"""/zhtp/store/1.0.0 messages as typed values; the only place that sees store_pb2.

Decoding is where hostile input is first met: garbage, an empty or unknown
``oneof``, addresses that are not 32 bytes, contract IDs that are neither
empty nor 32 bytes, empty or oversized chunks and oversized lists are
RemoteProtocolErrors. Encoding refuses (with a
LocalProtocolError) anything our own decoder would reject from a peer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.pb import store_pb2

ADDRESS_BYTES = 32  # BLAKE3-256
# A chunk frame must fit STORE_LIMITS.max_frame with its few bytes of envelope.
MAX_CHUNK = 256 * 1024
MAX_HAS_ADDRESSES = 1024
# A storage contract's ID (a BLAKE3-256 digest); StoreBegin carries one or none.
CONTRACT_ID_BYTES = 32
MAX_DETAIL_CHARS = 256
MAX_UINT64 = (1 << 64) - 1


class RefuseReason(enum.IntEnum):
    # A reason from a newer peer that we do not know decodes to UNSPECIFIED.
    UNSPECIFIED = 0
    FULL = 1
    TOO_LARGE = 2
    BAD_REQUEST = 3
    BUSY = 4
    HASH_MISMATCH = 5
    CORRUPT = 6
    OUT_OF_RANGE = 7
    NO_CONTRACT = 8  # no active contract of this holder covers the shard


@dataclass(frozen=True)
class StoreBegin:
    address: bytes
    size: int
    # The contract the shard is stored under (32 bytes); empty for none, which
    # only a holder that admits shards without a contract accepts.
    contract_id: bytes = b""


@dataclass(frozen=True)
class StoreReady:
    window: int


@dataclass(frozen=True)
class Chunk:
    data: bytes


@dataclass(frozen=True)
class Ack:
    received: int


@dataclass(frozen=True)
class Stored:
    address: bytes
    already_held: bool = False


@dataclass(frozen=True)
class Refused:
    reason: RefuseReason
    detail: str = ""


@dataclass(frozen=True)
class Fetch:
    address: bytes
    offset: int = 0
    # None reads to the end of the shard (0 on the wire).
    length: int | None = None


@dataclass(frozen=True)
class FetchHeader:
    total_size: int
    offset: int
    length: int


@dataclass(frozen=True)
class NotFound:
    pass


@dataclass(frozen=True)
class Has:
    addresses: tuple[bytes, ...]


@dataclass(frozen=True)
class HasResult:
    held: tuple[bool, ...]


StoreMessage = (
    StoreBegin
    | StoreReady
    | Chunk
    | Ack
    | Stored
    | Refused
    | Fetch
    | FetchHeader
    | NotFound
    | Has
    | HasResult
)


# -- bitmap ------------------------------------------------------------------


def pack_bitmap(bits: tuple[bool, ...]) -> bytes:
    """Bit i is bit (i % 8) of byte (i // 8), least significant bit first."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bitmap(bitmap: bytes, count: int) -> tuple[bool, ...]:
    if len(bitmap) != (count + 7) // 8:
        raise RemoteProtocolError("bad_bitmap", f"{len(bitmap)} bytes for {count} entries")
    # Unused high bits must be zero, so a result has one spelling.
    if count % 8 and bitmap[-1] >> (count % 8):
        raise RemoteProtocolError("bad_bitmap", "padding bits set")
    return tuple(bool(bitmap[i // 8] >> (i % 8) & 1) for i in range(count))


# -- decoding ----------------------------------------------------------------


def _address(raw: bytes) -> bytes:
    if len(raw) != ADDRESS_BYTES:
        raise RemoteProtocolError("bad_address", f"{len(raw)} bytes")
    return raw


def _contract_id(raw: bytes) -> bytes:
    if len(raw) not in (0, CONTRACT_ID_BYTES):
        raise RemoteProtocolError("bad_contract_id", f"{len(raw)} bytes")
    return raw


def _positive(value: int, reason: str) -> int:
    if value < 1:
        raise RemoteProtocolError(reason, "must be at least 1")
    return value


def decode_message(data: bytes) -> StoreMessage:
    pb = store_pb2.StoreMessage()
    try:
        pb.ParseFromString(data)
    except DecodeError as error:
        raise RemoteProtocolError("garbage", str(error)) from error
    kind = pb.WhichOneof("body")
    match kind:
        case "begin":
            return StoreBegin(
                _address(pb.begin.address),
                _positive(pb.begin.size, "empty_shard"),
                _contract_id(pb.begin.contract_id),
            )
        case "ready":
            return StoreReady(_positive(pb.ready.window, "bad_window"))
        case "chunk":
            if not pb.chunk.data:
                raise RemoteProtocolError("empty_chunk")
            if len(pb.chunk.data) > MAX_CHUNK:
                raise RemoteProtocolError("chunk_too_large", str(len(pb.chunk.data)))
            return Chunk(pb.chunk.data)
        case "ack":
            return Ack(pb.ack.received)
        case "stored":
            return Stored(_address(pb.stored.address), pb.stored.already_held)
        case "refused":
            if len(pb.refused.detail) > MAX_DETAIL_CHARS:
                raise RemoteProtocolError("detail_too_long", str(len(pb.refused.detail)))
            reason = pb.refused.reason
            known = RefuseReason(reason) if reason in RefuseReason._value2member_map_ else None
            return Refused(known or RefuseReason.UNSPECIFIED, pb.refused.detail)
        case "fetch":
            length = pb.fetch.length or None
            return Fetch(_address(pb.fetch.address), pb.fetch.offset, length)
        case "fetch_header":
            header = pb.fetch_header
            if header.offset + header.length > header.total_size:
                raise RemoteProtocolError("bad_fetch_header", "range beyond total_size")
            return FetchHeader(header.total_size, header.offset, header.length)
        case "not_found":
            return NotFound()
        case "has":
            if len(pb.has.addresses) > MAX_HAS_ADDRESSES:
                raise RemoteProtocolError("too_many_addresses", str(len(pb.has.addresses)))
            return Has(tuple(_address(a) for a in pb.has.addresses))
        case "has_result":
            count = pb.has_result.count
            if count > MAX_HAS_ADDRESSES:
                raise RemoteProtocolError("too_many_addresses", str(count))
            return HasResult(unpack_bitmap(pb.has_result.bitmap, count))
        case _:
            # No field of the oneof set: empty, or a message type from a newer peer.
            raise RemoteProtocolError("unknown_message")


# -- encoding ----------------------------------------------------------------


def _check(condition: bool, reason: str, detail: str = "") -> None:
    if not condition:
        raise LocalProtocolError(reason, detail)


def _check_address(address: bytes) -> None:
    _check(len(address) == ADDRESS_BYTES, "bad_address", f"{len(address)} bytes")


def _check_uint64(*values: int) -> None:
    _check(all(0 <= v <= MAX_UINT64 for v in values), "uint64_range")


def encode_message(message: StoreMessage) -> bytes:
    pb = store_pb2.StoreMessage()
    match message:
        case StoreBegin(address, size, contract_id):
            _check_address(address)
            _check_uint64(size)
            _check(size >= 1, "empty_shard")
            _check(
                len(contract_id) in (0, CONTRACT_ID_BYTES),
                "bad_contract_id",
                f"{len(contract_id)} bytes",
            )
            pb.begin.address = address
            pb.begin.size = size
            pb.begin.contract_id = contract_id
        case StoreReady(window):
            _check_uint64(window)
            _check(window >= 1, "bad_window")
            pb.ready.window = window
        case Chunk(data):
            _check(1 <= len(data) <= MAX_CHUNK, "bad_chunk", f"{len(data)} bytes")
            pb.chunk.data = data
        case Ack(received):
            _check_uint64(received)
            pb.ack.received = received
        case Stored(address, already_held):
            _check_address(address)
            pb.stored.address = address
            pb.stored.already_held = already_held
        case Refused(reason, detail):
            _check(len(detail) <= MAX_DETAIL_CHARS, "detail_too_long")
            pb.refused.reason = int(reason)  # type: ignore[assignment]
            pb.refused.detail = detail
        case Fetch(address, offset, length):
            _check_address(address)
            _check_uint64(offset, length or 0)
            _check(length != 0, "bad_length", "use None to read to the end")
            pb.fetch.address = address
            pb.fetch.offset = offset
            pb.fetch.length = length or 0
        case FetchHeader(total_size, offset, length):
            _check_uint64(total_size, offset, length)
            _check(offset + length <= total_size, "bad_fetch_header")
            pb.fetch_header.total_size = total_size
            pb.fetch_header.offset = offset
            pb.fetch_header.length = length
        case NotFound():
            pb.not_found.SetInParent()
        case Has(addresses):
            _check(len(addresses) <= MAX_HAS_ADDRESSES, "too_many_addresses")
            for address in addresses:
                _check_address(address)
            pb.has.SetInParent()  # an empty Has is still a Has
            pb.has.addresses.extend(addresses)
        case HasResult(held):
            _check(len(held) <= MAX_HAS_ADDRESSES, "too_many_addresses")
            pb.has_result.count = len(held)
            pb.has_result.bitmap = pack_bitmap(held)
        case _:
            raise LocalProtocolError("unknown_message", type(message).__name__)
    return pb.SerializeToString(deterministic=True)
