"""User identities: the keys a person signs and receives with, and their public record.

Theory of operation
-------------------
A user identity (not a node's libp2p key) holds four private keys, each made
from a 32-byte seed so that the whole identity fits in a small keystore:

- Ed25519: signs; its public key *is* the identity (see `identity_id`);
- X25519: receives HPKE key capsules at the ``standard`` encryption level;
- X-Wing (ML-KEM-768 + X25519): receives capsules at ``quantum-resistant``;
- ML-DSA-65 (optional): a second, post-quantum signature on what we sign.

Identity ID: BLAKE3-256 of ``ID_DOMAIN`` followed by the 32 raw bytes of the
Ed25519 public key (RFC 8032 encoding). The domain tag keeps the digest from
coinciding with any other BLAKE3 use of the same 32 bytes. Its text form is
``zid1`` followed by the 32 bytes in RFC 4648 base32, lower case, unpadded
(52 characters); parsing accepts either case.

Identity record (the DHT value under ``/zhtp/identity/<identity id>``),
record version 1; integers are unsigned big-endian::

    version      1 byte    = 1
    flags        1 byte    bit 0: an ML-DSA-65 key is present; other bits 0
    sequence     8 bytes
    name length  2 bytes   then the display name, UTF-8 (1-64 bytes, printable)
    ed25519      32 bytes  public key (RFC 8032)
    x25519       32 bytes  public key (RFC 7748)
    x-wing       1216 bytes  public key: ML-KEM-768 encapsulation key || X25519
    ml-dsa-65    1952 bytes  public key (FIPS 204), only if flag bit 0
    --- end of the signed body ---
    ed25519 sig  64 bytes    over SIGNING_DOMAIN || body
    ml-dsa sig   3309 bytes  over SIGNING_DOMAIN || body, context MLDSA_CONTEXT;
                             only if flag bit 0

Every field but the name has a fixed length, so one identity state has
exactly one encoding; nothing may follow the signatures. The flag sits in the
signed body: removing the ML-DSA key or its signature breaks the Ed25519
signature or leaves the record truncated. Ed25519 keys of small order are
refused (they "verify" forged signatures), and both encryption keys must
import, so a stored record is always one a sender can encrypt to.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import blake3
from Crypto.Protocol.DH import import_x25519_public_key
from Crypto.PublicKey import ECC, MLDSA, Hybrid
from Crypto.PublicKey.ECC import EccKey
from Crypto.PublicKey.Hybrid import HybridKey
from Crypto.PublicKey.MLDSA import MLDSAKey
from Crypto.Random import get_random_bytes
from Crypto.Signature import eddsa, mldsa

from node.records.validators import RecordInvalid

__all__ = [
    "ED25519_PUBLIC_KEY_SIZE",
    "IDENTITY_ID_SIZE",
    "IDENTITY_PREFIX",
    "ID_DOMAIN",
    "MAX_DISPLAY_NAME_SIZE",
    "MLDSA_CONTEXT",
    "MLDSA_PUBLIC_KEY_SIZE",
    "RECORD_VERSION",
    "SEED_SIZE",
    "SIGNING_DOMAIN",
    "X25519_PUBLIC_KEY_SIZE",
    "XWING_PUBLIC_KEY_SIZE",
    "Identity",
    "IdentityRecordValidator",
    "PublicIdentity",
    "format_identity_id",
    "identity_id_of",
    "identity_key",
    "make_identity_record",
    "parse_identity_id",
    "verify_identity_record",
]

ID_DOMAIN = b"zhtp-identity-id-v1\x00"
IDENTITY_PREFIX = b"/zhtp/identity/"
IDENTITY_ID_SIZE = 32
_ID_TEXT_PREFIX = "zid1"
_ID_TEXT_BODY_SIZE = 52  # ceil(256 / 5)

RECORD_VERSION = 1
SIGNING_DOMAIN = b"zhtp-identity-record-v1\x00"
MLDSA_CONTEXT = b"zhtp-identity-record-v1"
MAX_DISPLAY_NAME_SIZE = 64
_FLAG_MLDSA = 0x01
_KNOWN_FLAGS = _FLAG_MLDSA
_UINT64_MAX = (1 << 64) - 1

SEED_SIZE = 32
ED25519_PUBLIC_KEY_SIZE = 32
X25519_PUBLIC_KEY_SIZE = 32
XWING_PUBLIC_KEY_SIZE = 1184 + 32
MLDSA_PUBLIC_KEY_SIZE = 1952
_ED25519_SIGNATURE_SIZE = 64
_MLDSA_SIGNATURE_SIZE = 3309

# version, flags, sequence, name length
_BODY_HEADER = struct.Struct(">BBQH")
# Private key export: export version, flags, then the seeds.
_PRIVATE_EXPORT_VERSION = 1
_PRIVATE_HEADER = struct.Struct(">BB")


def identity_id_of(ed25519_public_key: bytes) -> bytes:
    """The 32-byte identity ID named by an Ed25519 public key (see module doc)."""
    if len(ed25519_public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(ed25519_public_key)}")
    return blake3.blake3(ID_DOMAIN + ed25519_public_key).digest()


def format_identity_id(identity_id: bytes) -> str:
    """``zid1`` + lower-case unpadded base32 of the 32-byte ID."""
    if len(identity_id) != IDENTITY_ID_SIZE:
        raise ValueError(f"an identity ID is {IDENTITY_ID_SIZE} bytes, got {len(identity_id)}")
    body = base64.b32encode(identity_id).decode("ascii").rstrip("=").lower()
    return _ID_TEXT_PREFIX + body


def parse_identity_id(text: str) -> bytes:
    """The 32-byte ID written as `text`; ValueError with a message fit for a CLI user."""
    if not text.lower().startswith(_ID_TEXT_PREFIX):
        raise ValueError(f"an identity ID starts with {_ID_TEXT_PREFIX!r}: {text!r}")
    body = text[len(_ID_TEXT_PREFIX) :].upper()
    if len(body) != _ID_TEXT_BODY_SIZE:
        raise ValueError(
            f"an identity ID is {_ID_TEXT_PREFIX!r} and {_ID_TEXT_BODY_SIZE} base32 characters, "
            f"got {len(body)}: {text!r}"
        )
    try:
        identity_id = base64.b32decode(body + "====")
    except binascii.Error:
        raise ValueError(f"identity ID is not base32 (a-z, 2-7): {text!r}") from None
    # 52 characters carry 260 bits; the 4 spare bits must be zero, so that each
    # ID has one text form.
    if format_identity_id(identity_id) != text.lower():
        raise ValueError(f"identity ID is not canonically encoded: {text!r}")
    return identity_id


def identity_key(identity_id: bytes) -> bytes:
    """The DHT key under which the identity record of `identity_id` lives."""
    if len(identity_id) != IDENTITY_ID_SIZE:
        raise ValueError(f"an identity ID is {IDENTITY_ID_SIZE} bytes, got {len(identity_id)}")
    return IDENTITY_PREFIX + identity_id


def _check_display_name(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_DISPLAY_NAME_SIZE:
        raise ValueError(
            f"a display name is 1-{MAX_DISPLAY_NAME_SIZE} bytes of UTF-8, got {len(encoded)}"
        )
    if not name.isprintable():
        raise ValueError(f"a display name is printable text: {name!r}")
    return encoded


@dataclass(frozen=True)
class PublicIdentity:
    """What anyone may know of an identity: its public keys, as published."""

    ed25519_public_key: bytes
    x25519_public_key: bytes
    xwing_public_key: bytes
    mldsa_public_key: bytes | None
    name: str
    sequence: int

    def __post_init__(self) -> None:
        for field, value, size in (
            ("ed25519_public_key", self.ed25519_public_key, ED25519_PUBLIC_KEY_SIZE),
            ("x25519_public_key", self.x25519_public_key, X25519_PUBLIC_KEY_SIZE),
            ("xwing_public_key", self.xwing_public_key, XWING_PUBLIC_KEY_SIZE),
        ):
            if len(value) != size:
                raise ValueError(f"{field} must be {size} bytes, got {len(value)}")
        if self.mldsa_public_key is not None and len(self.mldsa_public_key) != (
            MLDSA_PUBLIC_KEY_SIZE
        ):
            raise ValueError(
                f"mldsa_public_key must be {MLDSA_PUBLIC_KEY_SIZE} bytes, "
                f"got {len(self.mldsa_public_key)}"
            )
        _check_display_name(self.name)
        if not 0 <= self.sequence <= _UINT64_MAX:
            raise ValueError(f"sequence must fit in uint64, got {self.sequence}")

    @property
    def identity_id(self) -> bytes:
        return identity_id_of(self.ed25519_public_key)

    def xwing_key(self) -> HybridKey:
        """The X-Wing public key as an object HPKE can encrypt to."""
        # HybridKey has no public importer yet (Hybrid._construct is private);
        # the class itself validates the length and the X25519 point.
        return HybridKey(param_set=Hybrid.MLKEM768_X25519, pk=self.xwing_public_key)

    def x25519_key(self) -> EccKey:
        """The X25519 public key as an object HPKE can encrypt to."""
        return import_x25519_public_key(self.x25519_public_key)

    def signed_body(self) -> bytes:
        """The record body (see module doc) both signatures cover, after the domain tag."""
        name = _check_display_name(self.name)
        flags = _FLAG_MLDSA if self.mldsa_public_key is not None else 0
        return (
            _BODY_HEADER.pack(RECORD_VERSION, flags, self.sequence, len(name))
            + name
            + self.ed25519_public_key
            + self.x25519_public_key
            + self.xwing_public_key
            + (self.mldsa_public_key or b"")
        )


class Identity:
    """A user's private keys. Never printed, pickled or compared by value.

    Build with `generate`, or from known seeds with the constructor (test
    vectors) or `import_private_keys` (the keystore).
    """

    __slots__ = ("_ed25519", "_mldsa", "_public_keys", "_seeds", "_x25519", "_xwing")

    def __init__(
        self,
        *,
        ed25519_seed: bytes,
        x25519_seed: bytes,
        xwing_seed: bytes,
        mldsa_seed: bytes | None,
    ) -> None:
        for field, seed in (
            ("ed25519_seed", ed25519_seed),
            ("x25519_seed", x25519_seed),
            ("xwing_seed", xwing_seed),
            ("mldsa_seed", mldsa_seed),
        ):
            # The message names the field and the length only, never the bytes.
            if seed is not None and len(seed) != SEED_SIZE:
                raise ValueError(f"{field} must be {SEED_SIZE} bytes")
        self._seeds = (ed25519_seed, x25519_seed, xwing_seed, mldsa_seed)
        self._ed25519: EccKey = ECC.construct(curve="Ed25519", seed=ed25519_seed)
        self._x25519: EccKey = ECC.construct(curve="Curve25519", seed=x25519_seed)
        self._xwing: HybridKey = Hybrid.generate(
            param_set=Hybrid.MLKEM768_X25519, randfunc=_fixed_bytes(xwing_seed)
        )
        self._mldsa: MLDSAKey | None = (
            None
            if mldsa_seed is None
            else MLDSA.construct(param_set=MLDSA.ML_DSA_65, seed=mldsa_seed)
        )
        self._public_keys = (
            self._ed25519.public_key().export_key(format="raw"),
            self._x25519.public_key().export_key(format="raw"),
            # The encapsulation key (ML-KEM ek || X25519); no public accessor yet.
            self._xwing._pk,
            None if self._mldsa is None else self._mldsa.pk,
        )

    @classmethod
    def generate(cls, *, with_mldsa: bool) -> Identity:
        """A new identity from fresh OS randomness."""
        return cls(
            ed25519_seed=get_random_bytes(SEED_SIZE),
            x25519_seed=get_random_bytes(SEED_SIZE),
            xwing_seed=get_random_bytes(SEED_SIZE),
            mldsa_seed=get_random_bytes(SEED_SIZE) if with_mldsa else None,
        )

    def __repr__(self) -> str:
        return f"Identity({format_identity_id(self.identity_id)}, mldsa={self.has_mldsa})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an Identity holds private keys and cannot be pickled; use a keystore")

    @property
    def identity_id(self) -> bytes:
        return identity_id_of(self._public_keys[0])

    @property
    def ed25519_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032): what owner-signed records carry."""
        return self._public_keys[0]

    @property
    def has_mldsa(self) -> bool:
        return self._mldsa is not None

    def public_identity(self, *, name: str, sequence: int) -> PublicIdentity:
        ed25519, x25519, xwing, mldsa_public = self._public_keys
        return PublicIdentity(
            ed25519_public_key=ed25519,
            x25519_public_key=x25519,
            xwing_public_key=xwing,
            mldsa_public_key=mldsa_public,
            name=name,
            sequence=sequence,
        )

    @property
    def x25519_key(self) -> EccKey:
        """The private X25519 key, for opening ``standard`` HPKE capsules."""
        return self._x25519

    @property
    def xwing_key(self) -> HybridKey:
        """The private X-Wing key, for opening ``quantum-resistant`` HPKE capsules."""
        return self._xwing

    def sign_ed25519(self, payload: bytes) -> bytes:
        return eddsa.new(self._ed25519, "rfc8032").sign(payload)

    def sign_mldsa(self, payload: bytes, *, context: bytes) -> bytes:
        if self._mldsa is None:
            raise ValueError("this identity has no ML-DSA key")
        return mldsa.new(self._mldsa, context).sign(payload)

    def export_private_keys(self) -> bytes:
        """The seeds, serialized for a keystore: SECRET, encrypt before storing.

        Format: version (1 byte, = 1), flags (1 byte, bit 0: ML-DSA seed
        present), then the Ed25519, X25519 and X-Wing seeds and, if flagged,
        the ML-DSA seed -- 32 bytes each.
        """
        ed25519, x25519, xwing, mldsa_seed = self._seeds
        flags = _FLAG_MLDSA if mldsa_seed is not None else 0
        header = _PRIVATE_HEADER.pack(_PRIVATE_EXPORT_VERSION, flags)
        return header + ed25519 + x25519 + xwing + (mldsa_seed or b"")

    @classmethod
    def import_private_keys(cls, data: bytes) -> Identity:
        """Inverse of `export_private_keys`; ValueError (revealing nothing) if malformed."""
        if len(data) < _PRIVATE_HEADER.size:
            raise ValueError("private key export is truncated")
        version, flags = _PRIVATE_HEADER.unpack_from(data)
        if version != _PRIVATE_EXPORT_VERSION:
            raise ValueError(f"unknown private key export version {version}")
        if flags & ~_KNOWN_FLAGS:
            raise ValueError("private key export has unknown flags")
        seed_count = 4 if flags & _FLAG_MLDSA else 3
        if len(data) != _PRIVATE_HEADER.size + seed_count * SEED_SIZE:
            raise ValueError("private key export has the wrong length")
        seeds = [
            data[offset : offset + SEED_SIZE]
            for offset in range(_PRIVATE_HEADER.size, len(data), SEED_SIZE)
        ]
        return cls(
            ed25519_seed=seeds[0],
            x25519_seed=seeds[1],
            xwing_seed=seeds[2],
            mldsa_seed=seeds[3] if seed_count == 4 else None,
        )


def _fixed_bytes(seed: bytes) -> Callable[[int], bytes]:
    # Hybrid.generate is the public way to build an X-Wing key; it reads its
    # 32-byte seed from a randfunc, so hand it exactly the seed we hold.
    def read(size: int) -> bytes:
        if size != len(seed):
            raise ValueError(f"X-Wing asked for {size} seed bytes, expected {len(seed)}")
        return seed

    return read


def make_identity_record(identity: Identity, *, name: str, sequence: int) -> bytes:
    """Version `sequence` of `identity`'s public record, shown as `name`, signed."""
    body = identity.public_identity(name=name, sequence=sequence).signed_body()
    payload = SIGNING_DOMAIN + body
    record = body + identity.sign_ed25519(payload)
    if identity.has_mldsa:
        record += identity.sign_mldsa(payload, context=MLDSA_CONTEXT)
    return record


class _Reader:
    """Consumes a record front to back; running short is always `truncated`."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self._data):
            raise RecordInvalid("identity record truncated")
        chunk = self._data[self.offset : end]
        self.offset = end
        return chunk

    @property
    def remaining(self) -> int:
        return len(self._data) - self.offset


def verify_identity_record(data: bytes) -> PublicIdentity:
    """The identity a record publishes, after checking both signatures.

    Raises RecordInvalid (with a short reason, never the bytes) otherwise.
    """
    reader = _Reader(data)
    version, flags, sequence, name_size = _BODY_HEADER.unpack(reader.take(_BODY_HEADER.size))
    if version != RECORD_VERSION:
        raise RecordInvalid("identity record has an unknown version")
    if flags & ~_KNOWN_FLAGS:
        raise RecordInvalid("identity record has unknown flags")
    name_bytes = reader.take(name_size)
    ed25519 = reader.take(ED25519_PUBLIC_KEY_SIZE)
    x25519 = reader.take(X25519_PUBLIC_KEY_SIZE)
    xwing = reader.take(XWING_PUBLIC_KEY_SIZE)
    mldsa_public = reader.take(MLDSA_PUBLIC_KEY_SIZE) if flags & _FLAG_MLDSA else None
    body_end = reader.offset
    ed25519_signature = reader.take(_ED25519_SIGNATURE_SIZE)
    mldsa_signature = reader.take(_MLDSA_SIGNATURE_SIZE) if flags & _FLAG_MLDSA else None
    if reader.remaining:
        raise RecordInvalid("identity record has trailing bytes")
    try:
        public = PublicIdentity(
            ed25519_public_key=ed25519,
            x25519_public_key=x25519,
            xwing_public_key=xwing,
            mldsa_public_key=mldsa_public,
            name=name_bytes.decode("utf-8"),
            sequence=sequence,
        )
    except ValueError:  # UnicodeDecodeError included
        raise RecordInvalid("identity record has an invalid display name") from None
    payload = SIGNING_DOMAIN + data[:body_end]
    try:
        ed25519_key = eddsa.import_public_key(ed25519)
    except ValueError:
        raise RecordInvalid("identity record Ed25519 key is not a curve point") from None
    # A small-order key (e.g. the neutral point) verifies a forged signature on
    # any message: such an identity belongs to everyone, so to no one.
    if (ed25519_key.pointQ * 8).is_point_at_infinity():
        raise RecordInvalid("identity record Ed25519 key has small order")
    try:
        eddsa.new(ed25519_key, "rfc8032").verify(payload, ed25519_signature)
    except ValueError:
        raise RecordInvalid("identity record Ed25519 signature does not verify") from None
    if mldsa_public is not None and mldsa_signature is not None:
        key = MLDSA.construct(param_set=MLDSA.ML_DSA_65, pk=mldsa_public)
        try:
            mldsa.new(key, MLDSA_CONTEXT).verify(payload, mldsa_signature)
        except ValueError:
            raise RecordInvalid("identity record ML-DSA signature does not verify") from None
    # The encryption keys are not signatures' business, but a record whose
    # keys nobody can encrypt to is useless to store: check they import.
    try:
        public.x25519_key()
        public.xwing_key()
    except ValueError:
        raise RecordInvalid("identity record has an invalid encryption key") from None
    return public


class IdentityRecordValidator:
    """Validator for ``/zhtp/identity/<32-byte identity id>``.

    The key names the identity, so only a record signed by the Ed25519 key
    that hashes to it is accepted. Records do not expire; a newer sequence
    replaces an older one, never the reverse.
    """

    def __init__(self, max_value_size: int = 16 * 1024) -> None:
        if max_value_size <= 0:
            raise ValueError("max_value_size must be positive")
        self.max_value_size = max_value_size

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        if not key.startswith(IDENTITY_PREFIX):
            raise RecordInvalid("not an identity key")
        if len(key) != len(IDENTITY_PREFIX) + IDENTITY_ID_SIZE:
            raise RecordInvalid("identity key id is not 32 bytes")
        if len(value) > self.max_value_size:
            raise RecordInvalid("identity record too large")
        public = verify_identity_record(value)
        if public.identity_id != key[len(IDENTITY_PREFIX) :]:
            raise RecordInvalid("identity record is signed by another identity than its key")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Highest sequence; on a tie, the greatest encoded bytes (same choice everywhere).

        `values` must all have passed `validate` for `key`.
        """
        if not values:
            raise ValueError("select needs at least one value")
        ranks = [(_record_sequence(value), value) for value in values]
        return max(range(len(values)), key=ranks.__getitem__)

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        return None


def _record_sequence(value: bytes) -> int:
    # Read without verifying: select only sees values validate accepted.
    if len(value) < _BODY_HEADER.size:
        raise RecordInvalid("identity record truncated")
    sequence: int = _BODY_HEADER.unpack_from(value)[2]
    return sequence
