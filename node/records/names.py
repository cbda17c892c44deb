"""`/zhtp/name/<owner>/<name>` records: owner-signed mutable pointers.

Theory of operation
-------------------
A name record lets a user identity (node/identity.py) publish a value
(typically the content ID of the newest manifest version) under a stable key,
and replace it later. The key is ``/zhtp/name/`` + owner + ``/`` + name, where
the owner is the text form of the owner's identity ID (``zid1`` + 52 base32
characters, lower case).

Why the identity ID and not a node's libp2p PeerID: a name belongs to a
person, not to whichever node they publish from, and ``NAME@zid1...`` is all
a reader needs -- the identity ID alone gives the DHT key (`name_key_for`),
with no identity record or public key fetched first. The record carries the
owner's raw 32-byte Ed25519 public key (RFC 8032); a holder checks that it
hashes to the identity ID in the key, so anyone can check, from the key
alone, whose signature a record must carry. Small-order keys are refused, as
for identity records: they "verify" forged signatures on any message.

The DHT value is a protobuf `NameRecord` (proto/records.proto). Its Ed25519
signature covers `signing_payload`: a domain tag, the record key, the value,
the sequence and the expiry. Covering the key means a record signed for one
name cannot be replayed under another; the domain tag means no other
signature made by the same identity key (e.g. its identity record) can pass
as one.

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

from Crypto.PublicKey.ECC import EccKey
from Crypto.Signature import eddsa
from google.protobuf.message import DecodeError

from node.identity import (
    ED25519_PUBLIC_KEY_SIZE,
    Identity,
    format_identity_id,
    identity_id_of,
    parse_identity_id,
)
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
    "name_key_for",
    "parse_name_key",
    "signing_payload",
]

NAME_PREFIX = b"/zhtp/name/"
MAX_NAME_SIZE = 128
SIGNING_DOMAIN = b"zhtp-name-record-v1\x00"

_UINT64_MAX = (1 << 64) - 1
_ED25519_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class NameRecord:
    """One signed version of a name's value (the DHT value of a name key)."""

    value: bytes
    sequence: int
    expires_at_ms: int
    public_key: bytes  # the owner identity's raw 32-byte Ed25519 public key
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


def name_key_for(identity_id: bytes, name: str) -> bytes:
    """The DHT key of `name` owned by the identity `identity_id` (32 bytes).

    Needs only the ID, not the public key: this is how ``NAME@zid1...`` is
    resolved. ValueError on a bad ID length or a bad name.
    """
    owner = format_identity_id(identity_id).encode("ascii")
    return NAME_PREFIX + owner + b"/" + _check_name(name)


def name_key(owner_ed25519_public_key: bytes, name: str) -> bytes:
    """The DHT key of `name` owned by the identity with this raw Ed25519 public key."""
    return name_key_for(identity_id_of(owner_ed25519_public_key), name)


def parse_name_key(key: bytes) -> tuple[str, str]:
    """(owner identity ID as ``zid1...`` text, name) of a name key; RecordInvalid if malformed."""
    if not key.startswith(NAME_PREFIX):
        raise RecordInvalid("not a name key")
    parts = key[len(NAME_PREFIX) :].split(b"/")
    if len(parts) != 2:
        raise RecordInvalid("name key is not /zhtp/name/<owner>/<name>")
    owner_bytes, name_bytes = parts
    if not owner_bytes.isascii():
        raise RecordInvalid("name key owner is not an identity ID")
    owner = owner_bytes.decode("ascii")
    try:
        identity_id = parse_identity_id(owner)
    except ValueError:
        raise RecordInvalid("name key owner is not an identity ID") from None
    # parse_identity_id accepts upper case too; a key has one spelling only,
    # so one name of one owner lives under exactly one DHT key.
    if format_identity_id(identity_id) != owner:
        raise RecordInvalid("name key owner is not a canonical (lower-case) identity ID")
    try:
        name = name_bytes.decode("utf-8")
        _check_name(name)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise RecordInvalid("name key has an invalid name") from None
    return owner, name


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
    owner: Identity, name: str, value: bytes, sequence: int, expires_at_ms: int
) -> tuple[bytes, bytes]:
    """Sign `value` as version `sequence` of `owner`'s `name`; returns (DHT key, DHT value)."""
    public_key = owner.ed25519_public_key
    key = name_key(public_key, name)
    signature = owner.sign_ed25519(signing_payload(key, value, sequence, expires_at_ms))
    record = NameRecord(
        value=value,
        sequence=sequence,
        expires_at_ms=expires_at_ms,
        public_key=public_key,
        signature=signature,
    )
    return key, record.encode()


def _owner_ed25519_key(public_key: bytes, owner: str) -> EccKey:
    """The record's Ed25519 key, if it is a usable key of the identity `owner`."""
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise RecordInvalid("name record public key has the wrong length")
    # Hash before decoding the point: it is cheaper, and a key of another
    # identity is refused whatever it decodes to. The ID covers the exact
    # bytes, so no other encoding of the owner's key can pass.
    if format_identity_id(identity_id_of(public_key)) != owner:
        raise RecordInvalid("name record key does not belong to the owner in the name")
    try:
        key = eddsa.import_public_key(public_key)
    except ValueError:
        raise RecordInvalid("name record public key is not an Ed25519 curve point") from None
    # A small-order key (e.g. the neutral point) verifies a forged signature on
    # any message: an identity with such a key belongs to everyone.
    if (key.pointQ * 8).is_point_at_infinity():
        raise RecordInvalid("name record public key has small order")
    return key


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
        public_key = _owner_ed25519_key(record.public_key, owner)
        if now_ms >= record.expires_at_ms:
            raise RecordInvalid("name record expired")
        if len(record.signature) != _ED25519_SIGNATURE_SIZE:
            raise RecordInvalid("name record signature has the wrong length")
        payload = signing_payload(key, record.value, record.sequence, record.expires_at_ms)
        try:
            eddsa.new(public_key, "rfc8032").verify(payload, record.signature)
        except ValueError:
            raise RecordInvalid("name record signature does not verify") from None

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
