"""Record validators: blob and name namespaces, dispatch, key text forms."""

from __future__ import annotations

import base64

import blake3
import pytest
from Crypto.Signature import eddsa
from hypothesis import assume, given
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from node.identity import Identity, format_identity_id
from node.records.names import (
    NAME_PREFIX,
    NameRecord,
    NameValidator,
    make_name_record,
    name_key,
    name_key_for,
    parse_name_key,
    signing_payload,
)
from node.records.validators import (
    BLOB_PREFIX,
    MANIFEST_PREFIX,
    MAX_KEY_SIZE,
    BlobValidator,
    ManifestValidator,
    NamespacedValidator,
    RecordInvalid,
    blob_key,
    format_key,
    parse_key,
)

NOW = 1_700_000_000_000
LATER = NOW + 3_600_000


def _identity(tag: int) -> Identity:
    # Deterministic and cheap (no ML-DSA key): signatures are reproducible.
    return Identity(
        ed25519_seed=bytes([tag]) * 32,
        x25519_seed=bytes([tag + 0x10]) * 32,
        xwing_seed=bytes([tag + 0x20]) * 32,
        mldsa_seed=None,
    )


def _ed25519_public_key(identity: Identity) -> bytes:
    return identity.public_identity(name="test", sequence=0).ed25519_public_key


ALICE = _identity(1)
MALLORY = _identity(2)
ALICE_PK = _ed25519_public_key(ALICE)
ALICE_ZID = format_identity_id(ALICE.identity_id)
MALLORY_PK = _ed25519_public_key(MALLORY)
# The neutral point (y = 1): every (R = neutral, S = 0) "verifies" under it.
SMALL_ORDER_PK = b"\x01" + bytes(31)


def _reason(excinfo: pytest.ExceptionInfo[RecordInvalid]) -> str:
    return excinfo.value.reason


def _resign(key: bytes, record: NameRecord, signer: Identity = ALICE) -> NameRecord:
    payload = signing_payload(key, record.value, record.sequence, record.expires_at_ms)
    return NameRecord(
        value=record.value,
        sequence=record.sequence,
        expires_at_ms=record.expires_at_ms,
        public_key=_ed25519_public_key(signer),
        signature=signer.sign_ed25519(payload),
    )


def _with(record: NameRecord, **changes: object) -> NameRecord:
    fields = {
        "value": record.value,
        "sequence": record.sequence,
        "expires_at_ms": record.expires_at_ms,
        "public_key": record.public_key,
        "signature": record.signature,
    }
    fields.update(changes)
    return NameRecord(**fields)  # type: ignore[arg-type]


# -- blobs ------------------------------------------------------------------


def test_blob_key_is_prefix_plus_blake3() -> None:
    assert blob_key(b"hello") == BLOB_PREFIX + blake3.blake3(b"hello").digest()
    assert len(blob_key(b"")) == len(BLOB_PREFIX) + 32


def test_blob_good() -> None:
    value = b"some content"
    BlobValidator().validate(blob_key(value), value, NOW)


def test_blob_bad_hash() -> None:
    with pytest.raises(RecordInvalid, match="hash"):
        BlobValidator().validate(blob_key(b"original"), b"substituted", NOW)


def test_blob_oversize() -> None:
    value = b"x" * 101
    validator = BlobValidator(max_value_size=100)
    with pytest.raises(RecordInvalid, match="too large"):
        validator.validate(blob_key(value), value, NOW)
    validator.validate(blob_key(value[:100]), value[:100], NOW)


@pytest.mark.parametrize("digest_len", [0, 31, 33, 64])
def test_blob_wrong_key_length(digest_len: int) -> None:
    value = b"v"
    key = BLOB_PREFIX + (blake3.blake3(value).digest() * 2)[:digest_len]
    with pytest.raises(RecordInvalid, match="32 bytes"):
        BlobValidator().validate(key, value, NOW)


def test_blob_wrong_prefix() -> None:
    with pytest.raises(RecordInvalid):
        BlobValidator().validate(b"/zhtp/blub/" + blake3.blake3(b"v").digest(), b"v", NOW)


def test_blob_select_and_expiry() -> None:
    value = b"v"
    assert BlobValidator().select(blob_key(value), [value, value]) == 0
    assert BlobValidator().expires_at_ms(blob_key(value), value) is None


# -- name records -----------------------------------------------------------


def test_name_key_layout() -> None:
    # The owner is the identity ID text form, computed here by hand.
    digest = blake3.blake3(b"zhtp-identity-id-v1\x00" + ALICE_PK).digest()
    owner = "zid1" + base64.b32encode(digest).decode().rstrip("=").lower()
    assert owner == format_identity_id(ALICE.identity_id)
    key = name_key(ALICE_PK, "site")
    assert key == NAME_PREFIX + owner.encode() + b"/site"
    assert parse_name_key(key) == (owner, "site")


def test_name_key_for_needs_only_the_identity_id() -> None:
    assert name_key_for(ALICE.identity_id, "site") == name_key(ALICE_PK, "site")
    with pytest.raises(ValueError):
        name_key_for(ALICE.identity_id[:31], "site")
    with pytest.raises(ValueError):
        name_key(ALICE_PK + b"\x00", "site")  # not a raw 32-byte key


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "tab\there", "nl\n"])
def test_name_key_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        name_key(ALICE_PK, name)


def test_name_key_accepts_edge_names() -> None:
    name_key(ALICE_PK, "x" * 128)
    name_key(ALICE_PK, "é" * 64)  # 128 bytes of UTF-8
    with pytest.raises(ValueError):
        name_key(ALICE_PK, "é" * 65)  # 130 bytes


def test_name_good() -> None:
    key, value = make_name_record(ALICE, "site", b"cid-1", 1, LATER)
    validator = NameValidator()
    validator.validate(key, value, NOW)
    assert validator.expires_at_ms(key, value) == LATER
    record = NameRecord.decode(value)
    assert (record.value, record.sequence, record.expires_at_ms) == (b"cid-1", 1, LATER)


def test_name_signing_payload_golden() -> None:
    # Pinned: other implementations must produce exactly these bytes.
    payload = signing_payload(b"/k", b"val", 7, 0x0102030405060708)
    assert payload == (
        b"zhtp-name-record-v1\x00"
        + b"\x00\x00\x00\x02/k"
        + b"\x00\x00\x00\x03val"
        + b"\x00\x00\x00\x00\x00\x00\x00\x07"
        + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    )


def test_name_record_golden() -> None:
    # ed25519 signatures are deterministic: a fixed seed gives fixed bytes.
    # A regression pin; the signature is also checked independently below.
    key, value = make_name_record(ALICE, "site", b"cid", 1, 2)
    assert key == b"/zhtp/name/zid17iu744ful2gxnhqhlyqtf7kocx5tfatdav6uzw5ce5cild4764wq/site"
    assert value == bytes.fromhex(
        "0a036369641001180222208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3"
        "748801b40f6f5c2a402d2e01ed17e0c0f8cb4eaf2034b883ce236d9930e7b4a8bc4dba4a"
        "a89f2a4ce7ca6a454f275799cf8bc814db10c15f1a3d72992cea8d2b9ee77e2a1db0742009"
    )
    # Verify with plain nacl over a hand-built payload, not via our own code.
    raw_public_key = NameRecord.decode(value).public_key
    assert raw_public_key == ALICE_PK
    payload = (
        b"zhtp-name-record-v1\x00"
        + len(key).to_bytes(4, "big")
        + key
        + b"\x00\x00\x00\x03cid"
        + (1).to_bytes(8, "big")
        + (2).to_bytes(8, "big")
    )
    VerifyKey(raw_public_key).verify(payload, NameRecord.decode(value).signature)
    NameValidator().validate(key, value, 1)


def test_name_signed_by_another_key() -> None:
    # Mallory signs a record for a key that names Alice as owner.
    key = name_key(ALICE_PK, "site")
    forged = _resign(key, NameRecord(b"evil", 9, LATER, b"", b""), signer=MALLORY)
    with pytest.raises(RecordInvalid, match="owner"):
        NameValidator().validate(key, forged.encode(), NOW)


@pytest.mark.parametrize(
    "change",
    [{"value": b"cid-2"}, {"sequence": 2}, {"expires_at_ms": LATER + 1}],
    ids=["value", "sequence", "expiry"],
)
def test_name_tampered_fields(change: dict[str, object]) -> None:
    key, value = make_name_record(ALICE, "site", b"cid-1", 1, LATER)
    tampered = _with(NameRecord.decode(value), **change)
    with pytest.raises(RecordInvalid, match="signature"):
        NameValidator().validate(key, tampered.encode(), NOW)


def test_name_tampered_signature() -> None:
    key, value = make_name_record(ALICE, "site", b"cid-1", 1, LATER)
    record = NameRecord.decode(value)
    flipped = bytes([record.signature[0] ^ 1]) + record.signature[1:]
    with pytest.raises(RecordInvalid, match="signature"):
        NameValidator().validate(key, _with(record, signature=flipped).encode(), NOW)


def test_name_replay_under_another_name() -> None:
    _, value = make_name_record(ALICE, "site", b"cid-1", 1, LATER)
    other_key = name_key(ALICE_PK, "blog")
    with pytest.raises(RecordInvalid, match="signature"):
        NameValidator().validate(other_key, value, NOW)


def test_name_replay_under_another_owner() -> None:
    _, value = make_name_record(ALICE, "site", b"cid-1", 1, LATER)
    with pytest.raises(RecordInvalid, match="owner"):
        NameValidator().validate(name_key(MALLORY_PK, "site"), value, NOW)


def test_name_expired() -> None:
    key, value = make_name_record(ALICE, "site", b"cid", 1, NOW)
    validator = NameValidator()
    validator.validate(key, value, NOW - 1)
    with pytest.raises(RecordInvalid, match="expired"):
        validator.validate(key, value, NOW)


def test_name_unsigned() -> None:
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    unsigned = _with(NameRecord.decode(value), signature=b"").encode()
    with pytest.raises(RecordInvalid, match="unsigned"):
        NameValidator().validate(key, unsigned, NOW)
    no_key = _with(NameRecord.decode(value), public_key=b"").encode()
    with pytest.raises(RecordInvalid, match="public key"):
        NameValidator().validate(key, no_key, NOW)


def test_name_short_signature() -> None:
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    short = _with(NameRecord.decode(value), signature=b"\x00").encode()
    with pytest.raises(RecordInvalid, match="signature"):
        NameValidator().validate(key, short, NOW)


@pytest.mark.parametrize(
    "public_key",
    [
        ALICE_PK[:31],
        ALICE_PK + b"\x00",
        b"\x08\x01\x12\x20" + ALICE_PK,  # the old libp2p-protobuf form of the same key
    ],
    ids=["short", "long", "libp2p-protobuf"],
)
def test_name_public_key_of_the_wrong_length(public_key: bytes) -> None:
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    wrong = _with(NameRecord.decode(value), public_key=public_key).encode()
    with pytest.raises(RecordInvalid, match="public key has the wrong length"):
        NameValidator().validate(key, wrong, NOW)


def test_name_small_order_key_refused() -> None:
    # An "identity" whose key is the neutral point: the signature (R = neutral,
    # S = 0) passes plain RFC 8032 verification for every message, so anyone
    # could publish anything under that owner's names.
    key = name_key(SMALL_ORDER_PK, "site")
    payload = signing_payload(key, b"evil", 1, LATER)
    forged_signature = SMALL_ORDER_PK + bytes(32)
    eddsa.new(eddsa.import_public_key(SMALL_ORDER_PK), "rfc8032").verify(payload, forged_signature)
    forged = NameRecord(b"evil", 1, LATER, SMALL_ORDER_PK, forged_signature)
    with pytest.raises(RecordInvalid, match="small order"):
        NameValidator().validate(key, forged.encode(), NOW)


def test_name_garbage_public_key() -> None:
    # 32 bytes that are not a curve point, under a key naming their own hash:
    # the ID check passes, decoding the point does not.
    not_a_point = (2**255 - 19 + 1).to_bytes(32, "little")  # y >= p: not canonical
    key = name_key(not_a_point, "site")
    record = NameRecord(b"cid", 1, LATER, not_a_point, bytes(64))
    with pytest.raises(RecordInvalid, match="public key is not an Ed25519 curve point"):
        NameValidator().validate(key, record.encode(), NOW)
    # Garbage of any other shape under Alice's key is refused too.
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    for public_key, reason in (
        (b"\xff\xff\xff", "public key has the wrong length"),
        (bytes(32), "does not belong to the owner"),
        (b"\xff" * 32, "does not belong to the owner"),
    ):
        with pytest.raises(RecordInvalid, match=reason):
            NameValidator().validate(
                key, _with(NameRecord.decode(value), public_key=public_key).encode(), NOW
            )


@pytest.mark.parametrize("garbage", [b"\xff", b"\x0a\x05ab", b"\x08", b"", b"\x00\x00"])
def test_name_garbage_bytes(garbage: bytes) -> None:
    key = name_key(ALICE_PK, "site")
    with pytest.raises(RecordInvalid):
        NameRecord.decode(garbage)
    with pytest.raises(RecordInvalid):
        NameValidator().validate(key, garbage, NOW)


def test_name_unknown_fields_refused_by_validator() -> None:
    # decode() skips unknown fields, as protobuf does, but bytes outside the
    # signature must not make a "different" valid copy of a record.
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    padded = value + b"\x32\x03pad"  # field 6, length-delimited
    assert NameRecord.decode(padded) == NameRecord.decode(value)
    with pytest.raises(RecordInvalid, match="canonical"):
        NameValidator().validate(key, padded, NOW)


def test_name_oversize() -> None:
    key, value = make_name_record(ALICE, "site", b"x" * 200, 1, LATER)
    NameValidator(max_value_size=len(value)).validate(key, value, NOW)
    with pytest.raises(RecordInvalid, match="too large"):
        NameValidator(max_value_size=len(value) - 1).validate(key, value, NOW)


@pytest.mark.parametrize(
    "key",
    [
        b"/zhtp/name/",
        b"/zhtp/name/owner",
        b"/zhtp/name/owner/",
        b"/zhtp/name//site",
        b"/zhtp/name/owner/a/b",
        b"/zhtp/name/own-er/site",
        b"/zhtp/name/owner/\xff",
        b"/zhtp/name/owner/" + b"x" * 129,
        # A base58 PeerID: names are no longer owned by node keys.
        b"/zhtp/name/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5/site",
        # Alice's ID, but upper case, truncated, or with non-ASCII.
        NAME_PREFIX + ALICE_ZID.upper().encode() + b"/site",
        NAME_PREFIX + ALICE_ZID[:-1].encode() + b"/site",
        NAME_PREFIX + ALICE_ZID.replace("zid1", "zïd1").encode() + b"/site",
    ],
)
def test_name_malformed_keys(key: bytes) -> None:
    _, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    with pytest.raises(RecordInvalid):
        NameValidator().validate(key, value, NOW)


def test_name_select_highest_sequence_wins() -> None:
    validator = NameValidator()
    values = [make_name_record(ALICE, "site", b"v", seq, LATER)[1] for seq in (3, 7, 5)]
    key = name_key(ALICE_PK, "site")
    assert validator.select(key, values) == 1
    assert validator.select(key, values[::-1]) == 1


def test_name_replayed_older_record_never_wins() -> None:
    # An old record is still validly signed, so a holder accepts it in
    # isolation; select must still keep the newer one, even when the old one
    # has the later expiry and the greater bytes.
    validator = NameValidator()
    key, newer = make_name_record(ALICE, "site", b"a", 2, LATER)
    _, older = make_name_record(ALICE, "site", b"zzz", 1, LATER + 1)
    validator.validate(key, older, NOW)
    assert older > newer
    assert validator.select(key, [newer, older]) == 0
    assert validator.select(key, [older, newer]) == 1


def test_name_select_ties() -> None:
    validator = NameValidator()
    key = name_key(ALICE_PK, "site")
    short = make_name_record(ALICE, "site", b"v", 4, LATER)[1]
    long = make_name_record(ALICE, "site", b"v", 4, LATER + 1)[1]
    # Same sequence: later expiry wins, in either order.
    assert validator.select(key, [short, long]) == 1
    assert validator.select(key, [long, short]) == 0
    # Same sequence and expiry: greatest encoded bytes, in either order.
    a = make_name_record(ALICE, "site", b"aaa", 4, LATER)[1]
    b = make_name_record(ALICE, "site", b"bbb", 4, LATER)[1]
    winner = max(a, b)
    assert [a, b][validator.select(key, [a, b])] == winner
    assert [b, a][validator.select(key, [b, a])] == winner
    with pytest.raises(ValueError):
        validator.select(key, [])


@given(
    value=st.binary(max_size=300),
    sequence=st.integers(0, 2**64 - 1),
    expires_at_ms=st.integers(0, 2**64 - 1),
    public_key=st.binary(min_size=1, max_size=64),
    signature=st.binary(min_size=1, max_size=96),
)
def test_name_record_round_trip(
    value: bytes, sequence: int, expires_at_ms: int, public_key: bytes, signature: bytes
) -> None:
    record = NameRecord(value, sequence, expires_at_ms, public_key, signature)
    encoded = record.encode()
    assert NameRecord.decode(encoded) == record
    assert NameRecord.decode(encoded).encode() == encoded


def test_name_record_range_checked() -> None:
    with pytest.raises(ValueError):
        NameRecord(b"", -1, 0, b"k", b"s")
    with pytest.raises(ValueError):
        NameRecord(b"", 0, 2**64, b"k", b"s")


# -- namespaces -------------------------------------------------------------


def _namespaced() -> NamespacedValidator:
    return NamespacedValidator({BLOB_PREFIX: BlobValidator(), NAME_PREFIX: NameValidator()})


def test_namespaced_dispatch() -> None:
    validator = _namespaced()
    validator.validate(blob_key(b"v"), b"v", NOW)
    key, value = make_name_record(ALICE, "site", b"cid", 1, LATER)
    validator.validate(key, value, NOW)
    assert validator.expires_at_ms(key, value) == LATER
    assert validator.expires_at_ms(blob_key(b"v"), b"v") is None
    with pytest.raises(RecordInvalid):
        validator.validate(key, b"v", NOW)  # a blob value under a name key


@pytest.mark.parametrize(
    "key",
    [b"", b"/zhtp/other/x", b"/zhtp/nam", b"zhtp/blob/", b"/zhtp/blob/" + b"x" * MAX_KEY_SIZE],
)
def test_namespaced_rejects_keys(key: bytes) -> None:
    with pytest.raises(RecordInvalid) as excinfo:
        _namespaced().validate(key, b"v", NOW)
    assert _reason(excinfo) in {"empty key", "unknown key namespace", "key too long"}


def test_namespaced_prefixes_must_be_whole_segments() -> None:
    with pytest.raises(ValueError):
        NamespacedValidator({b"/zhtp/nam": NameValidator()})


def test_record_invalid_carries_reason() -> None:
    with pytest.raises(RecordInvalid) as excinfo:
        _namespaced().validate(b"/nope/", b"", NOW)
    assert _reason(excinfo) == "unknown key namespace"
    assert str(excinfo.value) == "unknown key namespace"


# -- key text forms -----------------------------------------------------------


def test_format_blob_key() -> None:
    key = blob_key(b"v")
    text = format_key(key)
    assert text == "/zhtp/blob/" + blake3.blake3(b"v").hexdigest()
    assert parse_key(text) == key
    assert parse_key(blake3.blake3(b"v").hexdigest()) == key
    assert parse_key(blake3.blake3(b"v").hexdigest().upper()) == key


def test_format_name_key() -> None:
    key = name_key(ALICE_PK, "ünïcode site")
    assert format_key(key) == key.decode()
    assert parse_key(format_key(key)) == key


def test_format_odd_keys_use_hex_form() -> None:
    for key in (b"\x00\x01", b"/\xff", b"/zhtp/blob/short", b"plain"):
        text = format_key(key)
        assert text.startswith("hex:")
        assert parse_key(text) == key


@given(st.binary(min_size=1, max_size=MAX_KEY_SIZE))
def test_key_text_round_trip(key: bytes) -> None:
    text = format_key(key)
    assert text.isprintable()
    assert parse_key(text) == key


@given(st.text(min_size=1, max_size=MAX_KEY_SIZE // 4).map(lambda s: "/" + s))
def test_text_key_round_trip(text: str) -> None:
    assume(text.isprintable() and not text.startswith("/zhtp/blob/"))
    assert format_key(parse_key(text)) == text


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "hello",
        "/zhtp/blob/",
        "/zhtp/blob/" + "a" * 63,
        "/zhtp/blob/" + "g" * 64,
        "/zhtp/blob/" + "a" * 65,
        "a" * 63,
        "hex:",
        "hex:abc",
        "hex:zz",
        "hex:ab cd",
        "/ctrl\x00char",
        "/" + "x" * MAX_KEY_SIZE,
    ],
)
def test_parse_key_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        parse_key(junk)


# -- /zhtp/manifest/ -------------------------------------------------------------


def _a_manifest() -> bytes:
    from node.content.manifest import (
        Codec,
        Encryption,
        EncryptionScheme,
        Manifest,
        Tier,
        encode_manifest,
    )

    return encode_manifest(
        Manifest(
            size=0,
            segment_size=1 << 20,
            tier=Tier.WARM,
            codec=Codec(k=4, m=2),
            encryption=Encryption(scheme=EncryptionScheme.NONE),
            segments=(),
        )
    )


def test_manifest_record_must_hash_to_its_key() -> None:
    validator = ManifestValidator()
    value = _a_manifest()
    key = MANIFEST_PREFIX + blake3.blake3(value).digest()
    validator.validate(key, value, 0)
    with pytest.raises(RecordInvalid, match="manifest value does not hash to its key"):
        validator.validate(key, value + b"!", 0)


def test_manifest_record_must_decode() -> None:
    value = b"\x08\x01 hashes fine, decodes to nothing"
    key = MANIFEST_PREFIX + blake3.blake3(value).digest()
    with pytest.raises(RecordInvalid, match="manifest does not decode"):
        ManifestValidator().validate(key, value, 0)


def test_manifest_validator_refuses_a_blob_key() -> None:
    value = b"x"
    with pytest.raises(RecordInvalid, match="not a manifest key"):
        ManifestValidator().validate(blob_key(value), value, 0)


def test_manifest_validator_refuses_oversized_values_before_hashing() -> None:
    value = bytes(11)
    key = MANIFEST_PREFIX + blake3.blake3(value).digest()
    with pytest.raises(RecordInvalid, match="manifest value too large"):
        ManifestValidator(max_value_size=10).validate(key, value, 0)


def test_manifest_keys_print_and_parse_as_hex() -> None:
    key = MANIFEST_PREFIX + bytes(range(32))
    text = format_key(key)
    assert text == "/zhtp/manifest/" + bytes(range(32)).hex()
    assert parse_key(text) == key
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_key("/zhtp/manifest/abc")
