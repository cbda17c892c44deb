"""AES-256-GCM encryption of one segment under the object's content key.

Each stored object gets a fresh random 32-byte content key (`new_content_key`)
that encrypts that object once; recipients receive it wrapped in capsules,
never in the clear. The nonce is 4 zero bytes followed by the segment index
as 8 bytes big-endian. Nonce reuse under one key is what breaks GCM, and it
cannot happen here: a key encrypts one object, once, and within it every
segment has its own index. A new version of the object gets a new key.

The associated data binds what the manifest says about the segment — its
index, whether it is compressed, and its plain size — under a domain string,
so a manifest that reorders segments or lies about those fields makes the
segment fail to authenticate instead of decoding into something else.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.content.errors import ContentError

__all__ = [
    "KEY_SIZE",
    "TAG_SIZE",
    "new_content_key",
    "open_segment",
    "seal_segment",
    "validate_content_key",
]

KEY_SIZE = 32
TAG_SIZE = 16

_DOMAIN = b"zhtp/content/segment/aes-256-gcm/v1\x00"
_NONCE_PREFIX = bytes(4)
_UINT64_MAX = (1 << 64) - 1
_SEGMENT_FIELDS = struct.Struct(">QBQ")  # index, compressed, plain size


def new_content_key() -> bytes:
    """A fresh random content key, for one object."""
    return os.urandom(KEY_SIZE)


def validate_content_key(key: bytes) -> bytes:
    """`key` if it can be a content key; ValueError otherwise."""
    # The message describes the key's shape only: the key is a secret.
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"content key must be {KEY_SIZE} bytes")
    return key


def _cipher(key: bytes) -> AESGCM:
    return AESGCM(validate_content_key(key))


def _nonce(index: int) -> bytes:
    if not 0 <= index <= _UINT64_MAX:
        raise ValueError(f"segment index {index} is outside 0..2**64-1")
    return _NONCE_PREFIX + index.to_bytes(8, "big")


def _associated_data(index: int, compressed: bool, plain_size: int) -> bytes:
    if not 0 <= plain_size <= _UINT64_MAX:
        raise ValueError(f"segment {index}: plain size {plain_size} is outside 0..2**64-1")
    return _DOMAIN + _SEGMENT_FIELDS.pack(index, compressed, plain_size)


def seal_segment(
    key: bytes, index: int, data: bytes | memoryview, *, compressed: bool, plain_size: int
) -> bytes:
    """Ciphertext and 16-byte tag of segment `index` (`data` as stored: maybe compressed)."""
    cipher = _cipher(key)
    return cipher.encrypt(_nonce(index), data, _associated_data(index, compressed, plain_size))


def open_segment(
    key: bytes, index: int, data: bytes | memoryview, *, compressed: bool, plain_size: int
) -> bytes:
    """The stored bytes of segment `index`; ContentError unless `data` authenticates.

    Authentication fails for a wrong key, any change to the ciphertext or
    tag, and any other index, compressed flag or plain size than the ones
    the segment was sealed with.
    """
    cipher = _cipher(key)
    nonce = _nonce(index)
    associated = _associated_data(index, compressed, plain_size)
    if len(data) < TAG_SIZE:
        raise ContentError(
            f"segment {index}: ciphertext is {len(data)} bytes, shorter than the "
            f"{TAG_SIZE}-byte tag"
        )
    try:
        return cipher.decrypt(nonce, data, associated)
    except InvalidTag:
        raise ContentError(
            f"segment {index}: authentication failed (wrong key, tampered ciphertext, "
            "or index, compression flag or plain size differ from the sealed ones)"
        ) from None
