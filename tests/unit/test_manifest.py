"""Manifest <-> wire bytes: round-trips, golden vectors, canonical form, hostile input.

The golden bytes in tests/vectors/manifest.json were assembled by the small
protobuf writer below from proto/manifest.proto's field numbers, not by our
encoder; their CIDs were made with py-cid. Every rejection test builds its
input with the same writer from a valid manifest with one thing wrong.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import blake3
import cid  # type: ignore[import-untyped]
import lz4.frame
import multihash  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.content.address import format_cid
from node.content.errors import ContentError
from node.content.manifest import (
    AES_GCM_TAG_SIZE,
    CODEC_ZFEC_RS,
    COMPRESSION_LZ4_FRAME,
    COMPRESSION_NONE,
    FORMAT_VERSION,
    MANIFEST_NAMESPACE,
    MAX_DESCRIPTION_BYTES,
    MAX_MANIFEST_SIZE,
    MAX_NAME_BYTES,
    MAX_SEGMENT_SIZE,
    MAX_SHARDS,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MIN_SEGMENT_SIZE,
    Codec,
    Encryption,
    EncryptionScheme,
    Manifest,
    ManifestError,
    SegmentEntry,
    Tier,
    decode_manifest,
    encode_manifest,
    lz4_frame_bound,
    manifest_id,
    manifest_record_key,
)
from node.records.validators import MANIFEST_PREFIX, ManifestValidator, NamespacedValidator
from protocols.framing import encode_uvarint

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "manifest.json"
UINT64_MAX = (1 << 64) - 1

TIER_NUMBERS = {"HOT": 1, "WARM": 2, "COLD": 3, "ARCHIVE": 4}
SCHEME_NUMBERS = {"NONE": 1, "AES_256_GCM": 2}

# -- a tiny protobuf writer: manifests as JSON-like documents -> bytes -----------
#
# A document names fields as proto/manifest.proto does; enums are proto names
# (or raw numbers, to build unknown values); bytes are hex. Scalars at their
# default value are omitted, as proto3 requires; sub-messages are written
# whenever the key is present and not None.

Doc = dict[str, Any]


def uvarint64(value: int) -> bytes:
    # protocols.framing caps varints at 2**63 (frame lengths); manifest
    # fields are full uint64, so the hand assembler has its own encoder.
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return uvarint64(number << 3) + uvarint64(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(data)) + data


def opt_varint(number: int, value: int) -> bytes:
    return field_varint(number, value) if value else b""


def opt_text(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode("utf-8")) if text else b""


def enum_number(value: str | int, names: dict[str, int]) -> int:
    return value if isinstance(value, int) else names[value]


def assemble_segment(s: Doc) -> bytes:
    return (
        opt_varint(1, s["plain_size"])
        + opt_varint(2, s["stored_size"])
        + opt_varint(3, int(s["compressed"]))
        + opt_varint(4, s["shard_size"])
        + b"".join(field_bytes(5, bytes.fromhex(a)) for a in s["shard_addresses"])
    )


def assemble(doc: Doc) -> bytes:
    out = opt_varint(1, doc["format_version"])
    out += opt_varint(2, doc["size"])
    out += opt_text(3, doc["name"])
    out += opt_text(4, doc["mime_type"])
    out += b"".join(field_bytes(5, t.encode("utf-8")) for t in doc["tags"])
    out += opt_text(6, doc["description"])
    out += opt_varint(7, doc["created"])
    out += opt_varint(8, enum_number(doc["tier"], TIER_NUMBERS))
    out += opt_varint(9, doc["segment_size"])
    if doc["codec"] is not None:
        c = doc["codec"]
        out += field_bytes(
            10, opt_text(1, c["name"]) + opt_varint(2, c["k"]) + opt_varint(3, c["m"])
        )
    out += opt_text(11, doc["compression"])
    if doc["encryption"] is not None:
        scheme = enum_number(doc["encryption"]["scheme"], SCHEME_NUMBERS)
        out += field_bytes(12, opt_varint(1, scheme))
    out += b"".join(field_bytes(13, assemble_segment(s)) for s in doc["segments"])
    return out


def to_doc(m: Manifest) -> Doc:
    return {
        "format_version": FORMAT_VERSION,
        "size": m.size,
        "name": m.name,
        "mime_type": m.mime_type,
        "tags": list(m.tags),
        "description": m.description,
        "created": m.created,
        "tier": m.tier.name,
        "segment_size": m.segment_size,
        "codec": {"name": m.codec.name, "k": m.codec.k, "m": m.codec.m},
        "compression": m.compression,
        "encryption": {"scheme": m.encryption.scheme.name},
        "segments": [
            {
                "plain_size": s.plain_size,
                "stored_size": s.stored_size,
                "compressed": s.compressed,
                "shard_size": s.shard_size,
                "shard_addresses": [a.hex() for a in s.shard_addresses],
            }
            for s in m.segments
        ],
    }


def from_doc(doc: Doc) -> Manifest:
    return Manifest(
        size=doc["size"],
        segment_size=doc["segment_size"],
        tier=Tier[doc["tier"]],
        codec=Codec(name=doc["codec"]["name"], k=doc["codec"]["k"], m=doc["codec"]["m"]),
        encryption=Encryption(scheme=EncryptionScheme[doc["encryption"]["scheme"]]),
        segments=tuple(
            SegmentEntry(
                plain_size=s["plain_size"],
                stored_size=s["stored_size"],
                compressed=s["compressed"],
                shard_size=s["shard_size"],
                shard_addresses=tuple(bytes.fromhex(a) for a in s["shard_addresses"]),
            )
            for s in doc["segments"]
        ),
        name=doc["name"],
        mime_type=doc["mime_type"],
        tags=tuple(doc["tags"]),
        description=doc["description"],
        created=doc["created"],
        compression=doc["compression"],
    )


def addresses(segment: int, count: int) -> list[str]:
    return [blake3.blake3(f"shard {segment}.{i}".encode()).hexdigest() for i in range(count)]


# A valid manifest: two encrypted segments (one compressed), 4+2 shards.
BASE: Doc = {
    "format_version": 1,
    "size": MIN_SEGMENT_SIZE + 100,
    "name": "report.pdf",
    "mime_type": "application/pdf",
    "tags": ["finance", "2024"],
    "description": "Quarterly report.\nDraft.",
    "created": 1_700_000_000,
    "tier": "WARM",
    "segment_size": MIN_SEGMENT_SIZE,
    "codec": {"name": "zfec-rs", "k": 4, "m": 2},
    "compression": "lz4-frame",
    "encryption": {"scheme": "AES_256_GCM"},
    "segments": [
        {
            "plain_size": MIN_SEGMENT_SIZE,
            "stored_size": 40_016,
            "compressed": True,
            "shard_size": 10_004,
            "shard_addresses": addresses(0, 6),
        },
        {
            "plain_size": 100,
            "stored_size": 116,
            "compressed": False,
            "shard_size": 29,
            "shard_addresses": addresses(1, 6),
        },
    ],
}


def base() -> Doc:
    return copy.deepcopy(BASE)


def rejected(data: bytes, **kwargs: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        decode_manifest(data, **kwargs)
    return info.value


def rejected_doc(doc: Doc) -> ManifestError:
    return rejected(assemble(doc))


def test_base_document_is_valid() -> None:
    # Every rejection below changes one thing in BASE; BASE itself must pass.
    data = assemble(BASE)
    assert decode_manifest(data) == from_doc(BASE)
    assert encode_manifest(from_doc(BASE)) == data


# -- strategies ----------------------------------------------------------------

_SAFE_TEXT = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\")
names = st.text(_SAFE_TEXT, max_size=60).filter(lambda n: n not in (".", ".."))
tags = st.lists(st.text(_SAFE_TEXT, min_size=1, max_size=16), max_size=6, unique=True)
descriptions = st.text(
    st.characters(exclude_categories=("Cc", "Cs")) | st.sampled_from("\n\t"), max_size=200
)
mime_types = st.sampled_from(
    ["", "application/octet-stream", "text/plain; charset=utf-8", "image/svg+xml", "video/mp4"]
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    k = draw(st.integers(1, 8))
    m = draw(st.integers(0, 4))
    scheme = draw(st.sampled_from(EncryptionScheme))
    compression = draw(st.sampled_from([COMPRESSION_LZ4_FRAME, COMPRESSION_NONE]))
    tag = AES_GCM_TAG_SIZE if scheme is EncryptionScheme.AES_256_GCM else 0
    segment_size = draw(st.integers(MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE))
    count = draw(st.integers(0, 4))
    plain_sizes = [segment_size] * max(count - 1, 0)
    if count:
        plain_sizes.append(draw(st.integers(1, segment_size)))
    segments = []
    for plain in plain_sizes:
        compressed = compression == COMPRESSION_LZ4_FRAME and draw(st.booleans())
        if compressed:
            stored = draw(st.integers(11 + tag, lz4_frame_bound(plain) + tag))
        else:
            stored = plain + tag
        shard_addresses = draw(
            st.lists(st.binary(min_size=32, max_size=32), min_size=k + m, max_size=k + m)
        )
        segments.append(
            SegmentEntry(
                plain_size=plain,
                stored_size=stored,
                compressed=compressed,
                shard_size=-(-stored // k),
                shard_addresses=tuple(shard_addresses),
            )
        )
    return Manifest(
        size=sum(plain_sizes),
        segment_size=segment_size,
        tier=draw(st.sampled_from(Tier)),
        codec=Codec(k=k, m=m),
        encryption=Encryption(scheme=scheme),
        segments=tuple(segments),
        name=draw(names),
        mime_type=draw(mime_types),
        tags=tuple(draw(tags)),
        description=draw(descriptions),
        created=draw(st.integers(0, UINT64_MAX)),
        compression=compression,
    )


# -- round trips ---------------------------------------------------------------


@CHECK
@given(manifests())
def test_round_trip(manifest: Manifest) -> None:
    encoded = encode_manifest(manifest)
    decoded = decode_manifest(encoded)
    assert decoded == manifest
    assert encode_manifest(decoded) == encoded  # one encoding per manifest


@CHECK
@given(manifests())
def test_encoding_matches_hand_assembly(manifest: Manifest) -> None:
    # An independent writer agrees on field numbers, order and omitted defaults.
    assert encode_manifest(manifest) == assemble(to_doc(manifest))


def test_round_trip_at_every_limit() -> None:
    k, m = 200, MAX_SHARDS - 200
    plain = MAX_SEGMENT_SIZE
    stored = lz4_frame_bound(plain) + AES_GCM_TAG_SIZE
    segment = SegmentEntry(
        plain_size=plain,
        stored_size=stored,
        compressed=True,
        shard_size=-(-stored // k),
        shard_addresses=(b"\xff" * 32,) * (k + m),
    )
    manifest = Manifest(
        size=2 * plain,
        segment_size=MAX_SEGMENT_SIZE,
        tier=Tier.ARCHIVE,
        codec=Codec(k=k, m=m),
        encryption=Encryption(scheme=EncryptionScheme.AES_256_GCM),
        segments=(segment, segment),
        name="é" * (MAX_NAME_BYTES // 2) + "x",  # the cap is in UTF-8 bytes
        mime_type='application/vnd.zhtp+json; charset=utf-8; note="a b"',
        tags=tuple(f"{i:02d}".ljust(MAX_TAG_BYTES, "t") for i in range(MAX_TAGS)),
        description="d" * MAX_DESCRIPTION_BYTES,
        created=UINT64_MAX,
    )
    assert len(manifest.name.encode()) == MAX_NAME_BYTES
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_empty_file_has_no_segments() -> None:
    manifest = from_doc({**base(), "size": 0, "segments": []})
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_single_shard_codec_round_trips() -> None:
    doc = base()
    doc["codec"] = {"name": "zfec-rs", "k": 1, "m": 0}
    for segment in doc["segments"]:
        segment["shard_size"] = segment["stored_size"]
        segment["shard_addresses"] = segment["shard_addresses"][:1]
    assert decode_manifest(assemble(doc)) == from_doc(doc)


# -- golden vectors ------------------------------------------------------------


def _load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


VECTOR_NAMES = [v["name"] for v in _load_vectors()]


def test_vector_names_are_unique() -> None:
    assert len(VECTOR_NAMES) >= 3
    assert len(set(VECTOR_NAMES)) == len(VECTOR_NAMES)


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_encode(vector: dict[str, Any]) -> None:
    assert encode_manifest(from_doc(vector["manifest"])).hex() == vector["encoded"]


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_decode(vector: dict[str, Any]) -> None:
    assert decode_manifest(bytes.fromhex(vector["encoded"])) == from_doc(vector["manifest"])


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_matches_hand_assembly(vector: dict[str, Any]) -> None:
    assert assemble(vector["manifest"]).hex() == vector["encoded"]


@pytest.mark.parametrize("vector", _load_vectors(), ids=VECTOR_NAMES)
def test_golden_vector_id_cid_and_record_key(vector: dict[str, Any]) -> None:
    encoded = bytes.fromhex(vector["encoded"])
    digest = blake3.blake3(encoded).digest()
    assert manifest_id(encoded).hex() == digest.hex() == vector["id"]
    assert format_cid(digest) == vector["cid"]
    # The CID as py-cid writes it: CIDv1, protobuf codec, blake3 multihash, base32.
    theirs = cid.make_cid(1, "protobuf", multihash.encode(digest, "blake3")).encode("base32")
    assert theirs.decode("ascii") == vector["cid"]
    assert manifest_record_key(digest).hex() == vector["record_key"]


# -- identity and record keys ----------------------------------------------------


def test_manifest_id_is_blake3_of_the_bytes() -> None:
    data = assemble(BASE)
    assert manifest_id(data) == blake3.blake3(data).digest()
    assert manifest_id(data + b"\x00") != manifest_id(data)


def test_record_key_is_namespace_plus_raw_digest() -> None:
    digest = bytes(range(32))
    assert manifest_record_key(digest) == b"/zhtp/manifest/" + digest
    assert MANIFEST_NAMESPACE.encode("ascii") == MANIFEST_PREFIX


def test_record_key_passes_the_records_layer() -> None:
    data = assemble(BASE)
    key = manifest_record_key(manifest_id(data))
    ManifestValidator().validate(key, data, 0)
    NamespacedValidator({MANIFEST_PREFIX: ManifestValidator()}).validate(key, data, 0)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_record_key_rejects_wrong_digest_length(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        manifest_record_key(b"\x01" * length)


# -- whole-encoding failures -----------------------------------------------------


def test_garbage_rejected() -> None:
    error = rejected(b"\xff\xff\xff")
    assert error.field is None
    assert "protobuf" in str(error)


def test_truncated_manifest_rejected() -> None:
    assert rejected(assemble(BASE)[:-5]).field is None


def test_invalid_utf8_in_a_string_rejected() -> None:
    data = field_varint(1, 1) + field_bytes(3, b"\xff\xfe")
    assert "protobuf" in str(rejected(data))


def test_oversized_manifest_rejected_before_parsing() -> None:
    error = rejected(b"\x00" * (MAX_MANIFEST_SIZE + 1))
    assert error.field is None
    assert "limit" in str(error)


def test_caller_can_lower_the_size_limit() -> None:
    data = assemble(BASE)
    assert decode_manifest(data, max_size=len(data)) == from_doc(BASE)
    assert "limit" in str(rejected(data, max_size=len(data) - 1))


def test_missing_format_version_rejected() -> None:
    assert rejected_doc({**base(), "format_version": 0}).field == "format_version"


def test_newer_format_version_rejected() -> None:
    error = rejected_doc({**base(), "format_version": 2})
    assert error.field == "format_version"
    assert "unknown version 2" in str(error)


def test_format_version_beyond_32_bits_rejected() -> None:
    # uint32 parsing keeps the low bits (1); the canonical check catches it.
    error = rejected_doc({**base(), "format_version": (1 << 32) + 1})
    assert error.field is None
    assert "canonical" in str(error)


def test_unknown_top_level_field_rejected() -> None:
    error = rejected(assemble(BASE) + field_varint(14, 1))
    assert error.field is None
    assert "unknown field number 14" in str(error)


def test_unknown_codec_field_rejected() -> None:
    codec = field_bytes(1, b"zfec-rs") + field_varint(2, 4) + field_varint(3, 2)
    data = assemble({**base(), "codec": None}) + field_bytes(10, codec + field_varint(9, 1))
    assert rejected(data).field == "codec"


def test_unknown_segment_field_rejected() -> None:
    doc = base()
    last = assemble_segment(doc["segments"].pop())
    data = assemble(doc) + field_bytes(13, last + field_varint(6, 1))
    assert rejected(data).field == "segments[1]"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        # a capsule with no key wrapping level
        (field_bytes(2, b"\x01" * 81), "encryption.capsules[0]"),
        # an owner with no signature
        (field_bytes(3, b"\x01"), "encryption.signature"),
        # a signature with no owner
        (field_bytes(4, b"\x01" * 64), "encryption.owner"),
        # standard wrapping with no capsules
        (field_varint(5, 1), "encryption.capsules"),
        # an unknown wrapping
        (field_varint(5, 9), "encryption.key_wrapping"),
    ],
)
def test_sharing_fields_checked_for_structure(fields: bytes, where: str) -> None:
    encryption = field_varint(1, 2) + fields
    data = assemble({**base(), "encryption": None}) + field_bytes(12, encryption)
    assert rejected(data).field == where


def test_public_content_cannot_wrap_a_key() -> None:
    encryption = field_varint(1, 1) + field_varint(5, 1)
    data = assemble({**base(), "encryption": None}) + field_bytes(12, encryption)
    assert rejected(data).field == "encryption.key_wrapping"


# -- non-canonical encodings ---------------------------------------------------


def test_fields_out_of_order_rejected() -> None:
    data = assemble({**base(), "name": ""}) + field_bytes(3, b"report.pdf")
    assert "canonical" in str(rejected(data))


def test_default_value_spelled_out_rejected() -> None:
    # An empty description (field 6) written out instead of omitted.
    doc = {**base(), "description": ""}
    created = field_varint(7, doc["created"])
    head, tail = assemble(doc).split(created, 1)
    spelled = head + field_bytes(6, b"") + created + tail
    assert "canonical" in str(rejected(spelled))


def test_repeated_scalar_field_rejected() -> None:
    # The same "size" twice parses as one; the same manifest must not have two IDs.
    doubled = assemble(BASE) + field_varint(2, BASE["size"])
    assert "canonical" in str(rejected(doubled))


def test_overlong_varint_rejected() -> None:
    doc = base()
    canonical = assemble(doc)
    # created encoded with a redundant continuation group.
    short = field_varint(7, doc["created"])
    long = encode_uvarint(7 << 3) + bytes(
        [*(b | 0x80 for b in encode_uvarint(doc["created"])), 0x00]
    )
    assert rejected(canonical.replace(short, long)).field is None


def test_empty_codec_message_rejected() -> None:
    data = assemble({**base(), "codec": None}) + field_bytes(10, b"")
    assert rejected(data).field == "codec.name"


# -- required fields and enums ---------------------------------------------------


def test_missing_tier_rejected() -> None:
    error = rejected_doc({**base(), "tier": 0})
    assert error.field == "tier"
    assert "TIER_UNSPECIFIED" in str(error)


def test_unknown_tier_rejected() -> None:
    error = rejected_doc({**base(), "tier": 9})
    assert error.field == "tier"
    assert "unknown value 9" in str(error)


def test_missing_codec_rejected() -> None:
    assert rejected_doc({**base(), "codec": None}).field == "codec"


def test_missing_encryption_rejected() -> None:
    assert rejected_doc({**base(), "encryption": None}).field == "encryption"


def test_unspecified_encryption_scheme_rejected() -> None:
    error = rejected_doc({**base(), "encryption": {"scheme": 0}})
    assert error.field == "encryption.scheme"
    assert "SCHEME_UNSPECIFIED" in str(error)


def test_unknown_encryption_scheme_rejected() -> None:
    error = rejected_doc({**base(), "encryption": {"scheme": 7}})
    assert error.field == "encryption.scheme"
    assert "unknown value 7" in str(error)


# -- codec ---------------------------------------------------------------------


def test_unknown_codec_name_rejected() -> None:
    error = rejected_doc({**base(), "codec": {"name": "reed-solomon", "k": 4, "m": 2}})
    assert error.field == "codec.name"
    assert "'reed-solomon'" in str(error)


def test_zero_k_rejected() -> None:
    assert rejected_doc({**base(), "codec": {"name": "zfec-rs", "k": 0, "m": 2}}).field == (
        "codec.k"
    )


def test_too_many_shards_rejected() -> None:
    doc = {**base(), "codec": {"name": CODEC_ZFEC_RS, "k": 200, "m": 57}}
    error = rejected_doc(doc)
    assert error.field == "codec"
    assert "257" in str(error)


# -- segment size and compression ------------------------------------------------


def test_segment_size_below_minimum_rejected() -> None:
    doc = {**base(), "segment_size": MIN_SEGMENT_SIZE - 1}
    assert rejected_doc(doc).field == "segment_size"


def test_segment_size_above_maximum_rejected() -> None:
    doc = {**base(), "segment_size": MAX_SEGMENT_SIZE + 1}
    assert rejected_doc(doc).field == "segment_size"


def test_unknown_compression_rejected() -> None:
    error = rejected_doc({**base(), "compression": "zstd"})
    assert error.field == "compression"
    assert "'zstd'" in str(error)


def test_missing_compression_rejected() -> None:
    assert rejected_doc({**base(), "compression": ""}).field == "compression"


def test_compressed_segment_without_compression_rejected() -> None:
    assert rejected_doc({**base(), "compression": "none"}).field == "segments[0].compressed"


# -- segments: sizes -------------------------------------------------------------


def test_empty_segment_rejected() -> None:
    doc = base()
    doc["segments"][1].update(plain_size=0, stored_size=16, shard_size=4)
    doc["size"] = MIN_SEGMENT_SIZE
    assert rejected_doc(doc).field == "segments[1].plain_size"


def test_short_segment_before_the_last_rejected() -> None:
    doc = base()
    doc["segments"][0].update(plain_size=MIN_SEGMENT_SIZE - 1)
    doc["size"] -= 1
    error = rejected_doc(doc)
    assert error.field == "segments[0].plain_size"
    assert "every segment but the last" in str(error)


def test_last_segment_over_segment_size_rejected() -> None:
    doc = base()
    doc["segments"][1].update(plain_size=MIN_SEGMENT_SIZE + 1)
    doc["segments"][1].update(stored_size=MIN_SEGMENT_SIZE + 17)
    doc["size"] = 2 * MIN_SEGMENT_SIZE + 1
    assert rejected_doc(doc).field == "segments[1].plain_size"


def test_size_larger_than_segments_rejected() -> None:
    error = rejected_doc({**base(), "size": BASE["size"] + 1})
    assert error.field == "size"
    assert "segments hold" in str(error)


def test_size_smaller_than_segments_rejected() -> None:
    assert rejected_doc({**base(), "size": BASE["size"] - 1}).field == "size"


def test_size_without_segments_rejected() -> None:
    assert rejected_doc({**base(), "segments": []}).field == "size"


def test_uncompressed_unencrypted_stored_size_must_equal_plain_size() -> None:
    doc = {**base(), "encryption": {"scheme": "NONE"}, "compression": "none"}
    doc["segments"] = [
        {**doc["segments"][0], "compressed": False, "stored_size": MIN_SEGMENT_SIZE},
        {**doc["segments"][1], "stored_size": 100, "shard_size": 25},
    ]
    doc["segments"][0]["shard_size"] = MIN_SEGMENT_SIZE // 4
    assert decode_manifest(assemble(doc)) == from_doc(doc)
    doc["segments"][1]["stored_size"] = 101
    assert rejected_doc(doc).field == "segments[1].stored_size"


def test_uncompressed_encrypted_stored_size_must_include_the_tag() -> None:
    doc = base()
    doc["segments"][1].update(stored_size=100, shard_size=25)  # tag left out
    error = rejected_doc(doc)
    assert error.field == "segments[1].stored_size"
    assert "116" in str(error)


def test_compressed_stored_size_over_lz4_bound_rejected() -> None:
    doc = base()
    too_big = lz4_frame_bound(MIN_SEGMENT_SIZE) + AES_GCM_TAG_SIZE + 1
    doc["segments"][0].update(stored_size=too_big, shard_size=-(-too_big // 4))
    assert rejected_doc(doc).field == "segments[0].stored_size"


def test_compressed_stored_size_at_lz4_bound_accepted() -> None:
    doc = base()
    bound = lz4_frame_bound(MIN_SEGMENT_SIZE) + AES_GCM_TAG_SIZE
    doc["segments"][0].update(stored_size=bound, shard_size=-(-bound // 4))
    assert decode_manifest(assemble(doc)) == from_doc(doc)


def test_compressed_stored_size_below_smallest_frame_rejected() -> None:
    doc = base()
    doc["segments"][0].update(stored_size=AES_GCM_TAG_SIZE + 10, shard_size=7)
    assert rejected_doc(doc).field == "segments[0].stored_size"


def test_lz4_bound_covers_real_frames() -> None:
    for size in (1, 1000, 65_536, 65_537, 300_000):
        data = os.urandom(size)  # incompressible: the worst case
        for block_size in (lz4.frame.BLOCKSIZE_MAX64KB, lz4.frame.BLOCKSIZE_MAX4MB):
            frame = lz4.frame.compress(
                data,
                block_size=block_size,
                content_checksum=True,
                block_checksum=True,
                store_size=True,
            )
            assert len(frame) <= lz4_frame_bound(size)
    assert len(lz4.frame.compress(b"")) >= 11  # the smallest frame we accept


def test_wrong_shard_size_rejected() -> None:
    doc = base()
    doc["segments"][0]["shard_size"] = 10_003
    error = rejected_doc(doc)
    assert error.field == "segments[0].shard_size"
    assert "10004" in str(error)


# -- segments: addresses ---------------------------------------------------------


def test_too_few_shard_addresses_rejected() -> None:
    doc = base()
    doc["segments"][1]["shard_addresses"].pop()
    assert rejected_doc(doc).field == "segments[1].shard_addresses"


def test_too_many_shard_addresses_rejected() -> None:
    doc = base()
    doc["segments"][0]["shard_addresses"].append("00" * 32)
    assert rejected_doc(doc).field == "segments[0].shard_addresses"


@pytest.mark.parametrize("length", [0, 20, 31, 33, 64])
def test_shard_address_of_wrong_length_rejected(length: int) -> None:
    doc = base()
    doc["segments"][1]["shard_addresses"][3] = "ab" * length
    assert rejected_doc(doc).field == "segments[1].shard_addresses[3]"


# -- metadata --------------------------------------------------------------------


def test_name_too_long_rejected() -> None:
    error = rejected_doc({**base(), "name": "é" * 128})  # 256 bytes
    assert error.field == "name"
    assert "256 bytes" in str(error)


@pytest.mark.parametrize(
    "name", ["a/b", "..\\x", "\x00", "tab\tname", "bell\x07", "del\x7f", ".", ".."]
)
def test_name_that_is_not_a_plain_file_name_rejected(name: str) -> None:
    assert rejected_doc({**base(), "name": name}).field == "name"


def test_hostile_name_is_quoted_only_in_part() -> None:
    error = rejected_doc({**base(), "name": "/" + "x" * 200})
    assert "x" * 50 not in str(error)


@pytest.mark.parametrize(
    "mime_type", ["pdf", "text/", "/plain", "text/plain;", "text/plain; charset", "a b/c"]
)
def test_malformed_mime_type_rejected(mime_type: str) -> None:
    assert rejected_doc({**base(), "mime_type": mime_type}).field == "mime_type"


def test_mime_type_too_long_rejected() -> None:
    mime_type = "text/" + "x" * 251
    assert rejected_doc({**base(), "mime_type": mime_type}).field == "mime_type"


def test_too_many_tags_rejected() -> None:
    doc = {**base(), "tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}
    assert rejected_doc(doc).field == "tags"


def test_tag_too_long_rejected() -> None:
    doc = {**base(), "tags": ["ok", "t" * (MAX_TAG_BYTES + 1)]}
    assert rejected_doc(doc).field == "tags[1]"


def test_empty_tag_rejected() -> None:
    assert rejected_doc({**base(), "tags": ["ok", ""]}).field == "tags[1]"


def test_duplicate_tag_rejected() -> None:
    assert rejected_doc({**base(), "tags": ["a", "b", "a"]}).field == "tags[2]"


def test_tag_with_control_character_rejected() -> None:
    assert rejected_doc({**base(), "tags": ["new\nline"]}).field == "tags[0]"


def test_description_too_long_rejected() -> None:
    doc = {**base(), "description": "d" * (MAX_DESCRIPTION_BYTES + 1)}
    assert rejected_doc(doc).field == "description"


def test_description_with_control_character_rejected() -> None:
    assert rejected_doc({**base(), "description": "esc\x1b[2J"}).field == "description"


# -- the encoder refuses what a peer would refuse --------------------------------


def test_encode_refuses_an_invalid_manifest() -> None:
    bad = from_doc({**base(), "codec": {"name": "zfec-rs", "k": 0, "m": 2}})
    with pytest.raises(ManifestError) as info:
        encode_manifest(bad)
    assert info.value.field == "codec.k"


def test_encode_refuses_negative_numbers() -> None:
    with pytest.raises(ManifestError) as info:
        encode_manifest(from_doc({**base(), "created": -1}))
    assert info.value.field == "created"


def test_encode_refuses_a_name_that_is_not_utf8() -> None:
    with pytest.raises(ManifestError) as info:
        encode_manifest(from_doc({**base(), "name": "\udc80"}))
    assert info.value.field == "name"


def test_encode_refuses_a_manifest_over_the_size_limit() -> None:
    k, m = 1, MAX_SHARDS - 1
    segment = SegmentEntry(
        plain_size=MIN_SEGMENT_SIZE,
        stored_size=MIN_SEGMENT_SIZE,
        compressed=False,
        shard_size=MIN_SEGMENT_SIZE,
        shard_addresses=(b"\x00" * 32,) * (k + m),
    )
    count = MAX_MANIFEST_SIZE // (34 * (k + m)) + 1
    manifest = Manifest(
        size=count * MIN_SEGMENT_SIZE,
        segment_size=MIN_SEGMENT_SIZE,
        tier=Tier.HOT,
        codec=Codec(k=k, m=m),
        encryption=Encryption(scheme=EncryptionScheme.NONE),
        segments=(segment,) * count,
        compression=COMPRESSION_NONE,
    )
    with pytest.raises(ManifestError) as info:
        encode_manifest(manifest)
    assert info.value.field is None
    assert "limit" in str(info.value)


def test_manifest_error_is_a_content_error() -> None:
    # Fetching code catches ContentError for every kind of bad content.
    assert isinstance(rejected(b"\xff"), ContentError)
