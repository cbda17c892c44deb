"""The file manifest as typed values; the only place that sees manifest_pb2.

A manifest says how one file was cut into segments, compressed, encrypted
and erasure-coded, and where every shard lives (by BLAKE3 address). Its own
BLAKE3-256 digest is the file's content ID, so the encoding must be a
function of the value: `encode_manifest` serializes deterministically, and
`decode_manifest` re-encodes what it decoded and refuses input that does not
come out identical (unknown fields, default values spelled out, fields out of
order, overlong varints). One manifest, one encoding, one ID.

Manifests arrive from the DHT and from users, so decoding validates every
field and every cross-field rule before anyone acts on it; `encode_manifest`
applies the same rules, so we never publish what a peer would refuse.
"""

from __future__ import annotations

import enum
import itertools
import re
from dataclasses import dataclass

import blake3
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from node.content.capsules import CapsuleError, EncryptionLevel, KeyCapsule, decode_capsule
from node.content.capsules import encode_capsule as _encode_capsule
from node.content.encrypt import TAG_SIZE
from node.content.erasure import MAX_SHARDS
from node.content.errors import ContentError
from node.content.segment import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE
from protocols.pb import manifest_pb2

__all__ = [
    "AES_GCM_TAG_SIZE",
    "CODEC_ZFEC_RS",
    "COMPRESSION_LZ4_FRAME",
    "COMPRESSION_NONE",
    "ED25519_SIGNATURE_SIZE",
    "FORMAT_VERSION",
    "MANIFEST_NAMESPACE",
    "MAX_CAPSULES",
    "MAX_DESCRIPTION_BYTES",
    "MAX_MANIFEST_SIZE",
    "MAX_MIME_TYPE_BYTES",
    "MAX_NAME_BYTES",
    "MAX_OWNER_RECORD_BYTES",
    "MAX_SEGMENT_SIZE",
    "MAX_SHARDS",
    "MAX_TAGS",
    "MAX_TAG_BYTES",
    "MIN_SEGMENT_SIZE",
    "MLDSA65_SIGNATURE_SIZE",
    "SHARD_ADDRESS_SIZE",
    "Codec",
    "Encryption",
    "EncryptionScheme",
    "KeyWrapping",
    "Manifest",
    "ManifestError",
    "SegmentEntry",
    "Tier",
    "decode_manifest",
    "encode_manifest",
    "lz4_frame_bound",
    "manifest_id",
    "manifest_record_key",
    "signature_size",
    "unsigned_encoding",
]

FORMAT_VERSION = 1

# The same default cap as a /zhtp/blob/ record value: a manifest travels as one
# DHT record. At the default 1 MiB segments and 4+2 shards this describes files
# of a few GiB; larger files need larger segments.
MAX_MANIFEST_SIZE = 1 << 20

SHARD_ADDRESS_SIZE = 32
# The limits of the stages that wrote the manifest, re-exported here so the
# validator and the writers can never disagree.
AES_GCM_TAG_SIZE = TAG_SIZE

MAX_NAME_BYTES = 255  # the common file-system limit for one path component
MAX_MIME_TYPE_BYTES = 255
MAX_TAGS = 32
MAX_TAG_BYTES = 64
MAX_DESCRIPTION_BYTES = 4 << 10
# Recipients per version: enough for a team, small enough that a
# quantum-resistant manifest (1.2 KiB per capsule) stays well under the cap.
MAX_CAPSULES = 256
# An identity record is at most ~6.7 KiB (node/identity.py); round up.
MAX_OWNER_RECORD_BYTES = 8 << 10
ED25519_SIGNATURE_SIZE = 64
MLDSA65_SIGNATURE_SIZE = 3309

CODEC_ZFEC_RS = "zfec-rs"
COMPRESSION_LZ4_FRAME = "lz4-frame"
COMPRESSION_NONE = "none"
_COMPRESSIONS = (COMPRESSION_LZ4_FRAME, COMPRESSION_NONE)

# Record keys for manifests follow /zhtp/blob/ exactly (prefix + raw 32-byte
# digest of the value), so the records layer can check key == BLAKE3(value).
MANIFEST_NAMESPACE = "/zhtp/manifest/"
_MANIFEST_PREFIX = MANIFEST_NAMESPACE.encode("ascii")

_UINT64_MAX = (1 << 64) - 1

# LZ4 frame format worst case (lz4 frame spec, LZ4F_compressFrameBound): a
# 19-byte header at most; per block a 4-byte size and an optional 4-byte
# checksum, an incompressible block being stored as is; a 4-byte end mark and
# an optional 4-byte content checksum. 64 KiB is the smallest block size, so it
# gives the most blocks. A frame never holds less than the 7-byte minimal
# header and the end mark.
_LZ4_MAX_HEADER = 19
_LZ4_BLOCK_OVERHEAD = 8
_LZ4_MIN_BLOCK_SIZE = 64 << 10
_LZ4_TRAILER = 8
_LZ4_MIN_FRAME = 11

# RFC 6838 restricted names for type and subtype, then optional parameters
# ("; charset=utf-8"), values being tokens or quoted strings without escapes.
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME_PARAM = r";[ \t]*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[ !#-\[\]-~]*\")"
_MIME_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}(?:[ \t]*{_MIME_PARAM})*")

# C0 controls and DEL: they corrupt terminals and logs, and have no place in
# a name or tag. A description may keep tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DESCRIPTION_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Hostile strings are quoted in messages only this far.
_QUOTE_CHARS = 40


class ManifestError(ContentError, ValueError):
    """A manifest that must not be published, stored or acted on.

    A ContentError, so whoever fetches content handles a bad manifest like a
    bad shard; a ValueError, so code that encodes its own manifests may treat
    a refusal as the bad argument it is.

    `field` names the offending field (``"segments[2].stored_size"``), or is
    None when the encoding as a whole is at fault.
    """

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"manifest {field}: {problem}" if field else f"manifest: {problem}")
        self.field = field
        self.problem = problem


class Tier(enum.Enum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"
    ARCHIVE = "archive"


class EncryptionScheme(enum.Enum):
    NONE = "none"
    AES_256_GCM = "aes-256-gcm"


class KeyWrapping(enum.Enum):
    """Who besides a capability holder can recover the content key."""

    CAPABILITY_ONLY = "capability"
    STANDARD = "standard"  # HPKE over X25519
    QUANTUM_RESISTANT = "quantum-resistant"  # HPKE over X-Wing, plus ML-DSA

    @property
    def capsule_level(self) -> EncryptionLevel | None:
        return _CAPSULE_LEVEL[self]


_CAPSULE_LEVEL: dict[KeyWrapping, EncryptionLevel | None] = {
    KeyWrapping.CAPABILITY_ONLY: None,
    KeyWrapping.STANDARD: EncryptionLevel.STANDARD,
    KeyWrapping.QUANTUM_RESISTANT: EncryptionLevel.QUANTUM_RESISTANT,
}


def signature_size(key_wrapping: KeyWrapping) -> int:
    """Bytes of an owner signature: Ed25519, plus ML-DSA-65 at quantum-resistant."""
    if key_wrapping is KeyWrapping.QUANTUM_RESISTANT:
        return ED25519_SIGNATURE_SIZE + MLDSA65_SIGNATURE_SIZE
    return ED25519_SIGNATURE_SIZE


@dataclass(frozen=True, kw_only=True)
class Codec:
    k: int
    m: int
    name: str = CODEC_ZFEC_RS


@dataclass(frozen=True, kw_only=True)
class Encryption:
    """How the content is encrypted and who may open it.

    `capsules`, `owner` and `signature` belong to identity-based sharing
    (node/access.py builds and checks them); a capability-only manifest has
    none of them.
    """

    scheme: EncryptionScheme
    key_wrapping: KeyWrapping = KeyWrapping.CAPABILITY_ONLY
    capsules: tuple[KeyCapsule, ...] = ()
    owner: bytes = b""  # the owner's signed identity record
    signature: bytes = b""


@dataclass(frozen=True, kw_only=True)
class SegmentEntry:
    plain_size: int
    stored_size: int
    compressed: bool
    shard_size: int
    shard_addresses: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    size: int
    segment_size: int
    tier: Tier
    codec: Codec
    encryption: Encryption
    segments: tuple[SegmentEntry, ...]
    name: str = ""
    mime_type: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""
    created: int = 0
    compression: str = COMPRESSION_LZ4_FRAME

    @property
    def level(self) -> str:
        """The encryption level as users name it: none, capability, standard, quantum-resistant."""
        if self.encryption.scheme is EncryptionScheme.NONE:
            return "none"
        return self.encryption.key_wrapping.value


_TIER_TO_PB: dict[Tier, manifest_pb2.Tier] = {
    Tier.HOT: manifest_pb2.HOT,
    Tier.WARM: manifest_pb2.WARM,
    Tier.COLD: manifest_pb2.COLD,
    Tier.ARCHIVE: manifest_pb2.ARCHIVE,
}
_TIER_FROM_PB: dict[int, Tier] = {int(v): k for k, v in _TIER_TO_PB.items()}

_SCHEME_TO_PB: dict[EncryptionScheme, manifest_pb2.Encryption.Scheme] = {
    EncryptionScheme.NONE: manifest_pb2.Encryption.NONE,
    EncryptionScheme.AES_256_GCM: manifest_pb2.Encryption.AES_256_GCM,
}
_SCHEME_FROM_PB: dict[int, EncryptionScheme] = {int(v): k for k, v in _SCHEME_TO_PB.items()}

_WRAPPING_TO_PB: dict[KeyWrapping, manifest_pb2.Encryption.KeyWrapping] = {
    KeyWrapping.CAPABILITY_ONLY: manifest_pb2.Encryption.CAPABILITY_ONLY,
    KeyWrapping.STANDARD: manifest_pb2.Encryption.HPKE_X25519,
    KeyWrapping.QUANTUM_RESISTANT: manifest_pb2.Encryption.HPKE_XWING,
}
_WRAPPING_FROM_PB: dict[int, KeyWrapping] = {int(v): k for k, v in _WRAPPING_TO_PB.items()}


# -- identity ------------------------------------------------------------------


def manifest_id(data: bytes) -> bytes:
    """The content ID of an encoded manifest: BLAKE3-256 of its bytes."""
    return blake3.blake3(data).digest()


def manifest_record_key(digest: bytes) -> bytes:
    """The DHT record key under which the manifest with ID `digest` is stored."""
    if len(digest) != SHARD_ADDRESS_SIZE:
        raise ValueError(f"manifest ID must be {SHARD_ADDRESS_SIZE} bytes, got {len(digest)}")
    return _MANIFEST_PREFIX + digest


def lz4_frame_bound(plain_size: int) -> int:
    """The largest LZ4 frame one-shot compression of `plain_size` bytes can produce."""
    blocks = -(-plain_size // _LZ4_MIN_BLOCK_SIZE)
    return _LZ4_MAX_HEADER + blocks * _LZ4_BLOCK_OVERHEAD + plain_size + _LZ4_TRAILER


# -- encoding ------------------------------------------------------------------


def encode_manifest(manifest: Manifest) -> bytes:
    """The one encoding of `manifest`; ManifestError if a peer would refuse it."""
    _check_manifest(manifest)
    data = _serialize(manifest)
    if len(data) > MAX_MANIFEST_SIZE:
        raise ManifestError(None, f"encodes to {len(data)} bytes; the limit is {MAX_MANIFEST_SIZE}")
    return data


def unsigned_encoding(manifest: Manifest) -> bytes:
    """The bytes an owner signs: the manifest's encoding with an empty signature.

    Not validated on its own: `encode_manifest` of the signed manifest is.
    """
    return _serialize(manifest, with_signature=False)


def _serialize(manifest: Manifest, *, with_signature: bool = True) -> bytes:
    pb = manifest_pb2.Manifest(
        format_version=FORMAT_VERSION,
        size=manifest.size,
        name=manifest.name,
        mime_type=manifest.mime_type,
        tags=manifest.tags,
        description=manifest.description,
        created=manifest.created,
        tier=_TIER_TO_PB[manifest.tier],
        segment_size=manifest.segment_size,
        compression=manifest.compression,
    )
    # Always present, even if every field were a default: "absent" would be a
    # second spelling of the same manifest.
    pb.codec.SetInParent()
    pb.codec.name = manifest.codec.name
    pb.codec.k = manifest.codec.k
    pb.codec.m = manifest.codec.m
    pb.encryption.SetInParent()
    encryption = manifest.encryption
    pb.encryption.scheme = _SCHEME_TO_PB[encryption.scheme]
    pb.encryption.capsules.extend(_encode_capsule(c) for c in encryption.capsules)
    pb.encryption.owner = encryption.owner
    if with_signature:
        pb.encryption.signature = encryption.signature
    pb.encryption.key_wrapping = _WRAPPING_TO_PB[encryption.key_wrapping]
    for segment in manifest.segments:
        pb.segments.add(
            plain_size=segment.plain_size,
            stored_size=segment.stored_size,
            compressed=segment.compressed,
            shard_size=segment.shard_size,
            shard_addresses=segment.shard_addresses,
        )
    return pb.SerializeToString(deterministic=True)


# -- decoding ------------------------------------------------------------------


def decode_manifest(data: bytes, *, max_size: int = MAX_MANIFEST_SIZE) -> Manifest:
    """Parse and validate an encoded manifest; ManifestError names what is wrong."""
    # Size before parsing: never spend CPU on a manifest we would refuse anyway.
    if len(data) > max_size:
        raise ManifestError(None, f"{len(data)} bytes is over the {max_size}-byte limit")
    pb = manifest_pb2.Manifest()
    try:
        pb.ParseFromString(data)
    except DecodeError as error:
        # Also raised for invalid UTF-8 in a string field.
        raise ManifestError(None, f"not a valid protobuf encoding ({error})") from error
    # Version first: a newer manifest legitimately has fields this reader
    # does not know, and "unknown version" is the message that helps.
    if pb.format_version != FORMAT_VERSION:
        raise ManifestError(
            "format_version",
            f"unknown version {pb.format_version}; this node reads version {FORMAT_VERSION}",
        )
    _reject_unknown_fields(pb)
    manifest = _from_pb(pb)
    _check_manifest(manifest)
    if _serialize(manifest) != data:
        raise ManifestError(
            None,
            "not in canonical encoding (fields out of order, repeated, or spelled out "
            "at their default value); one manifest must have one ID",
        )
    return manifest


def _reject_unknown_fields(pb: manifest_pb2.Manifest) -> None:
    _reject_unknown_in(pb, None, {})
    _reject_unknown_in(pb.codec, "codec", {})
    _reject_unknown_in(pb.encryption, "encryption", {})
    for i, segment in enumerate(pb.segments):
        _reject_unknown_in(segment, f"segments[{i}]", {})


def _reject_unknown_in(
    pb: manifest_pb2.Manifest | manifest_pb2.Codec | manifest_pb2.Encryption | manifest_pb2.Segment,
    where: str | None,
    reserved: dict[int, str],
) -> None:
    unknown = UnknownFieldSet(pb)
    if len(unknown):
        number: int = unknown[0].field_number
        if number in reserved:
            field = f"{where}.{reserved[number]}" if where else reserved[number]
            raise ManifestError(field, f"field {number} is reserved")
        raise ManifestError(where, f"unknown field number {number}")


def _from_pb(pb: manifest_pb2.Manifest) -> Manifest:
    tier = _TIER_FROM_PB.get(pb.tier)
    if tier is None:
        problem = "missing (TIER_UNSPECIFIED)" if pb.tier == 0 else f"unknown value {pb.tier}"
        raise ManifestError("tier", problem)
    if not pb.HasField("codec"):
        raise ManifestError("codec", "missing")
    if not pb.HasField("encryption"):
        raise ManifestError("encryption", "missing")
    scheme = _SCHEME_FROM_PB.get(pb.encryption.scheme)
    if scheme is None:
        raw = pb.encryption.scheme
        problem = "missing (SCHEME_UNSPECIFIED)" if raw == 0 else f"unknown value {raw}"
        raise ManifestError("encryption.scheme", problem)
    wrapping = _WRAPPING_FROM_PB.get(pb.encryption.key_wrapping)
    if wrapping is None:
        raise ManifestError(
            "encryption.key_wrapping", f"unknown value {pb.encryption.key_wrapping}"
        )
    if len(pb.encryption.capsules) > MAX_CAPSULES:
        # Before decoding any: a hostile manifest must not cost 10^5 parses.
        raise ManifestError("encryption.capsules", f"more than {MAX_CAPSULES}")
    capsules = []
    for i, encoded_capsule in enumerate(pb.encryption.capsules):
        try:
            capsules.append(decode_capsule(encoded_capsule))
        except CapsuleError as error:
            raise ManifestError(f"encryption.capsules[{i}]", str(error)) from None
    return Manifest(
        size=pb.size,
        segment_size=pb.segment_size,
        tier=tier,
        codec=Codec(name=pb.codec.name, k=pb.codec.k, m=pb.codec.m),
        encryption=Encryption(
            scheme=scheme,
            key_wrapping=wrapping,
            capsules=tuple(capsules),
            owner=pb.encryption.owner,
            signature=pb.encryption.signature,
        ),
        segments=tuple(
            SegmentEntry(
                plain_size=s.plain_size,
                stored_size=s.stored_size,
                compressed=s.compressed,
                shard_size=s.shard_size,
                shard_addresses=tuple(s.shard_addresses),
            )
            for s in pb.segments
        ),
        name=pb.name,
        mime_type=pb.mime_type,
        tags=tuple(pb.tags),
        description=pb.description,
        created=pb.created,
        compression=pb.compression,
    )


# -- validation (shared by both directions) --------------------------------------


def _check_manifest(m: Manifest) -> None:
    _check_uint64("size", m.size)
    _check_uint64("created", m.created)
    _check_metadata(m)
    _check_codec(m.codec)
    _check_encryption(m.encryption)
    if not MIN_SEGMENT_SIZE <= m.segment_size <= MAX_SEGMENT_SIZE:
        raise ManifestError(
            "segment_size",
            f"{m.segment_size} is outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}",
        )
    if m.compression not in _COMPRESSIONS:
        raise ManifestError(
            "compression", f"unknown compression {_quote(m.compression)}; known: {_COMPRESSIONS}"
        )
    last = len(m.segments) - 1
    for i, segment in enumerate(m.segments):
        _check_segment(m, i, segment, is_last=i == last)
    total = sum(s.plain_size for s in m.segments)
    if total != m.size:
        raise ManifestError("size", f"is {m.size}, but the segments hold {total} bytes")


def _check_encryption(e: Encryption) -> None:
    """Structure only; whether the signature verifies is node/access.py's job."""
    if e.scheme is EncryptionScheme.NONE and e.key_wrapping is not KeyWrapping.CAPABILITY_ONLY:
        raise ManifestError("encryption.key_wrapping", "public content has no key to wrap")
    level = e.key_wrapping.capsule_level
    if level is None:
        if e.capsules:
            raise ManifestError("encryption.capsules", "present without a key wrapping level")
    else:
        if not e.capsules:
            raise ManifestError("encryption.capsules", f"none, but key wrapping is {level.value}")
        if not e.owner:
            raise ManifestError("encryption.owner", "missing; capsules need a signing owner")
    if len(e.capsules) > MAX_CAPSULES:
        raise ManifestError("encryption.capsules", f"more than {MAX_CAPSULES}")
    for i, capsule in enumerate(e.capsules):
        if capsule.level is not level:
            raise ManifestError(f"encryption.capsules[{i}]", "level differs from key_wrapping")
    recipients = [c.recipient_id for c in e.capsules]
    if any(a >= b for a, b in itertools.pairwise(recipients)):
        raise ManifestError(
            "encryption.capsules", "not sorted by recipient, or a recipient appears twice"
        )
    if len(e.owner) > MAX_OWNER_RECORD_BYTES:
        raise ManifestError("encryption.owner", f"over {MAX_OWNER_RECORD_BYTES} bytes")
    if bool(e.owner) != bool(e.signature):
        missing = "signature" if e.owner else "owner"
        raise ManifestError(f"encryption.{missing}", "missing; owner and signature come together")
    if e.signature and len(e.signature) != signature_size(e.key_wrapping):
        raise ManifestError(
            "encryption.signature",
            f"{len(e.signature)} bytes; {e.key_wrapping.value} needs "
            f"{signature_size(e.key_wrapping)}",
        )


def _check_uint64(field: str, value: int) -> None:
    if not 0 <= value <= _UINT64_MAX:
        raise ManifestError(field, f"{value} is not an unsigned 64-bit integer")


def _check_codec(codec: Codec) -> None:
    if codec.name != CODEC_ZFEC_RS:
        raise ManifestError(
            "codec.name", f"unknown codec {_quote(codec.name)}; known: {CODEC_ZFEC_RS!r}"
        )
    if codec.k < 1:
        raise ManifestError("codec.k", f"is {codec.k}; at least 1 shard must be needed")
    if codec.m < 0:
        raise ManifestError("codec.m", f"is {codec.m}; cannot be negative")
    if codec.k + codec.m > MAX_SHARDS:
        raise ManifestError(
            "codec", f"k + m = {codec.k + codec.m} is over the {MAX_SHARDS}-shard limit"
        )


def _check_segment(m: Manifest, i: int, segment: SegmentEntry, *, is_last: bool) -> None:
    where = f"segments[{i}]"
    for field in ("plain_size", "stored_size", "shard_size"):
        _check_uint64(f"{where}.{field}", getattr(segment, field))
    if segment.plain_size < 1:
        raise ManifestError(f"{where}.plain_size", "is 0; an empty file has no segments")
    if is_last:
        if segment.plain_size > m.segment_size:
            raise ManifestError(
                f"{where}.plain_size",
                f"{segment.plain_size} is over the segment size {m.segment_size}",
            )
    elif segment.plain_size != m.segment_size:
        raise ManifestError(
            f"{where}.plain_size",
            f"is {segment.plain_size}; every segment but the last holds "
            f"segment_size ({m.segment_size}) bytes",
        )
    _check_stored_size(m, where, segment)
    expected_shard = -(-segment.stored_size // m.codec.k)
    if segment.shard_size != expected_shard:
        raise ManifestError(
            f"{where}.shard_size",
            f"is {segment.shard_size}; ceil(stored_size / k) is {expected_shard}",
        )
    shards = m.codec.k + m.codec.m
    if len(segment.shard_addresses) != shards:
        raise ManifestError(
            f"{where}.shard_addresses",
            f"has {len(segment.shard_addresses)} addresses; k + m is {shards}",
        )
    for j, address in enumerate(segment.shard_addresses):
        if len(address) != SHARD_ADDRESS_SIZE:
            raise ManifestError(
                f"{where}.shard_addresses[{j}]",
                f"is {len(address)} bytes; a BLAKE3-256 address is {SHARD_ADDRESS_SIZE}",
            )


def _check_stored_size(m: Manifest, where: str, segment: SegmentEntry) -> None:
    tag = AES_GCM_TAG_SIZE if m.encryption.scheme is EncryptionScheme.AES_256_GCM else 0
    if segment.compressed:
        if m.compression == COMPRESSION_NONE:
            raise ManifestError(f"{where}.compressed", "is set, but compression is 'none'")
        low = _LZ4_MIN_FRAME + tag
        high = lz4_frame_bound(segment.plain_size) + tag
        if not low <= segment.stored_size <= high:
            raise ManifestError(
                f"{where}.stored_size",
                f"{segment.stored_size} is outside {low}..{high}, the possible sizes of an "
                f"lz4 frame of {segment.plain_size} bytes" + (" plus the tag" if tag else ""),
            )
    # AES-GCM ciphertext is exactly as long as its plaintext, plus the tag.
    elif segment.stored_size != segment.plain_size + tag:
        raise ManifestError(
            f"{where}.stored_size",
            f"is {segment.stored_size}; an uncompressed segment of {segment.plain_size} "
            f"bytes stores {segment.plain_size + tag}",
        )


def _check_metadata(m: Manifest) -> None:
    name = _utf8("name", m.name, MAX_NAME_BYTES)
    if _CONTROL.search(name) or "/" in name or "\\" in name or name in (".", ".."):
        raise ManifestError(
            "name",
            f"{_quote(name)} is not a plain file name (no control characters, "
            "path separators, '.' or '..')",
        )
    mime_type = _utf8("mime_type", m.mime_type, MAX_MIME_TYPE_BYTES)
    if mime_type and not _MIME_TYPE.fullmatch(mime_type):
        raise ManifestError("mime_type", f"{_quote(mime_type)} is not a type/subtype")
    _check_tags(m.tags)
    description = _utf8("description", m.description, MAX_DESCRIPTION_BYTES)
    if _DESCRIPTION_CONTROL.search(description):
        raise ManifestError("description", "contains control characters")


def _check_tags(tags: tuple[str, ...]) -> None:
    if len(tags) > MAX_TAGS:
        raise ManifestError("tags", f"{len(tags)} tags; the limit is {MAX_TAGS}")
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        _utf8(f"tags[{i}]", tag, MAX_TAG_BYTES)
        if not tag:
            raise ManifestError(f"tags[{i}]", "is empty")
        if _CONTROL.search(tag):
            raise ManifestError(f"tags[{i}]", "contains control characters")
        if tag in seen:
            raise ManifestError(f"tags[{i}]", f"{_quote(tag)} appears twice")
        seen.add(tag)


def _utf8(field: str, text: str, limit: int) -> str:
    """`text` if it is encodable UTF-8 of at most `limit` bytes."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # lone surrogates, only from our own callers
        raise ManifestError(field, "is not valid UTF-8") from error
    if size > limit:
        raise ManifestError(field, f"is {size} bytes of UTF-8; the limit is {limit}")
    return text


def _quote(text: str) -> str:
    if len(text) <= _QUOTE_CHARS:
        return repr(text)
    return repr(text[:_QUOTE_CHARS]) + "..."
