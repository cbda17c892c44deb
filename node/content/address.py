"""Content addresses: shard addresses, content IDs (CIDv1) and capability strings.

A file's content ID is the BLAKE3-256 digest of its encoded manifest, shown
as a CIDv1 so IPFS-literate tools and people recognise it:

    'b' + base32lower(0x01 || 0x50 || 0x1e 0x20 || digest)
          multibase  version  codec   multihash blake3, 32 bytes

The codec is 0x50 "protobuf" from the multicodec table: the CID names a
protobuf manifest that describes the file, not the file's bytes, so 0x55
"raw" (which promises the bytes themselves) would mislead any tool that
fetches and checks it.

References, in the manner of Tahoe-LAFS read-caps:

    <cid>                          the content, public
    zhtp://<cid>                   the same, as a link
    zhtp://<cid>#<key>             a capability: the link plus the 32-byte
                                   content key, unpadded base64url

The key sits in the URL fragment, which browsers and HTTP clients never send
to a server. Keys never appear in an exception message or a repr.

The CID is written by hand (three one-byte varints): py-cid is a transitive
dependency only, and the tests check this module against it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import blake3

__all__ = [
    "CID_CODEC_PROTOBUF",
    "CID_VERSION",
    "DIGEST_SIZE",
    "KEY_SIZE",
    "MAX_REFERENCE_CHARS",
    "MULTIBASE_BASE32",
    "MULTIHASH_BLAKE3",
    "SCHEME",
    "AddressError",
    "Reference",
    "format_capability",
    "format_cid",
    "parse_cid",
    "parse_reference",
    "shard_address",
]

DIGEST_SIZE = 32
KEY_SIZE = 32

CID_VERSION = 1
CID_CODEC_PROTOBUF = 0x50
MULTIHASH_BLAKE3 = 0x1E
MULTIBASE_BASE32 = "b"  # RFC 4648 base32, lower case, no padding
SCHEME = "zhtp://"

_CID_PREFIX = bytes([CID_VERSION, CID_CODEC_PROTOBUF, MULTIHASH_BLAKE3, DIGEST_SIZE])
# 1 + 58 characters for our CIDs; the cap only keeps hostile input small.
_MAX_CID_CHARS = 128
# A capability is about 7 + 59 + 1 + 43 characters.
MAX_REFERENCE_CHARS = 256
_MAX_VARINT_BYTES = 9

_BASE32_LOWER = re.compile(r"[a-z2-7]*")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_KEY_CHARS = 43  # ceil(32 * 8 / 6), unpadded

# Names for codes people are likely to paste, to make errors readable.
_HASH_NAMES = {0x12: "sha2-256", 0x13: "sha2-512", 0x1B: "keccak-256", 0xB220: "blake2b-256"}
_CODEC_NAMES = {0x55: "raw", 0x70: "dag-pb", 0x71: "dag-cbor", 0x0129: "dag-json"}


class AddressError(ValueError):
    """A CID or reference that does not name ZHTP content; the message says why."""


@dataclass(frozen=True)
class Reference:
    """What a user pasted: a content ID, and the content key if it was a capability."""

    digest: bytes
    key: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise AddressError(
                f"a content ID digest is {DIGEST_SIZE} bytes, got {len(self.digest)}"
            )
        if self.key is not None and len(self.key) != KEY_SIZE:
            raise AddressError(f"a content key is {KEY_SIZE} bytes, got {len(self.key)}")

    @property
    def is_capability(self) -> bool:
        return self.key is not None

    def __repr__(self) -> str:
        key = "<hidden>" if self.key is not None else "None"
        return f"Reference(cid={format_cid(self.digest)!r}, key={key})"


def shard_address(data: bytes) -> bytes:
    """The address of a shard: BLAKE3-256 of its bytes."""
    return blake3.blake3(data).digest()


# -- CIDs ----------------------------------------------------------------------


def format_cid(digest: bytes) -> str:
    """The CIDv1 string of a manifest digest."""
    if len(digest) != DIGEST_SIZE:
        raise AddressError(f"a content ID digest is {DIGEST_SIZE} bytes, got {len(digest)}")
    encoded = base64.b32encode(_CID_PREFIX + digest).decode("ascii")
    return MULTIBASE_BASE32 + encoded.rstrip("=").lower()


def parse_cid(text: str) -> bytes:
    """The manifest digest named by a CIDv1 string made by `format_cid`."""
    if not text:
        raise AddressError("empty content ID")
    if len(text) > _MAX_CID_CHARS:
        raise AddressError(f"content ID is {len(text)} characters; the limit is {_MAX_CID_CHARS}")
    if text.startswith("Qm") and len(text) == 46:
        raise AddressError("CIDv0 (base58 'Qm...') is not a ZHTP content ID; expected CIDv1")
    if text[0] != MULTIBASE_BASE32:
        raise AddressError(
            f"content ID multibase prefix is {text[0]!r}; expected {MULTIBASE_BASE32!r} "
            "(base32, lower case)"
        )
    raw = _decode_base32(text[1:])
    version, pos = _read_varint(raw, 0, "CID version")
    if version != CID_VERSION:
        raise AddressError(f"CID version is {version}; expected {CID_VERSION}")
    codec, pos = _read_varint(raw, pos, "CID codec")
    if codec != CID_CODEC_PROTOBUF:
        raise AddressError(
            f"CID codec is {_code_name(codec, _CODEC_NAMES)}; a ZHTP manifest is "
            f"protobuf (0x{CID_CODEC_PROTOBUF:x})"
        )
    hash_code, pos = _read_varint(raw, pos, "multihash function")
    if hash_code != MULTIHASH_BLAKE3:
        raise AddressError(
            f"multihash function is {_code_name(hash_code, _HASH_NAMES)}; "
            f"expected blake3 (0x{MULTIHASH_BLAKE3:x})"
        )
    length, pos = _read_varint(raw, pos, "multihash length")
    if length != DIGEST_SIZE:
        raise AddressError(f"multihash digest length is {length}; expected {DIGEST_SIZE}")
    digest = raw[pos : pos + DIGEST_SIZE]
    if len(digest) != DIGEST_SIZE:
        raise AddressError(f"multihash digest is truncated: {len(digest)} of {DIGEST_SIZE} bytes")
    trailing = len(raw) - pos - DIGEST_SIZE
    if trailing:
        raise AddressError(f"content ID has {trailing} trailing bytes after the digest")
    return digest


def _decode_base32(body: str) -> bytes:
    if "=" in body:
        raise AddressError("content ID has base32 padding ('='); multibase 'b' is unpadded")
    if not _BASE32_LOWER.fullmatch(body):
        bad = next(c for c in body if not _BASE32_LOWER.fullmatch(c))
        raise AddressError(
            f"content ID contains {bad!r}, which is not a lower-case base32 character"
        )
    # 1, 3 or 6 characters past a multiple of 8 cannot be produced from whole bytes.
    if len(body) % 8 in (1, 3, 6):
        raise AddressError(f"content ID has an impossible base32 length ({len(body)})")
    padded = body.upper() + "=" * (-len(body) % 8)
    raw = base64.b32decode(padded)
    # Unused low bits of the last character must be zero, so one CID has one
    # spelling (and one string maps to one manifest).
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != body:
        raise AddressError("content ID has non-zero padding bits in its last character")
    return raw


def _read_varint(raw: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(raw):
            raise AddressError(f"content ID ends inside the {what}")
        byte = raw[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise AddressError(f"{what} is not a minimal varint")
            return value, pos + i + 1
    raise AddressError(f"{what} varint is longer than {_MAX_VARINT_BYTES} bytes")


def _code_name(code: int, names: dict[int, str]) -> str:
    name = names.get(code)
    return f"{name} (0x{code:x})" if name else f"0x{code:x}"


# -- references and capabilities -------------------------------------------------


def format_capability(digest: bytes, key: bytes) -> str:
    """``zhtp://<cid>#<key>``: everything needed to fetch and read the content."""
    if len(key) != KEY_SIZE:
        raise AddressError(f"a content key is {KEY_SIZE} bytes, got {len(key)}")
    encoded_key = base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")
    return f"{SCHEME}{format_cid(digest)}#{encoded_key}"


def parse_reference(text: str) -> Reference:
    """A bare CID, ``zhtp://<cid>`` or ``zhtp://<cid>#<key>``, as a Reference.

    Error messages may quote the CID part but never the key.
    """
    if not text:
        raise AddressError("empty reference")
    if len(text) > MAX_REFERENCE_CHARS:
        raise AddressError(
            f"reference is {len(text)} characters; the limit is {MAX_REFERENCE_CHARS}"
        )
    if not text.startswith(SCHEME):
        if "://" in text:
            scheme = text.split("://", 1)[0]
            # Quote the scheme only if it cannot hold a key (keys follow '#').
            shown = repr(scheme) if len(scheme) <= 16 and "#" not in scheme else "not zhtp"
            raise AddressError(f"reference scheme is {shown}; expected {SCHEME!r} (lower case)")
        if "#" in text:
            raise AddressError(f"a reference with a key must start with {SCHEME!r}")
        return Reference(parse_cid(text))
    body = text[len(SCHEME) :]
    cid_text, has_key, key_text = body.partition("#")
    if any(c in cid_text for c in "/?"):
        raise AddressError(
            f"reference has a path or query; expected {SCHEME}<cid> or {SCHEME}<cid>#<key>"
        )
    digest = parse_cid(cid_text)
    if not has_key:
        return Reference(digest)
    return Reference(digest, _decode_key(key_text))


def _decode_key(text: str) -> bytes:
    # Messages here describe the key's shape only: the key is a secret.
    if not text:
        raise AddressError("capability has an empty key after '#'")
    if "=" in text:
        raise AddressError("capability key has base64 padding ('='); it must be unpadded")
    if not _BASE64URL.fullmatch(text):
        raise AddressError(
            "capability key contains characters outside the base64url alphabet (A-Z a-z 0-9 - _)"
        )
    if len(text) != _KEY_CHARS:
        raise AddressError(
            f"capability key is {len(text)} characters; a {KEY_SIZE}-byte key is {_KEY_CHARS}"
        )
    try:
        key = base64.urlsafe_b64decode(text + "=")
    except binascii.Error:  # unreachable after the checks above
        # `from None`: the chained error must not carry the key into a traceback.
        raise AddressError("capability key is not valid base64url") from None
    if base64.urlsafe_b64encode(key).decode("ascii").rstrip("=") != text:
        raise AddressError("capability key has non-zero padding bits in its last character")
    return key
