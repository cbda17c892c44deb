"""Key capsules: round trips, fixed-key vectors, interop, and every way one must not open.

The known-answer vectors in tests/vectors/capsules/ are decryption vectors:
pycryptodome's HPKE cannot take a fixed ephemeral key, and its self-tests ship
no RFC 9180 vector for DHKEM(X25519)/HKDF-SHA256/AES-256-GCM, so each capsule
was sealed once, to a fixed recipient key, by OpenSSL's HPKE through the
`cryptography` package, an independent implementation. The interop tests
below repeat that in both directions with fresh keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from Crypto.PublicKey import ECC
from Crypto.PublicKey.ECC import EccKey
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from hypothesis import given
from hypothesis import strategies as st

from node.content.capsules import (
    IDENTITY_ID_SIZE,
    CapsuleError,
    EncryptionLevel,
    KeyCapsule,
    RecipientPrivateKey,
    capsule_size,
    decode_capsule,
    encode_capsule,
    find_capsule,
    generate_private_key,
    private_key_from_bytes,
    public_key_bytes,
    unwrap_content_key,
    wrap_content_key,
)
from node.content.errors import ContentError

VECTORS = Path(__file__).parent.parent / "vectors" / "capsules" / "fixed_key_decryption.json"

STANDARD = EncryptionLevel.STANDARD
QUANTUM = EncryptionLevel.QUANTUM_RESISTANT
LEVELS = [STANDARD, QUANTUM]
ENC_SIZES = {STANDARD: 32, QUANTUM: 1120}
LEVEL_CODES = {STANDARD: 1, QUANTUM: 2}
INFO_DOMAIN = b"zhtp/content/key-capsule/hpke/v1\x00"

CONTENT_KEY = bytes(range(32))
ALICE = b"\xa1" * IDENTITY_ID_SIZE
BOB = b"\xb0" * IDENTITY_ID_SIZE
CONTEXT = b"segment-table-digest:" + b"\x01" * 32
OTHER_CONTEXT = b"segment-table-digest:" + b"\x02" * 32


@pytest.fixture(scope="module")
def keys() -> dict[EncryptionLevel, RecipientPrivateKey]:
    return {level: generate_private_key(level) for level in LEVELS}


@pytest.fixture(scope="module")
def other_keys() -> dict[EncryptionLevel, RecipientPrivateKey]:
    return {level: generate_private_key(level) for level in LEVELS}


def wrap_for_alice(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> KeyCapsule:
    return wrap_content_key(
        CONTENT_KEY,
        recipient_id=ALICE,
        recipient_public_key=public_key_bytes(keys[level]),
        level=level,
        manifest_context=CONTEXT,
    )


def alice_unwraps(
    capsule: KeyCapsule,
    key: RecipientPrivateKey,
    *,
    recipient_id: bytes = ALICE,
    context: bytes = CONTEXT,
) -> bytes:
    return unwrap_content_key(
        capsule, recipient_id=recipient_id, recipient_private_key=key, manifest_context=context
    )


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_wrap_then_unwrap_returns_the_content_key(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    assert capsule.level is level
    assert capsule.recipient_id == ALICE
    assert len(capsule.enc) == ENC_SIZES[level]
    assert alice_unwraps(capsule, keys[level]) == CONTENT_KEY


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_survives_encoding(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    encoded = encode_capsule(capsule)
    assert len(encoded) == capsule_size(level)
    assert decode_capsule(encoded) == capsule
    assert alice_unwraps(decode_capsule(encoded), keys[level]) == CONTENT_KEY


@pytest.mark.parametrize("level", LEVELS)
def test_each_wrap_uses_a_fresh_encapsulation(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    assert wrap_for_alice(keys, level).enc != wrap_for_alice(keys, level).enc


def test_capsule_sizes() -> None:
    assert capsule_size(STANDARD) == 1 + 32 + 32 + 48
    assert capsule_size(QUANTUM) == 1 + 32 + 1120 + 48


@given(
    level=st.sampled_from(LEVELS),
    recipient_id=st.binary(min_size=32, max_size=32),
    data=st.data(),
)
def test_encoding_round_trips(level: EncryptionLevel, recipient_id: bytes, data: Any) -> None:
    size = ENC_SIZES[level]
    capsule = KeyCapsule(
        recipient_id=recipient_id,
        level=level,
        enc=data.draw(st.binary(min_size=size, max_size=size)),
        wrapped_key=data.draw(st.binary(min_size=48, max_size=48)),
    )
    encoded = encode_capsule(capsule)
    assert encoded[0] == LEVEL_CODES[level]
    assert decode_capsule(encoded) == capsule


@pytest.mark.parametrize("level", LEVELS)
def test_private_key_loaded_from_raw_bytes_opens_its_capsules(level: EncryptionLevel) -> None:
    key = private_key_from_bytes(level, bytes(range(32)))
    assert len(public_key_bytes(key)) == {STANDARD: 32, QUANTUM: 1216}[level]
    assert alice_unwraps(wrap_for_alice({level: key}, level), key) == CONTENT_KEY


# -- known answers: sealed by an independent HPKE --------------------------------


def load_vectors() -> list[dict[str, str]]:
    vectors: list[dict[str, str]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_recorded_capsule_opens_to_recorded_content_key(vector: dict[str, str]) -> None:
    level = EncryptionLevel(vector["level"])
    key = private_key_from_bytes(level, bytes.fromhex(vector["private_key"]))
    assert public_key_bytes(key).hex() == vector["public_key"]
    capsule = decode_capsule(bytes.fromhex(vector["encoded"]))
    assert capsule == KeyCapsule(
        recipient_id=bytes.fromhex(vector["recipient_id"]),
        level=level,
        enc=bytes.fromhex(vector["enc"]),
        wrapped_key=bytes.fromhex(vector["wrapped_key"]),
    )
    assert bytes.fromhex(vector["info"]) == INFO_DOMAIN + bytes(
        [LEVEL_CODES[level]]
    ) + bytes.fromhex(vector["recipient_id"])
    content_key = unwrap_content_key(
        capsule,
        recipient_id=bytes.fromhex(vector["recipient_id"]),
        recipient_private_key=key,
        manifest_context=bytes.fromhex(vector["manifest_context"]),
    )
    assert content_key.hex() == vector["content_key"]


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_recorded_capsule_refuses_another_context(vector: dict[str, str]) -> None:
    level = EncryptionLevel(vector["level"])
    key = private_key_from_bytes(level, bytes.fromhex(vector["private_key"]))
    with pytest.raises(CapsuleError):
        unwrap_content_key(
            decode_capsule(bytes.fromhex(vector["encoded"])),
            recipient_id=bytes.fromhex(vector["recipient_id"]),
            recipient_private_key=key,
            manifest_context=OTHER_CONTEXT,
        )


# -- interop with OpenSSL's HPKE ---------------------------------------------------
#
# `cryptography` takes HPKE associated data only through these private
# functions; skip rather than fail if a release renames them.
_encrypt_with_aad = getattr(rust_openssl.hpke, "_encrypt_with_aad", None)
_decrypt_with_aad = getattr(rust_openssl.hpke, "_decrypt_with_aad", None)
needs_openssl_hpke = pytest.mark.skipif(
    _encrypt_with_aad is None or _decrypt_with_aad is None,
    reason="cryptography no longer exposes HPKE with associated data",
)
_OPENSSL_KEMS = {STANDARD: hpke.KEM.X25519, QUANTUM: hpke.KEM.MLKEM768_X25519}


def openssl_suite(level: EncryptionLevel) -> hpke.Suite:
    return hpke.Suite(_OPENSSL_KEMS[level], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def openssl_public_key(level: EncryptionLevel, raw: bytes) -> Any:
    if level is STANDARD:
        return x25519.X25519PublicKey.from_public_bytes(raw)
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
        x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
    )


@needs_openssl_hpke
@pytest.mark.parametrize("level", LEVELS)
def test_opens_a_capsule_sealed_by_openssl(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    assert _encrypt_with_aad is not None
    info = INFO_DOMAIN + bytes([LEVEL_CODES[level]]) + ALICE
    public_key = openssl_public_key(level, public_key_bytes(keys[level]))
    sealed = _encrypt_with_aad(
        openssl_suite(level), CONTENT_KEY, public_key, info=info, aad=CONTEXT
    )
    capsule = decode_capsule(bytes([LEVEL_CODES[level]]) + ALICE + sealed)
    assert alice_unwraps(capsule, keys[level]) == CONTENT_KEY


@needs_openssl_hpke
def test_openssl_opens_a_standard_capsule() -> None:
    assert _decrypt_with_aad is not None
    openssl_key = x25519.X25519PrivateKey.generate()
    capsule = wrap_content_key(
        CONTENT_KEY,
        recipient_id=ALICE,
        recipient_public_key=openssl_key.public_key().public_bytes_raw(),
        level=STANDARD,
        manifest_context=CONTEXT,
    )
    info = INFO_DOMAIN + bytes([LEVEL_CODES[STANDARD]]) + ALICE
    opened = _decrypt_with_aad(
        openssl_suite(STANDARD),
        capsule.enc + capsule.wrapped_key,
        openssl_key,
        info=info,
        aad=CONTEXT,
    )
    assert opened == CONTENT_KEY


# -- capsules that must not open -------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_flipped_enc_byte_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    tampered = replace(capsule, enc=flip(capsule.enc, 0))
    with pytest.raises(CapsuleError):
        alice_unwraps(tampered, keys[level])


def test_flipped_x25519_byte_of_xwing_enc_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    capsule = wrap_for_alice(keys, QUANTUM)
    tampered = replace(capsule, enc=flip(capsule.enc, len(capsule.enc) - 2))
    with pytest.raises(CapsuleError):
        alice_unwraps(tampered, keys[QUANTUM])


@pytest.mark.parametrize("level", LEVELS)
def test_flipped_wrapped_key_byte_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    tampered = replace(capsule, wrapped_key=flip(capsule.wrapped_key, 5))
    with pytest.raises(CapsuleError, match="does not open"):
        alice_unwraps(tampered, keys[level])


@pytest.mark.parametrize("level", LEVELS)
def test_flipped_tag_byte_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    tampered = replace(capsule, wrapped_key=flip(capsule.wrapped_key, 47))
    with pytest.raises(CapsuleError, match="does not open"):
        alice_unwraps(tampered, keys[level])


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_for_another_recipient_is_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    capsule = wrap_for_alice(keys, level)
    with pytest.raises(CapsuleError, match="another recipient"):
        alice_unwraps(capsule, keys[level], recipient_id=BOB)


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_relabelled_for_another_recipient_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    # Bob holds Alice's key pair too, and copies her capsule under his id:
    # the recipient id is bound in HPKE info, so it does not open.
    relabelled = replace(wrap_for_alice(keys, level), recipient_id=BOB)
    with pytest.raises(CapsuleError, match="does not open"):
        alice_unwraps(relabelled, keys[level], recipient_id=BOB)


@pytest.mark.parametrize("level", LEVELS)
def test_wrong_private_key_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
    other_keys: dict[EncryptionLevel, RecipientPrivateKey],
    level: EncryptionLevel,
) -> None:
    with pytest.raises(CapsuleError, match="does not open"):
        alice_unwraps(wrap_for_alice(keys, level), other_keys[level])


def test_quantum_key_for_standard_capsule_is_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    with pytest.raises(CapsuleError, match="standard-level; the private key is quantum"):
        alice_unwraps(wrap_for_alice(keys, STANDARD), keys[QUANTUM])


def test_standard_key_for_quantum_capsule_is_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    with pytest.raises(CapsuleError, match="quantum-resistant-level; the private key is standard"):
        alice_unwraps(wrap_for_alice(keys, QUANTUM), keys[STANDARD])


def test_other_curve_key_is_refused(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    with pytest.raises(CapsuleError, match="unsupported"):
        alice_unwraps(wrap_for_alice(keys, STANDARD), ECC.generate(curve="p256"))


@pytest.mark.parametrize("level", LEVELS)
def test_public_key_cannot_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    with pytest.raises(CapsuleError, match="public key"):
        alice_unwraps(wrap_for_alice(keys, level), keys[level].public_key())


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_moved_to_another_manifest_does_not_open(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    with pytest.raises(CapsuleError, match="does not open"):
        alice_unwraps(wrap_for_alice(keys, level), keys[level], context=OTHER_CONTEXT)


def test_level_none_capsule_is_refused(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    capsule = replace(wrap_for_alice(keys, STANDARD), level=EncryptionLevel.NONE)
    with pytest.raises(CapsuleError, match="cannot be none-level"):
        alice_unwraps(capsule, keys[STANDARD])


# -- hostile encodings -----------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_truncated_encoding_is_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    encoded = encode_capsule(wrap_for_alice(keys, level))
    with pytest.raises(CapsuleError, match="truncated"):
        decode_capsule(encoded[:-1])


@pytest.mark.parametrize("level", LEVELS)
def test_trailing_bytes_are_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey], level: EncryptionLevel
) -> None:
    encoded = encode_capsule(wrap_for_alice(keys, level))
    with pytest.raises(CapsuleError, match="1 trailing bytes"):
        decode_capsule(encoded + b"\x00")


def test_empty_encoding_is_refused() -> None:
    with pytest.raises(CapsuleError, match="empty"):
        decode_capsule(b"")


def test_level_code_zero_is_refused() -> None:
    with pytest.raises(CapsuleError, match="unknown capsule level code 0"):
        decode_capsule(bytes(capsule_size(STANDARD)))


def test_unknown_level_code_is_refused() -> None:
    with pytest.raises(CapsuleError, match="unknown capsule level code 3"):
        decode_capsule(b"\x03" + bytes(capsule_size(STANDARD) - 1))


def test_standard_body_under_quantum_code_is_refused(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    encoded = encode_capsule(wrap_for_alice(keys, STANDARD))
    with pytest.raises(CapsuleError, match="truncated quantum-resistant"):
        decode_capsule(b"\x02" + encoded[1:])


def test_encode_refuses_wrong_enc_length(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    capsule = wrap_for_alice(keys, STANDARD)
    with pytest.raises(CapsuleError, match="enc is 31 bytes"):
        encode_capsule(replace(capsule, enc=capsule.enc[:31]))


def test_encode_refuses_wrong_wrapped_key_length(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    capsule = wrap_for_alice(keys, STANDARD)
    with pytest.raises(CapsuleError, match="wrapped key is 49 bytes"):
        encode_capsule(replace(capsule, wrapped_key=capsule.wrapped_key + b"\x00"))


def test_encode_refuses_wrong_recipient_id_length(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    capsule = wrap_for_alice(keys, STANDARD)
    with pytest.raises(CapsuleError, match="recipient id is 31 bytes"):
        encode_capsule(replace(capsule, recipient_id=ALICE[:31]))


# -- bad arguments to wrap -------------------------------------------------------


def test_wrap_refuses_quantum_public_key_at_standard_level(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    with pytest.raises(CapsuleError, match="1216 bytes; a standard key is 32"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE,
            recipient_public_key=public_key_bytes(keys[QUANTUM]),
            level=STANDARD,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_standard_public_key_at_quantum_level(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    with pytest.raises(CapsuleError, match="32 bytes; a quantum-resistant key is 1216"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE,
            recipient_public_key=public_key_bytes(keys[STANDARD]),
            level=QUANTUM,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_low_order_x25519_public_key() -> None:
    with pytest.raises(CapsuleError, match="not a valid standard key"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE,
            recipient_public_key=bytes(32),
            level=STANDARD,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_level_none(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    with pytest.raises(ValueError, match="'none' has no capsules"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE,
            recipient_public_key=public_key_bytes(keys[STANDARD]),
            level=EncryptionLevel.NONE,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_short_content_key(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    with pytest.raises(ValueError, match="content key must be 32 bytes"):
        wrap_content_key(
            CONTENT_KEY[:16],
            recipient_id=ALICE,
            recipient_public_key=public_key_bytes(keys[STANDARD]),
            level=STANDARD,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_short_recipient_id(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    with pytest.raises(ValueError, match="recipient id must be 32 bytes"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE[:16],
            recipient_public_key=public_key_bytes(keys[STANDARD]),
            level=STANDARD,
            manifest_context=CONTEXT,
        )


def test_wrap_refuses_empty_context(keys: dict[EncryptionLevel, RecipientPrivateKey]) -> None:
    with pytest.raises(ValueError, match="manifest context must not be empty"):
        wrap_content_key(
            CONTENT_KEY,
            recipient_id=ALICE,
            recipient_public_key=public_key_bytes(keys[STANDARD]),
            level=STANDARD,
            manifest_context=b"",
        )


@pytest.mark.parametrize("level", LEVELS)
def test_private_key_of_wrong_length_is_refused(level: EncryptionLevel) -> None:
    with pytest.raises(CapsuleError, match="private key is 32 bytes, got 31"):
        private_key_from_bytes(level, bytes(31))


# -- secrets stay out of messages ----------------------------------------------------


def test_errors_and_reprs_hold_no_key_material(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
    other_keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    capsule = wrap_for_alice(keys, STANDARD)
    raw_private = private_key_from_bytes(STANDARD, b"\x07" * 32)
    assert isinstance(raw_private, EccKey)
    secrets = [CONTENT_KEY.hex(), (b"\x07" * 32).hex(), str(int(raw_private.d))]
    messages = [repr(capsule), str(capsule)]
    attempts: list[Callable[[], bytes]] = [
        lambda: alice_unwraps(capsule, other_keys[STANDARD]),
        lambda: alice_unwraps(capsule, raw_private),
        lambda: alice_unwraps(capsule, keys[QUANTUM]),
        lambda: alice_unwraps(capsule, keys[STANDARD], context=OTHER_CONTEXT),
    ]
    for attempt in attempts:
        with pytest.raises(CapsuleError) as caught:
            attempt()
        messages.append(str(caught.value))
        messages.append(repr(caught.value))
    for message in messages:
        for secret in secrets:
            assert secret not in message


def test_capsule_error_is_content_error_and_value_error() -> None:
    assert issubclass(CapsuleError, ContentError)
    assert issubclass(CapsuleError, ValueError)


# -- lookup --------------------------------------------------------------------------


def test_find_capsule_returns_the_recipients_capsule(
    keys: dict[EncryptionLevel, RecipientPrivateKey],
) -> None:
    alice = wrap_for_alice(keys, STANDARD)
    bob = replace(alice, recipient_id=BOB)
    assert find_capsule((bob, alice), ALICE) is alice
    assert find_capsule((bob, alice), BOB) is bob


def test_find_capsule_without_one_returns_none() -> None:
    assert find_capsule((), ALICE) is None
    other = KeyCapsule(recipient_id=BOB, level=STANDARD, enc=bytes(32), wrapped_key=bytes(48))
    assert find_capsule((other,), os.urandom(32)) is None
