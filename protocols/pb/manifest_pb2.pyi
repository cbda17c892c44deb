# Generated from proto/manifest.proto by `python -m protocols.pbgen`; do not edit.
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

class Codec(_message.Message):
    __slots__ = ("name", "k", "m")
    NAME_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    name: str
    k: int
    m: int
    def __init__(self, name: _Optional[str] = ..., k: _Optional[int] = ..., m: _Optional[int] = ...) -> None: ...

class Encryption(_message.Message):
    __slots__ = ("scheme", "capsules", "owner", "signature", "key_wrapping")
    class Scheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCHEME_UNSPECIFIED: _ClassVar[Encryption.Scheme]
        NONE: _ClassVar[Encryption.Scheme]
        AES_256_GCM: _ClassVar[Encryption.Scheme]
    SCHEME_UNSPECIFIED: Encryption.Scheme
    NONE: Encryption.Scheme
    AES_256_GCM: Encryption.Scheme
    class KeyWrapping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CAPABILITY_ONLY: _ClassVar[Encryption.KeyWrapping]
        HPKE_X25519: _ClassVar[Encryption.KeyWrapping]
        HPKE_XWING: _ClassVar[Encryption.KeyWrapping]
    CAPABILITY_ONLY: Encryption.KeyWrapping
    HPKE_X25519: Encryption.KeyWrapping
    HPKE_XWING: Encryption.KeyWrapping
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    CAPSULES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_WRAPPING_FIELD_NUMBER: _ClassVar[int]
    scheme: Encryption.Scheme
    capsules: _containers.RepeatedScalarFieldContainer[bytes]
    owner: bytes
    signature: bytes
    key_wrapping: Encryption.KeyWrapping
    def __init__(self, scheme: _Optional[_Union[Encryption.Scheme, str]] = ..., capsules: _Optional[_Iterable[bytes]] = ..., owner: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_wrapping: _Optional[_Union[Encryption.KeyWrapping, str]] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("plain_size", "stored_size", "compressed", "shard_size", "shard_addresses")
    PLAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    SHARD_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARD_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    plain_size: int
    stored_size: int
    compressed: bool
    shard_size: int
    shard_addresses: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, plain_size: _Optional[int] = ..., stored_size: _Optional[int] = ..., compressed: _Optional[bool] = ..., shard_size: _Optional[int] = ..., shard_addresses: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("format_version", "size", "name", "mime_type", "tags", "description", "created", "tier", "segment_size", "codec", "compression", "encryption", "segments")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    size: int
    name: str
    mime_type: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    created: int
    tier: Tier
    segment_size: int
    codec: Codec
    compression: str
    encryption: Encryption
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    def __init__(self, format_version: _Optional[int] = ..., size: _Optional[int] = ..., name: _Optional[str] = ..., mime_type: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., created: _Optional[int] = ..., tier: _Optional[_Union[Tier, str]] = ..., segment_size: _Optional[int] = ..., codec: _Optional[_Union[Codec, _Mapping]] = ..., compression: _Optional[str] = ..., encryption: _Optional[_Union[Encryption, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ...) -> None: ...
