"""User identities: IDs, the signed identity record and its DHT validator.

tests/vectors/identity/identities.json holds keys made from fixed seeds; the
Ed25519 and X25519 public keys are also recomputed here with the
`cryptography` package, independently of pycryptodome.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from node.identity import (
    ID_DOMAIN,
    IDENTITY_PREFIX,
    MAX_DISPLAY_NAME_SIZE,
    SIGNING_DOMAIN,
    Identity,
    IdentityRecordValidator,
    PublicIdentity,
    format_identity_id,
    identity_key,
    make_identity_record,
    parse_identity_id,
    verify_identity_record,
)
from node.records.validators import RecordInvalid

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "identity" / "identities.json"

ED25519_SIGNATURE_SIZE = 64
MLDSA_SIGNATURE_SIZE = 3309
BODY_HEADER = struct.Struct(">BBQH")

# Generated once: key generation is cheap, but hypothesis runs many examples.
ALICE = Identity.generate(with_mldsa=False)
BOB = Identity.generate(with_mldsa=False)
CAROL_PQ = Identity.generate(with_mldsa=True)
DAVE_PQ = Identity.generate(with_mldsa=True)

display_names = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=16
).filter(str.isprintable)
sequences = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _vectors() -> list[dict[str, Any]]:
    identities: list[dict[str, Any]] = json.loads(VECTORS.read_text())["identities"]
    return identities


def _identity_from(vector: dict[str, Any]) -> Identity:
    seeds = vector["seeds"]
    return Identity(
        ed25519_seed=bytes.fromhex(seeds["ed25519_seed"]),
        x25519_seed=bytes.fromhex(seeds["x25519_seed"]),
        xwing_seed=bytes.fromhex(seeds["xwing_seed"]),
        mldsa_seed=None if seeds["mldsa_seed"] is None else bytes.fromhex(seeds["mldsa_seed"]),
    )


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _body_size(record: bytes) -> int:
    signatures = ED25519_SIGNATURE_SIZE
    if record[1] & 0x01:
        signatures += MLDSA_SIGNATURE_SIZE
    return len(record) - signatures


# -- vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors(), ids=[v["name"] for v in _vectors()])
def test_keys_from_fixed_seeds_match_vector(vector: dict[str, Any]) -> None:
    public = _identity_from(vector).public_identity(
        name=vector["display_name"], sequence=vector["sequence"]
    )
    keys = vector["public_keys"]
    assert public.ed25519_public_key.hex() == keys["ed25519"]
    assert public.x25519_public_key.hex() == keys["x25519"]
    assert public.xwing_public_key.hex() == keys["xwing"]
    mldsa_public = public.mldsa_public_key
    assert (None if mldsa_public is None else mldsa_public.hex()) == keys["mldsa65"]


@pytest.mark.parametrize("vector", _vectors(), ids=[v["name"] for v in _vectors()])
def test_classical_keys_agree_with_an_independent_library(vector: dict[str, Any]) -> None:
    seeds, keys = vector["seeds"], vector["public_keys"]
    ed25519 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seeds["ed25519_seed"]))
    x25519 = X25519PrivateKey.from_private_bytes(bytes.fromhex(seeds["x25519_seed"]))
    raw = (Encoding.Raw, PublicFormat.Raw)
    assert ed25519.public_key().public_bytes(*raw).hex() == keys["ed25519"]
    assert x25519.public_key().public_bytes(*raw).hex() == keys["x25519"]
    # The record's Ed25519 signature verifies with that library too.
    record = bytes.fromhex(vector["record"])
    body_size = _body_size(record)
    ed25519.public_key().verify(
        record[body_size : body_size + ED25519_SIGNATURE_SIZE],
        SIGNING_DOMAIN + record[:body_size],
    )


@pytest.mark.parametrize("vector", _vectors(), ids=[v["name"] for v in _vectors()])
def test_identity_id_matches_vector(vector: dict[str, Any]) -> None:
    identity = _identity_from(vector)
    ed25519 = bytes.fromhex(vector["public_keys"]["ed25519"])
    expected = blake3.blake3(ID_DOMAIN + ed25519).digest()
    assert identity.identity_id == expected == bytes.fromhex(vector["identity_id"])
    assert format_identity_id(expected) == vector["identity_id_text"]
    assert parse_identity_id(vector["identity_id_text"]) == expected


@pytest.mark.parametrize("vector", _vectors(), ids=[v["name"] for v in _vectors()])
def test_record_matches_vector(vector: dict[str, Any]) -> None:
    identity = _identity_from(vector)
    stored = bytes.fromhex(vector["record"])
    rebuilt = make_identity_record(
        identity, name=vector["display_name"], sequence=vector["sequence"]
    )
    # Ed25519 is deterministic; ML-DSA signatures are hedged, so only the body
    # and the Ed25519 signature are reproducible byte for byte.
    prefix = _body_size(stored) + ED25519_SIGNATURE_SIZE
    assert rebuilt[:prefix] == stored[:prefix]
    assert len(rebuilt) == len(stored)
    if not identity.has_mldsa:
        assert rebuilt == stored
    expected = identity.public_identity(name=vector["display_name"], sequence=vector["sequence"])
    assert verify_identity_record(stored) == expected


# -- identity IDs -----------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_identity_id_text_round_trip(identity_id: bytes) -> None:
    text = format_identity_id(identity_id)
    assert text.startswith("zid1") and len(text) == 56
    assert parse_identity_id(text) == identity_id
    assert parse_identity_id(text.upper()) == identity_id


def test_parse_identity_id_rejects_wrong_prefix() -> None:
    text = format_identity_id(bytes(32))
    with pytest.raises(ValueError, match="starts with 'zid1'"):
        parse_identity_id("zid2" + text[4:])


@pytest.mark.parametrize("cut", [1, 4])
def test_parse_identity_id_rejects_wrong_length(cut: int) -> None:
    text = format_identity_id(bytes(32))
    with pytest.raises(ValueError, match="52 base32 characters"):
        parse_identity_id(text[:-cut])
    with pytest.raises(ValueError, match="52 base32 characters"):
        parse_identity_id(text + "a" * cut)


@pytest.mark.parametrize("bad", ["0", "1", "8", "=", " ", "é"])
def test_parse_identity_id_rejects_non_base32(bad: str) -> None:
    text = format_identity_id(bytes(32))
    with pytest.raises(ValueError):
        parse_identity_id(text[:10] + bad + text[11:])


def test_parse_identity_id_rejects_nonzero_spare_bits() -> None:
    # The last character carries 1 data bit and 4 spare bits: "b" sets a spare bit.
    text = format_identity_id(bytes(32))
    assert text.endswith("a")
    with pytest.raises(ValueError, match="canonically"):
        parse_identity_id(text[:-1] + "b")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_format_identity_id_rejects_wrong_size(size: int) -> None:
    with pytest.raises(ValueError):
        format_identity_id(bytes(size))


# -- the private identity ---------------------------------------------------------------


def test_identity_repr_shows_no_secret() -> None:
    exported = CAROL_PQ.export_private_keys()
    text = repr(CAROL_PQ)
    assert format_identity_id(CAROL_PQ.identity_id) in text
    for offset in range(2, len(exported), 32):
        assert exported[offset : offset + 32].hex() not in text


def test_identity_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ALICE)


@pytest.mark.parametrize("identity", [ALICE, CAROL_PQ], ids=["classical", "mldsa"])
def test_private_key_export_round_trip(identity: Identity) -> None:
    restored = Identity.import_private_keys(identity.export_private_keys())
    assert restored.identity_id == identity.identity_id
    assert restored.public_identity(name="x", sequence=0) == identity.public_identity(
        name="x", sequence=0
    )


def test_generate_with_mldsa_flag() -> None:
    assert (
        not ALICE.has_mldsa and ALICE.public_identity(name="a", sequence=0).mldsa_public_key is None
    )
    assert CAROL_PQ.has_mldsa


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: data[:-1], "wrong length"),
        (lambda data: data + b"\x00", "wrong length"),
        (lambda data: data[:1], "truncated"),
        (lambda data: b"\x02" + data[1:], "version"),
        (lambda data: data[:1] + b"\x80" + data[2:], "flags"),
    ],
    ids=["short", "long", "header_only", "version", "flags"],
)
def test_private_key_import_rejects_malformed(mutate: Any, message: str) -> None:
    exported = ALICE.export_private_keys()
    with pytest.raises(ValueError, match=message) as error:
        Identity.import_private_keys(mutate(exported))
    assert exported[2:34].hex() not in str(error.value)


def test_identity_rejects_seed_of_wrong_size() -> None:
    with pytest.raises(ValueError, match="ed25519_seed must be 32 bytes"):
        Identity(
            ed25519_seed=bytes(31), x25519_seed=bytes(32), xwing_seed=bytes(32), mldsa_seed=None
        )


def test_sign_mldsa_without_key_is_refused() -> None:
    with pytest.raises(ValueError, match="no ML-DSA key"):
        ALICE.sign_mldsa(b"payload", context=b"ctx")


# -- public identity --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["ed25519_public_key", "x25519_public_key", "xwing_public_key", "mldsa_public_key"]
)
def test_public_identity_rejects_wrong_key_length(field: str) -> None:
    fields: dict[str, Any] = vars(CAROL_PQ.public_identity(name="c", sequence=0)).copy()
    fields[field] = fields[field][:-1]
    with pytest.raises(ValueError, match=field):
        PublicIdentity(**fields)


@pytest.mark.parametrize(
    "name", ["", "a" * (MAX_DISPLAY_NAME_SIZE + 1), "é" * 33, "tab\there", "nl\n"]
)
def test_public_identity_rejects_bad_display_name(name: str) -> None:
    with pytest.raises(ValueError, match="display name"):
        ALICE.public_identity(name=name, sequence=0)


@pytest.mark.parametrize("sequence", [-1, 1 << 64])
def test_public_identity_rejects_sequence_outside_uint64(sequence: int) -> None:
    with pytest.raises(ValueError, match="uint64"):
        ALICE.public_identity(name="a", sequence=sequence)


# -- identity records: round trips ------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(display_names, sequences)
def test_record_round_trip(name: str, sequence: int) -> None:
    record = make_identity_record(ALICE, name=name, sequence=sequence)
    assert verify_identity_record(record) == ALICE.public_identity(name=name, sequence=sequence)


@settings(max_examples=10, deadline=None)
@given(display_names, sequences)
def test_record_round_trip_with_mldsa(name: str, sequence: int) -> None:
    record = make_identity_record(CAROL_PQ, name=name, sequence=sequence)
    public = verify_identity_record(record)
    assert public == CAROL_PQ.public_identity(name=name, sequence=sequence)
    assert public.identity_id == CAROL_PQ.identity_id


def test_public_identity_keys_import_for_encryption() -> None:
    public = verify_identity_record(make_identity_record(CAROL_PQ, name="c", sequence=1))
    assert public.xwing_key() == CAROL_PQ.xwing_key.public_key()
    assert public.x25519_key() == CAROL_PQ.x25519_key.public_key()


# -- identity records: hostile input ----------------------------------------------------


def test_record_with_bad_ed25519_signature_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="Ed25519 signature"):
        verify_identity_record(_flip(record, len(record) - 1))


def test_record_signed_by_another_key_is_rejected() -> None:
    alice_record = make_identity_record(ALICE, name="alice", sequence=1)
    body = alice_record[: _body_size(alice_record)]
    forged = body + BOB.sign_ed25519(SIGNING_DOMAIN + body)
    with pytest.raises(RecordInvalid, match="Ed25519 signature"):
        verify_identity_record(forged)


def test_record_signed_without_domain_tag_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    body = record[: _body_size(record)]
    with pytest.raises(RecordInvalid, match="Ed25519 signature"):
        verify_identity_record(body + ALICE.sign_ed25519(body))


def test_record_with_small_order_ed25519_key_is_rejected() -> None:
    # With the neutral point as key, R = neutral point and s = 0 "verify" for
    # any message: anyone could publish records under this identity.
    neutral = bytes([1]) + bytes(31)
    good = ALICE.public_identity(name="a", sequence=1).signed_body()
    offset = BODY_HEADER.size + 1
    body = good[:offset] + neutral + good[offset + 32 :]
    with pytest.raises(RecordInvalid, match="small order"):
        verify_identity_record(body + neutral + bytes(32))


def test_record_with_ed25519_key_off_the_curve_is_rejected() -> None:
    good = ALICE.public_identity(name="a", sequence=1).signed_body()
    offset = BODY_HEADER.size + 1
    body = good[:offset] + b"\xff" * 32 + good[offset + 32 :]
    with pytest.raises(RecordInvalid, match="not a curve point"):
        verify_identity_record(body + bytes(64))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_record_invalid(data: bytes) -> None:
    with pytest.raises(RecordInvalid):
        verify_identity_record(data)


def test_record_with_trailing_bytes_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="trailing bytes"):
        verify_identity_record(record + b"\x00")


@pytest.mark.parametrize("identity", [ALICE, CAROL_PQ], ids=["classical", "mldsa"])
def test_truncated_record_is_rejected(identity: Identity) -> None:
    record = make_identity_record(identity, name="someone", sequence=1)
    for size in range(len(record)):
        with pytest.raises(RecordInvalid):
            verify_identity_record(record[:size])


def test_record_with_unknown_version_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="unknown version"):
        verify_identity_record(b"\x02" + record[1:])


def test_record_with_unknown_flags_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="unknown flags"):
        verify_identity_record(record[:1] + b"\x02" + record[2:])


def test_record_with_name_length_past_the_end_is_rejected() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    oversized = record[:10] + struct.pack(">H", 0xFFFF) + record[12:]
    with pytest.raises(RecordInvalid, match="truncated"):
        verify_identity_record(oversized)


@pytest.mark.parametrize("name_bytes", [b"\xff\xfe", b"", b"a\x00b"], ids=["utf8", "empty", "nul"])
def test_signed_record_with_invalid_display_name_is_rejected(name_bytes: bytes) -> None:
    good = ALICE.public_identity(name="a", sequence=1).signed_body()
    body = BODY_HEADER.pack(1, 0, 1, len(name_bytes)) + name_bytes + good[BODY_HEADER.size + 1 :]
    record = body + ALICE.sign_ed25519(SIGNING_DOMAIN + body)
    with pytest.raises(RecordInvalid, match="display name"):
        verify_identity_record(record)


def test_signed_record_with_invalid_xwing_key_is_rejected() -> None:
    good = ALICE.public_identity(name="a", sequence=1).signed_body()
    # An all-zero X25519 point is of low order: nobody can encrypt to it.
    body = good[:-32] + bytes(32)
    record = body + ALICE.sign_ed25519(SIGNING_DOMAIN + body)
    with pytest.raises(RecordInvalid, match="encryption key"):
        verify_identity_record(record)


def test_record_with_mldsa_signature_stripped_is_rejected() -> None:
    record = make_identity_record(CAROL_PQ, name="carol", sequence=1)
    with pytest.raises(RecordInvalid, match="truncated"):
        verify_identity_record(record[:-MLDSA_SIGNATURE_SIZE])


def test_record_with_mldsa_key_and_signature_stripped_is_rejected() -> None:
    # Downgrade: clear the flag, drop the ML-DSA key and signature.
    record = make_identity_record(CAROL_PQ, name="carol", sequence=1)
    body_size = _body_size(record)
    ed25519_signature = record[body_size : body_size + ED25519_SIGNATURE_SIZE]
    body = record[:1] + b"\x00" + record[2 : body_size - 1952]
    with pytest.raises(RecordInvalid, match="Ed25519 signature"):
        verify_identity_record(body + ed25519_signature)


def test_record_with_bad_mldsa_signature_is_rejected() -> None:
    record = make_identity_record(CAROL_PQ, name="carol", sequence=1)
    with pytest.raises(RecordInvalid, match="ML-DSA signature"):
        verify_identity_record(_flip(record, len(record) - 100))


def test_record_with_mldsa_signature_from_another_key_is_rejected() -> None:
    record = make_identity_record(CAROL_PQ, name="carol", sequence=1)
    payload = SIGNING_DOMAIN + record[: _body_size(record)]
    other = DAVE_PQ.sign_mldsa(payload, context=b"zhtp-identity-record-v1")
    with pytest.raises(RecordInvalid, match="ML-DSA signature"):
        verify_identity_record(record[:-MLDSA_SIGNATURE_SIZE] + other)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_record_with_any_flipped_byte_is_rejected(data: st.DataObject) -> None:
    record = make_identity_record(ALICE, name="alice", sequence=5)
    index = data.draw(st.integers(min_value=0, max_value=len(record) - 1))
    with pytest.raises(RecordInvalid):
        verify_identity_record(_flip(record, index))


# -- the DHT validator ------------------------------------------------------------------


def test_validator_accepts_record_under_its_own_key() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    IdentityRecordValidator().validate(identity_key(ALICE.identity_id), record, now_ms=0)


def test_validator_rejects_record_under_another_identitys_key() -> None:
    record = make_identity_record(BOB, name="bob", sequence=1)
    with pytest.raises(RecordInvalid, match="another identity"):
        IdentityRecordValidator().validate(identity_key(ALICE.identity_id), record, now_ms=0)


def test_validator_rejects_key_outside_namespace() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="not an identity key"):
        IdentityRecordValidator().validate(b"/zhtp/name/" + ALICE.identity_id, record, now_ms=0)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_validator_rejects_key_of_wrong_length(size: int) -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid, match="not 32 bytes"):
        IdentityRecordValidator().validate(IDENTITY_PREFIX + bytes(size), record, now_ms=0)


def test_validator_rejects_oversized_value() -> None:
    record = make_identity_record(CAROL_PQ, name="carol", sequence=1)
    validator = IdentityRecordValidator(max_value_size=len(record) - 1)
    with pytest.raises(RecordInvalid, match="too large"):
        validator.validate(identity_key(CAROL_PQ.identity_id), record, now_ms=0)


def test_validator_rejects_invalid_record() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    with pytest.raises(RecordInvalid):
        IdentityRecordValidator().validate(
            identity_key(ALICE.identity_id), _flip(record, len(record) - 1), now_ms=0
        )


def test_validator_prefers_newer_sequence_in_any_order() -> None:
    key = identity_key(ALICE.identity_id)
    old = make_identity_record(ALICE, name="alice", sequence=1)
    new = make_identity_record(ALICE, name="alice renamed", sequence=2)
    validator = IdentityRecordValidator()
    assert validator.select(key, [old, new]) == 1
    assert validator.select(key, [new, old]) == 0


def test_replayed_older_record_never_replaces_newer() -> None:
    # The replay is a genuine, validly signed record: only its sequence betrays it.
    key = identity_key(ALICE.identity_id)
    replay = make_identity_record(ALICE, name="alice", sequence=1)
    current = make_identity_record(ALICE, name="alice", sequence=9)
    validator = IdentityRecordValidator()
    validator.validate(key, replay, now_ms=0)
    assert validator.select(key, [current, replay, replay]) == 0


def test_validator_breaks_sequence_ties_deterministically() -> None:
    key = identity_key(ALICE.identity_id)
    first = make_identity_record(ALICE, name="one", sequence=3)
    second = make_identity_record(ALICE, name="two", sequence=3)
    validator = IdentityRecordValidator()
    best = max(first, second)
    values = [first, second]
    assert values[validator.select(key, values)] == best
    values.reverse()
    assert values[validator.select(key, values)] == best


def test_validator_select_needs_values() -> None:
    with pytest.raises(ValueError):
        IdentityRecordValidator().select(identity_key(ALICE.identity_id), [])


def test_identity_records_do_not_expire() -> None:
    record = make_identity_record(ALICE, name="alice", sequence=1)
    assert IdentityRecordValidator().expires_at_ms(identity_key(ALICE.identity_id), record) is None
