# Generated from proto/store.proto by `python -m protocols.pbgen`; do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefuseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSE_REASON_UNSPECIFIED: _ClassVar[RefuseReason]
    FULL: _ClassVar[RefuseReason]
    TOO_LARGE: _ClassVar[RefuseReason]
    BAD_REQUEST: _ClassVar[RefuseReason]
    BUSY: _ClassVar[RefuseReason]
    HASH_MISMATCH: _ClassVar[RefuseReason]
    CORRUPT: _ClassVar[RefuseReason]
    OUT_OF_RANGE: _ClassVar[RefuseReason]
    NO_CONTRACT: _ClassVar[RefuseReason]
REFUSE_REASON_UNSPECIFIED: RefuseReason
FULL: RefuseReason
TOO_LARGE: RefuseReason
BAD_REQUEST: RefuseReason
BUSY: RefuseReason
HASH_MISMATCH: RefuseReason
CORRUPT: RefuseReason
OUT_OF_RANGE: RefuseReason
NO_CONTRACT: RefuseReason

class StoreBegin(_message.Message):
    __slots__ = ("address", "size", "contract_id")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    size: int
    contract_id: bytes
    def __init__(self, address: _Optional[bytes] = ..., size: _Optional[int] = ..., contract_id: _Optional[bytes] = ...) -> None: ...

class StoreReady(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: int
    def __init__(self, window: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class Stored(_message.Message):
    __slots__ = ("address", "already_held")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_HELD_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    already_held: bool
    def __init__(self, address: _Optional[bytes] = ..., already_held: _Optional[bool] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("reason", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: RefuseReason
    detail: str
    def __init__(self, reason: _Optional[_Union[RefuseReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Fetch(_message.Message):
    __slots__ = ("address", "offset", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    offset: int
    length: int
    def __init__(self, address: _Optional[bytes] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class FetchHeader(_message.Message):
    __slots__ = ("total_size", "offset", "length")
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    total_size: int
    offset: int
    length: int
    def __init__(self, total_size: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class NotFound(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Has(_message.Message):
    __slots__ = ("addresses",)
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, addresses: _Optional[_Iterable[bytes]] = ...) -> None: ...

class HasResult(_message.Message):
    __slots__ = ("count", "bitmap")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    count: int
    bitmap: bytes
    def __init__(self, count: _Optional[int] = ..., bitmap: _Optional[bytes] = ...) -> None: ...

class StoreMessage(_message.Message):
    __slots__ = ("begin", "ready", "chunk", "ack", "stored", "refused", "fetch", "fetch_header", "not_found", "has", "has_result")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    FETCH_HEADER_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    HAS_FIELD_NUMBER: _ClassVar[int]
    HAS_RESULT_FIELD_NUMBER: _ClassVar[int]
    begin: StoreBegin
    ready: StoreReady
    chunk: Chunk
    ack: Ack
    stored: Stored
    refused: Refused
    fetch: Fetch
    fetch_header: FetchHeader
    not_found: NotFound
    has: Has
    has_result: HasResult
    def __init__(self, begin: _Optional[_Union[StoreBegin, _Mapping]] = ..., ready: _Optional[_Union[StoreReady, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., stored: _Optional[_Union[Stored, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ..., fetch: _Optional[_Union[Fetch, _Mapping]] = ..., fetch_header: _Optional[_Union[FetchHeader, _Mapping]] = ..., not_found: _Optional[_Union[NotFound, _Mapping]] = ..., has: _Optional[_Union[Has, _Mapping]] = ..., has_result: _Optional[_Union[HasResult, _Mapping]] = ...) -> None: ...
