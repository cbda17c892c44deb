"""Per-recipient key capsules: the content key, wrapped for one identity.

An encrypted object has one random 32-byte content key (node/content/encrypt.py).
Each identity allowed to read it gets a capsule: the content key sealed with
HPKE (RFC 9180, base mode) to that identity's key-encapsulation public key.

- `standard`: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
- `quantum-resistant`: the X-Wing hybrid KEM (ML-KEM-768 + X25519, HPKE KEM
  id 0x647A as pycryptodome implements it), HKDF-SHA256, AES-256-GCM.
- `none`: public content, no key and no capsules.

A capsule is bound to where it belongs. The HPKE `info` names this use, the
level and the recipient's identity id; the AEAD's associated data is the
manifest context the caller passes (something stable about the file version,
such as the digest of the manifest's segment table). So a capsule copied to
another recipient's entry, to another level, or into another file's manifest
does not open.

Private keys are passed as pycryptodome key objects (`EccKey` on Curve25519,
or an X-Wing `HybridKey`), not raw bytes: a node loads its key once
(`private_key_from_bytes`: 32 raw X25519 bytes, or the 32-byte X-Wing seed,
which expands into an ML-KEM key pair) and reuses the object, so a key passes
through one loader with one set of checks, and the level of a key is its type.

Capsules come from manifests that peers publish, so decoding validates every
length, and every failure is a `CapsuleError` whose message never holds key
bytes (an `EccKey`'s repr prints its private scalar, so keys never go into a
message).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from Crypto.Protocol import HPKE
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key
from Crypto.PublicKey import ECC, Hybrid
from Crypto.PublicKey.ECC import EccKey
from Crypto.PublicKey.Hybrid import HybridKey

from node.content.encrypt import KEY_SIZE, validate_content_key
from node.content.errors import ContentError

__all__ = [
    "IDENTITY_ID_SIZE",
    "CapsuleError",
    "EncryptionLevel",
    "KeyCapsule",
    "RecipientPrivateKey",
    "capsule_size",
    "decode_capsule",
    "encode_capsule",
    "find_capsule",
    "generate_private_key",
    "private_key_from_bytes",
    "public_key_bytes",
    "unwrap_content_key",
    "wrap_content_key",
]

IDENTITY_ID_SIZE = 32

RecipientPrivateKey = EccKey | HybridKey

# Sizes on the wire. X-Wing: an ML-KEM-768 ciphertext (1088) or encapsulation
# key (1184), followed by an X25519 point (32).
_X25519_SIZE = 32
_XWING_PUBLIC_KEY_SIZE = 1184 + _X25519_SIZE
_XWING_ENC_SIZE = 1088 + _X25519_SIZE
_XWING_SEED_SIZE = 32
_WRAPPED_KEY_SIZE = KEY_SIZE + 16  # the AES-256-GCM tag

_INFO_DOMAIN = b"zhtp/content/key-capsule/hpke/v1\x00"


class CapsuleError(ContentError, ValueError):
    """A capsule, or a key offered for one, that cannot be used.

    A ContentError, so a reader handles an unusable capsule like any bad
    content; a ValueError, so a caller that built the capsule itself may
    treat it as the bad argument it is.
    """


class EncryptionLevel(enum.Enum):
    NONE = "none"
    STANDARD = "standard"
    QUANTUM_RESISTANT = "quantum-resistant"


@dataclass(frozen=True, kw_only=True)
class _LevelFormat:
    code: int  # the first byte of an encoded capsule; also bound in HPKE info
    public_key_size: int
    private_key_size: int
    enc_size: int


_FORMATS: dict[EncryptionLevel, _LevelFormat] = {
    EncryptionLevel.STANDARD: _LevelFormat(
        code=1,
        public_key_size=_X25519_SIZE,
        private_key_size=_X25519_SIZE,
        enc_size=_X25519_SIZE,
    ),
    EncryptionLevel.QUANTUM_RESISTANT: _LevelFormat(
        code=2,
        public_key_size=_XWING_PUBLIC_KEY_SIZE,
        private_key_size=_XWING_SEED_SIZE,
        enc_size=_XWING_ENC_SIZE,
    ),
}
_LEVEL_BY_CODE: dict[int, EncryptionLevel] = {f.code: level for level, f in _FORMATS.items()}


@dataclass(frozen=True, kw_only=True)
class KeyCapsule:
    """The content key sealed for one recipient. Holds nothing secret."""

    recipient_id: bytes
    level: EncryptionLevel
    enc: bytes  # the KEM output (HPKE `enc`)
    wrapped_key: bytes  # the HPKE ciphertext of the content key, tag included


# -- keys ----------------------------------------------------------------------


def generate_private_key(level: EncryptionLevel) -> RecipientPrivateKey:
    """A fresh recipient private key for `level`."""
    if level is EncryptionLevel.STANDARD:
        return ECC.generate(curve="Curve25519")
    if level is EncryptionLevel.QUANTUM_RESISTANT:
        return Hybrid.generate(param_set=Hybrid.MLKEM768_X25519)
    raise ValueError("level 'none' has no keys")


def private_key_from_bytes(level: EncryptionLevel, raw: bytes) -> RecipientPrivateKey:
    """Load a private key: 32 raw X25519 bytes, or the 32-byte X-Wing seed."""
    fmt = _format(level)
    if len(raw) != fmt.private_key_size:
        raise CapsuleError(
            f"a {level.value} private key is {fmt.private_key_size} bytes, got {len(raw)}"
        )
    try:
        if level is EncryptionLevel.STANDARD:
            return import_x25519_private_key(raw)
        # Hybrid keys have no public import function yet; _construct is the
        # one pycryptodome documents for building a key from its seed.
        return Hybrid._construct(param_set=Hybrid.MLKEM768_X25519, seed=raw)
    except ValueError as error:
        raise CapsuleError(f"not a valid {level.value} private key") from error


def public_key_bytes(key: RecipientPrivateKey) -> bytes:
    """The raw public key that senders wrap to: X25519 (32) or X-Wing (1216 bytes)."""
    if isinstance(key, HybridKey):
        return key.public_key()._pk
    return key.public_key().export_key(format="raw")


def _import_public_key(level: EncryptionLevel, raw: bytes) -> EccKey | HybridKey:
    fmt = _format(level)
    if len(raw) != fmt.public_key_size:
        raise CapsuleError(
            f"recipient public key is {len(raw)} bytes; a {level.value} key is "
            f"{fmt.public_key_size}"
        )
    try:
        if level is EncryptionLevel.STANDARD:
            return import_x25519_public_key(raw)
        return Hybrid._construct(param_set=Hybrid.MLKEM768_X25519, pk=raw)
    except ValueError as error:
        raise CapsuleError(f"recipient public key is not a valid {level.value} key") from error


def _key_level(key: object) -> EncryptionLevel | None:
    if isinstance(key, HybridKey) and key.param_set is Hybrid.MLKEM768_X25519:
        return EncryptionLevel.QUANTUM_RESISTANT
    if isinstance(key, EccKey) and key.curve == "Curve25519":
        return EncryptionLevel.STANDARD
    return None


# -- wrapping ------------------------------------------------------------------


def wrap_content_key(
    content_key: bytes,
    *,
    recipient_id: bytes,
    recipient_public_key: bytes,
    level: EncryptionLevel,
    manifest_context: bytes,
) -> KeyCapsule:
    """Seal `content_key` to one recipient, bound to `manifest_context`.

    `recipient_public_key` is raw: 32 X25519 bytes at `standard`, the
    1216-byte X-Wing public key at `quantum-resistant`.
    """
    validate_content_key(content_key)
    _check_recipient_id(recipient_id)
    _check_context(manifest_context)
    receiver = _import_public_key(level, recipient_public_key)
    sealer = HPKE.new(
        receiver_key=receiver,
        aead_id=HPKE.AEAD.AES256_GCM,
        info=_info(level, recipient_id),
    )
    try:
        wrapped_key = sealer.seal(content_key, manifest_context)
    except ValueError as error:  # e.g. an X25519 point of low order
        raise CapsuleError(f"recipient public key is not a valid {level.value} key") from error
    return KeyCapsule(
        recipient_id=recipient_id, level=level, enc=sealer.enc, wrapped_key=wrapped_key
    )


def unwrap_content_key(
    capsule: KeyCapsule,
    *,
    recipient_id: bytes,
    recipient_private_key: RecipientPrivateKey,
    manifest_context: bytes,
) -> bytes:
    """The content key in `capsule`; CapsuleError if it is not ours or does not open."""
    _check_recipient_id(recipient_id)
    _check_context(manifest_context)
    _check_capsule(capsule)
    if capsule.recipient_id != recipient_id:
        raise CapsuleError("capsule is for another recipient")
    key_level = _key_level(recipient_private_key)
    if key_level is not capsule.level:
        described = key_level.value if key_level else "an unsupported"
        raise CapsuleError(
            f"capsule is {capsule.level.value}-level; the private key is {described} key"
        )
    if not recipient_private_key.has_private():
        raise CapsuleError("a public key cannot open a capsule")
    try:
        opener = HPKE.new(
            receiver_key=recipient_private_key,
            aead_id=HPKE.AEAD.AES256_GCM,
            enc=capsule.enc,
            info=_info(capsule.level, recipient_id),
        )
    except ValueError as error:  # HPKE.DeserializeError: enc is not a valid point
        raise CapsuleError("capsule enc is not a valid KEM encapsulation") from error
    try:
        content_key = opener.unseal(capsule.wrapped_key, manifest_context)
    except ValueError as error:
        # HPKE cannot say which input was wrong, and guessing would mislead.
        raise CapsuleError(
            "capsule does not open: enc or wrapped key tampered with, wrong private key, "
            "or a capsule moved from another manifest"
        ) from error
    if len(content_key) != KEY_SIZE:  # only a sender that sealed something else
        raise CapsuleError(f"capsule holds {len(content_key)} bytes, not a content key")
    return content_key


def find_capsule(capsules: tuple[KeyCapsule, ...], recipient_id: bytes) -> KeyCapsule | None:
    """The capsule for `recipient_id` among `capsules`, if there is one."""
    return next((c for c in capsules if c.recipient_id == recipient_id), None)


def _info(level: EncryptionLevel, recipient_id: bytes) -> bytes:
    return _INFO_DOMAIN + bytes([_FORMATS[level].code]) + recipient_id


# -- encoding ------------------------------------------------------------------
#
# level code (1) || recipient id (32) || enc || wrapped key (48). Every length
# is fixed by the level, so there are no length prefixes and one capsule has
# one encoding.


def capsule_size(level: EncryptionLevel) -> int:
    """Bytes in an encoded capsule at `level`: 113 standard, 1201 quantum-resistant."""
    return 1 + IDENTITY_ID_SIZE + _format(level).enc_size + _WRAPPED_KEY_SIZE


def encode_capsule(capsule: KeyCapsule) -> bytes:
    """The one encoding of `capsule`; CapsuleError if a reader would refuse it."""
    _check_capsule(capsule)
    code = _FORMATS[capsule.level].code
    return bytes([code]) + capsule.recipient_id + capsule.enc + capsule.wrapped_key


def decode_capsule(data: bytes) -> KeyCapsule:
    """Parse an encoded capsule; CapsuleError says what is wrong."""
    if not data:
        raise CapsuleError("empty capsule encoding")
    level = _LEVEL_BY_CODE.get(data[0])
    if level is None:
        raise CapsuleError(f"unknown capsule level code {data[0]}")
    expected = capsule_size(level)
    if len(data) < expected:
        raise CapsuleError(f"truncated {level.value} capsule: {len(data)} bytes of {expected}")
    if len(data) > expected:
        raise CapsuleError(
            f"{level.value} capsule is {expected} bytes; {len(data) - expected} trailing bytes"
        )
    enc_end = 1 + IDENTITY_ID_SIZE + _FORMATS[level].enc_size
    return KeyCapsule(
        recipient_id=data[1 : 1 + IDENTITY_ID_SIZE],
        level=level,
        enc=data[1 + IDENTITY_ID_SIZE : enc_end],
        wrapped_key=data[enc_end:],
    )


# -- validation ----------------------------------------------------------------


def _format(level: EncryptionLevel) -> _LevelFormat:
    fmt = _FORMATS.get(level)
    if fmt is None:
        raise ValueError(f"level {level.value!r} has no capsules")
    return fmt


def _check_capsule(capsule: KeyCapsule) -> None:
    if capsule.level not in _FORMATS:
        raise CapsuleError(f"a capsule cannot be {capsule.level.value}-level")
    fmt = _FORMATS[capsule.level]
    if len(capsule.recipient_id) != IDENTITY_ID_SIZE:
        raise CapsuleError(
            f"capsule recipient id is {len(capsule.recipient_id)} bytes, not {IDENTITY_ID_SIZE}"
        )
    if len(capsule.enc) != fmt.enc_size:
        raise CapsuleError(
            f"capsule enc is {len(capsule.enc)} bytes; {capsule.level.value} enc is {fmt.enc_size}"
        )
    if len(capsule.wrapped_key) != _WRAPPED_KEY_SIZE:
        raise CapsuleError(
            f"capsule wrapped key is {len(capsule.wrapped_key)} bytes, not {_WRAPPED_KEY_SIZE}"
        )


def _check_recipient_id(recipient_id: bytes) -> None:
    if len(recipient_id) != IDENTITY_ID_SIZE:
        raise ValueError(f"recipient id must be {IDENTITY_ID_SIZE} bytes, got {len(recipient_id)}")


def _check_context(manifest_context: bytes) -> None:
    # Empty would bind the capsule to nothing: it could be moved to any file.
    if not manifest_context:
        raise ValueError("manifest context must not be empty")
