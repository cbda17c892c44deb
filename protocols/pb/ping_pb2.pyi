# Generated from proto/ping.proto by `python -m protocols.pbgen`; do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    HOT: _ClassVar[Tier]
    WARM: _ClassVar[Tier]
    COLD: _ClassVar[Tier]
    ARCHIVE: _ClassVar[Tier]
TIER_UNSPECIFIED: Tier
HOT: Tier
WARM: Tier
COLD: Tier
ARCHIVE: Tier

class Ping(_message.Message):
    __slots__ = ("nonce", "sent_at_ms")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    sent_at_ms: int
    def __init__(self, nonce: _Optional[bytes] = ..., sent_at_ms: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("version", "listen_addrs", "free_storage_bytes", "tiers")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRS_FIELD_NUMBER: _ClassVar[int]
    FREE_STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    version: str
    listen_addrs: _containers.RepeatedScalarFieldContainer[bytes]
    free_storage_bytes: int
    tiers: _containers.RepeatedScalarFieldContainer[Tier]
    def __init__(self, version: _Optional[str] = ..., listen_addrs: _Optional[_Iterable[bytes]] = ..., free_storage_bytes: _Optional[int] = ..., tiers: _Optional[_Iterable[_Union[Tier, str]]] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce", "sent_at_ms", "received_at_ms", "status")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    sent_at_ms: int
    received_at_ms: int
    status: NodeStatus
    def __init__(self, nonce: _Optional[bytes] = ..., sent_at_ms: _Optional[int] = ..., received_at_ms: _Optional[int] = ..., status: _Optional[_Union[NodeStatus, _Mapping]] = ...) -> None: ...
