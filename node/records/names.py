"""`/zhtp/name/<owner>/<name>` records: owner-signed mutable pointers.

Theory of operation
-------------------
A name record lets the holder of an ed25519 key publish a value (typically
the content ID of the newest manifest version) under a stable key, and
replace it later. The key is ``/zhtp/name/`` + owner + ``/`` + name, where the
owner is the base58 libp2p PeerID of the key, so anyone can check, from the
key alone, whose signature a record must carry.

The DHT value is a protobuf `NameRecord` (proto/records.proto). Its ed25519
signature covers `signing_payload`: a domain tag, the record key, the value,
the sequence and the expiry. Covering the key means a record signed for one
name cannot be replayed under another; the domain tag means no other
signature made by the same key (e.g. a libp2p handshake) can pass as one.

Replacement rule: a higher sequence wins; on a tie, the later expiry; on a
tie, the greatest encoded bytes -- so every node, given the same copies,
keeps the same one, and an older record never displaces a newer one.

This is the only module that sees `records_pb2`; everything else works with
the frozen `NameRecord` dataclass.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyType, PrivateKey, PublicKey
from libp2p.peer.id import ID

from node.records.validators import RecordInvalid
from protocols.pb import records_pb2

__all__ = [
    "MAX_NAME_SIZE",
    "NAME_PREFIX",
    "SIGNING_DOMAIN",
    "NameRecord",
    "NameValidator",
    "make_name_record",
    "name_key",
    "parse_name_key",
    "signing_payload",
]

NAME_PREFIX = b"/zhtp/name/"
MAX_NAME_SIZE = 128
SIGNING_DOMAIN = b"zhtp-name-record-v1\x00"

_UINT64_MAX = (1 << 64) - 1
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class NameRecord:
    """One signed version of a name's value (the DHT value of a name key)."""

    value: bytes
    sequence: int
    expires_at_ms: int
    public_key: bytes  # libp2p protobuf-serialized public key
    signature: bytes

    def __post_init__(self) -> None:
        # The wire fields are uint64; refuse values that cannot be encoded
        # here rather than deep inside protobuf.
        for field, number in (("sequence", self.sequence), ("expires_at_ms", self.expires_at_ms)):
            if not 0 <= number <= _UINT64_MAX:
                raise ValueError(f"{field} must fit in uint64, got {number}")

    def encode(self) -> bytes:
        return records_pb2.NameRecord(
            value=self.value,
            sequence=self.sequence,
            expires_at_ms=self.expires_at_ms,
            public_key=self.public_key,
            signature=self.signature,
        ).SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> NameRecord:
        """Parse a DHT value; RecordInvalid if it is not a signed NameRecord.

        Unknown fields are skipped, as protobuf does; `NameValidator` is the
        one that refuses bytes the signature does not cover.
        """
        message = records_pb2.NameRecord()
        try:
            message.ParseFromString(data)
        except DecodeError:
            raise RecordInvalid("name record is not a valid protobuf") from None
        if not message.public_key:
            raise RecordInvalid("name record has no public key")
        if not message.signature:
            raise RecordInvalid("name record is unsigned")
        return cls(
            value=message.value,
            sequence=message.sequence,
            expires_at_ms=message.expires_at_ms,
            public_key=message.public_key,
            signature=message.signature,
        )


def _check_name(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_NAME_SIZE:
        raise ValueError(f"a name is 1-{MAX_NAME_SIZE} bytes of UTF-8, got {len(encoded)}")
    if "/" in name or not name.isprintable():
        raise ValueError(f"a name is printable text without '/': {name!r}")
    return encoded


def _require_ed25519(public_key: PublicKey) -> None:
    if public_key.get_type() != KeyType.Ed25519:
        raise ValueError(f"name records are owned by ed25519 keys, not {public_key.get_type()}")


def name_key(owner_public_key: PublicKey, name: str) -> bytes:
    """The DHT key of `name` owned by `owner_public_key` (ValueError on a bad name)."""
    _require_ed25519(owner_public_key)
    owner = ID.from_pubkey(owner_public_key).to_base58().encode("ascii")
    return NAME_PREFIX + owner + b"/" + _check_name(name)


def parse_name_key(key: bytes) -> tuple[str, str]:
    """(owner PeerID in base58, name) of a name key; RecordInvalid if malformed."""
    if not key.startswith(NAME_PREFIX):
        raise RecordInvalid("not a name key")
    parts = key[len(NAME_PREFIX) :].split(b"/")
    if len(parts) != 2:
        raise RecordInvalid("name key is not /zhtp/name/<owner>/<name>")
    owner_bytes, name_bytes = parts
    if not owner_bytes or not owner_bytes.isascii() or not owner_bytes.isalnum():
        raise RecordInvalid("name key owner is not a base58 PeerID")
    try:
        name = name_bytes.decode("utf-8")
        _check_name(name)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise RecordInvalid("name key has an invalid name") from None
    return owner_bytes.decode("ascii"), name


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def signing_payload(key: bytes, value: bytes, sequence: int, expires_at_ms: int) -> bytes:
    """The bytes an owner signs: domain tag, then key and value each with a
    4-byte big-endian length, then sequence and expiry as 8-byte big-endian.

    Length prefixes keep the encoding injective: no (key, value) split of the
    same bytes can produce the same payload.
    """
    return (
        SIGNING_DOMAIN
        + _length_prefixed(key)
        + _length_prefixed(value)
        + struct.pack(">QQ", sequence, expires_at_ms)
    )


def make_name_record(
    private_key: PrivateKey, name: str, value: bytes, sequence: int, expires_at_ms: int
) -> tuple[bytes, bytes]:
    """Sign `value` as version `sequence` of `name`; returns (DHT key, DHT value)."""
    public_key = private_key.get_public_key()
    key = name_key(public_key, name)
    signature = private_key.sign(signing_payload(key, value, sequence, expires_at_ms))
    record = NameRecord(
        value=value,
        sequence=sequence,
        expires_at_ms=expires_at_ms,
        public_key=public_key.serialize(),
        signature=signature,
    )
    return key, record.encode()


def _ed25519_public_key(serialized: bytes) -> Ed25519PublicKey:
    # Check the type tag before building a key object: a peer must not make
    # us parse RSA or secp256k1 material we will refuse anyway.
    try:
        message = PublicKey.deserialize_from_protobuf(serialized)
    except DecodeError:
        raise RecordInvalid("name record public key is not a libp2p key") from None
    if message.key_type != KeyType.Ed25519.value:
        raise RecordInvalid("name record public key is not ed25519")
    if len(message.data) != _ED25519_KEY_SIZE:
        raise RecordInvalid("name record public key has the wrong length")
    public_key = Ed25519PublicKey.from_bytes(message.data)
    # Only the canonical serialization: the key bytes are not signed, so any
    # other encoding of the same key would be a free variant of the record.
    if public_key.serialize() != serialized:
        raise RecordInvalid("name record public key is not canonically encoded")
    return public_key


class NameValidator:
    """Validator for the `/zhtp/name/` namespace."""

    def __init__(self, max_value_size: int = 64 * 1024) -> None:
        if max_value_size <= 0:
            raise ValueError("max_value_size must be positive")
        # Applies to the whole encoded record (the DHT value), which is what
        # a holder actually stores.
        self.max_value_size = max_value_size

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        # Cheapest checks first; the signature check is last.
        if len(value) > self.max_value_size:
            raise RecordInvalid("name record too large")
        owner, _name = parse_name_key(key)
        record = NameRecord.decode(value)
        # Unknown fields or non-canonical varints are bytes the signature does
        # not cover: accepting them would let anyone mint "different" copies
        # of a signed record (and win the tie-break with padding).
        if record.encode() != value:
            raise RecordInvalid("name record is not canonically encoded")
        public_key = _ed25519_public_key(record.public_key)
        if ID.from_pubkey(public_key).to_base58() != owner:
            raise RecordInvalid("name record key does not belong to the owner in the name")
        if now_ms >= record.expires_at_ms:
            raise RecordInvalid("name record expired")
        if len(record.signature) != _ED25519_SIGNATURE_SIZE:
            raise RecordInvalid("name record signature has the wrong length")
        payload = signing_payload(key, record.value, record.sequence, record.expires_at_ms)
        if not public_key.verify(payload, record.signature):
            raise RecordInvalid("name record signature does not verify")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Highest sequence; then later expiry; then greatest encoded bytes.

        `values` must all have passed `validate` for `key`.
        """
        if not values:
            raise ValueError("select needs at least one value")
        ranks = []
        for value in values:
            record = NameRecord.decode(value)
            ranks.append((record.sequence, record.expires_at_ms, value))
        return max(range(len(values)), key=ranks.__getitem__)

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        return NameRecord.decode(value).expires_at_ms
