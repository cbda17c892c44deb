"""Record validation: what a DHT record must look like before anyone keeps it.

Every value that reaches a node through PUT_VALUE, or comes back from a peer
in a GET_VALUE response, passes through a `Validator` before it is stored,
returned or compared with another copy. A validator is pure: it is given the
key, the value and the current time, and either returns or raises
`RecordInvalid`. It never touches storage, the network or the clock.

Namespaces: the key's leading path segment (``/zhtp/blob/``, ``/zhtp/name/``,
...) picks the validator, in the manner of go-libp2p-record's
`NamespacedValidator`. Keys are bytes everywhere; `format_key`/`parse_key`
give the one printable form used by the CLI and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

import blake3

__all__ = [
    "BLOB_DIGEST_SIZE",
    "BLOB_PREFIX",
    "MANIFEST_PREFIX",
    "MAX_KEY_SIZE",
    "BlobValidator",
    "ContentAddressedValidator",
    "ManifestValidator",
    "NamespacedValidator",
    "RecordInvalid",
    "Validator",
    "blob_key",
    "format_key",
    "parse_key",
]

# Keys are small and travel in every lookup message; 512 bytes leaves room for
# every namespace we define (a name key is at most ~200 bytes) while keeping
# an attacker from filling tables with huge keys.
MAX_KEY_SIZE = 512

BLOB_PREFIX = b"/zhtp/blob/"
MANIFEST_PREFIX = b"/zhtp/manifest/"
BLOB_DIGEST_SIZE = 32

# Printable form of keys that are neither blob keys nor printable text, so
# that `format_key` never fails on whatever bytes a peer sent us.
_HEX_FORM = "hex:"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# bytes.fromhex alone would also accept embedded spaces; be strict.
_HEX_EVEN = re.compile(r"(?:[0-9a-fA-F]{2})*")


class RecordInvalid(Exception):
    """A record (key + value) that must not be stored, served or preferred.

    `reason` is a short phrase fit for a log line or a metrics label; it never
    contains the (attacker-controlled) value itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Validator(Protocol):
    """What every record namespace implements."""

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        """Return if `value` is acceptable under `key` at `now_ms`; else raise RecordInvalid."""
        ...

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Index of the best of several values that have all passed `validate`."""
        ...

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        """When a valid value stops being valid on its own; None if never."""
        ...


class MergingValidator(Validator, Protocol):
    """A namespace many writers share (a tag index): copies are united, not ranked."""

    def merge(self, key: bytes, values: Sequence[bytes], now_ms: int) -> bytes:
        """One value holding what every (already valid) value holds, as the rules allow.

        Raises RecordInvalid when nothing valid is left (e.g. every entry expired).
        """
        ...


def blob_key(value: bytes) -> bytes:
    """The content-addressed key of `value`: prefix + raw BLAKE3-256 digest."""
    return BLOB_PREFIX + blake3.blake3(value).digest()


class ContentAddressedValidator:
    """``<prefix><blake3>``: immutable records whose key is the hash of their value."""

    def __init__(self, prefix: bytes, max_value_size: int = 1 << 20) -> None:
        if max_value_size <= 0:
            raise ValueError("max_value_size must be positive")
        self.prefix = prefix
        self.max_value_size = max_value_size
        self._kind = prefix.strip(b"/").rsplit(b"/", 1)[-1].decode("ascii")

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        if not key.startswith(self.prefix):
            raise RecordInvalid(f"not a {self._kind} key")
        if len(key) != len(self.prefix) + BLOB_DIGEST_SIZE:
            raise RecordInvalid(f"{self._kind} key digest is not 32 bytes")
        # Size before hashing: never spend CPU on a value we would refuse anyway.
        if len(value) > self.max_value_size:
            raise RecordInvalid(f"{self._kind} value too large")
        if blake3.blake3(value).digest() != key[len(self.prefix) :]:
            raise RecordInvalid(f"{self._kind} value does not hash to its key")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        if not values:
            raise ValueError("select needs at least one value")
        # Every valid value hashes to the key, so all valid copies are equal.
        return 0

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        return None


class BlobValidator(ContentAddressedValidator):
    """`/zhtp/blob/<blake3>`: opaque content-addressed values."""

    def __init__(self, max_value_size: int = 1 << 20) -> None:
        super().__init__(BLOB_PREFIX, max_value_size)


class ManifestValidator(ContentAddressedValidator):
    """`/zhtp/manifest/<blake3>`: a file's manifest; its digest is the content ID.

    Beyond the hash, the value must decode as a valid manifest, and a signed
    manifest's signature must verify with its owner's keys: nodes do not
    spend storage and bandwidth on bytes no reader could use or trust.
    Neither check needs a key (the manifest itself is never encrypted).
    """

    def __init__(self, max_value_size: int = 1 << 20) -> None:
        super().__init__(MANIFEST_PREFIX, max_value_size)

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        super().validate(key, value, now_ms)
        # Imported here: the content package is not needed by other namespaces
        # (and node.access imports this module).
        from node.access import AccessError, verify_owner
        from node.content.manifest import ManifestError, decode_manifest

        try:
            manifest = decode_manifest(value, max_size=self.max_value_size)
        except ManifestError as error:
            field = error.field or "encoding"
            raise RecordInvalid(f"manifest does not decode ({field})") from None
        # A signed manifest whose signature fails is a forgery or damage:
        # refuse it here, so no node stores or serves it.
        try:
            verify_owner(manifest)
        except AccessError:
            raise RecordInvalid("manifest owner signature does not verify") from None


class NamespacedValidator:
    """Dispatches to one validator per key namespace.

    Prefixes must look like ``/ns/`` (start and end with ``/``) so that one
    namespace can never be a partial-word prefix of another (``/zhtp/nam``
    matching ``/zhtp/name/...``). If prefixes nest, the longest one wins.
    """

    def __init__(self, validators: Mapping[bytes, Validator]) -> None:
        for prefix in validators:
            if len(prefix) < 2 or not prefix.startswith(b"/") or not prefix.endswith(b"/"):
                raise ValueError(f"namespace prefix must look like b'/ns/': {prefix!r}")
        # Longest first, so the first match is the most specific namespace.
        self._validators: tuple[tuple[bytes, Validator], ...] = tuple(
            sorted(validators.items(), key=lambda item: len(item[0]), reverse=True)
        )

    @property
    def prefixes(self) -> tuple[bytes, ...]:
        return tuple(prefix for prefix, _ in self._validators)

    def validator_for(self, key: bytes) -> Validator:
        """The validator responsible for `key`; RecordInvalid for a key no namespace accepts."""
        if not key:
            raise RecordInvalid("empty key")
        if len(key) > MAX_KEY_SIZE:
            raise RecordInvalid("key too long")
        for prefix, validator in self._validators:
            if key.startswith(prefix):
                return validator
        raise RecordInvalid("unknown key namespace")

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        self.validator_for(key).validate(key, value, now_ms)

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        if not values:
            raise ValueError("select needs at least one value")
        index = self.validator_for(key).select(key, values)
        # A namespace validator returning nonsense is our bug, not a peer's.
        if not 0 <= index < len(values):
            raise AssertionError(f"validator selected index {index} of {len(values)} values")
        return index

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        return self.validator_for(key).expires_at_ms(key, value)

    def merger_for(self, key: bytes) -> MergingValidator | None:
        """The namespace's validator if its copies merge rather than compete."""
        validator = self.validator_for(key)
        return validator if hasattr(validator, "merge") else None  # type: ignore[return-value]


def _is_text_key(key: bytes) -> bool:
    # Text form only for keys that read back unambiguously: they start with
    # "/" (every namespace does; "hex:" and bare digests do not) and are
    # printable UTF-8 (no control characters to corrupt a terminal or log).
    if not key.startswith(b"/"):
        return False
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def format_key(key: bytes) -> str:
    """A printable form of any key; `parse_key` turns it back into the same bytes.

    - a blob key: ``/zhtp/blob/<64 lowercase hex>``
    - a key that is printable UTF-8 starting with ``/`` (name keys): the text itself
    - anything else (e.g. a malformed key received from a peer): ``hex:<hex>``
    """
    for prefix in (BLOB_PREFIX, MANIFEST_PREFIX):
        if key.startswith(prefix):
            digest = key[len(prefix) :]
            if len(digest) == BLOB_DIGEST_SIZE:
                return prefix.decode("ascii") + digest.hex()
            return _HEX_FORM + key.hex()
    if _is_text_key(key):
        return key.decode("utf-8")
    return _HEX_FORM + key.hex()


def parse_key(text: str) -> bytes:
    """The key named by `text` (a `format_key` form, or a bare 64-hex blob digest).

    Raises ValueError with a message fit to show a CLI user.
    """
    if not text:
        raise ValueError("empty key")
    for prefix in (BLOB_PREFIX, MANIFEST_PREFIX):
        text_prefix = prefix.decode("ascii")
        if text.startswith(text_prefix):
            digest = text[len(text_prefix) :]
            if not _HEX64.fullmatch(digest):
                raise ValueError(
                    f"{text_prefix[:-1]} key must be {text_prefix} followed by 64 hex digits: "
                    f"{text!r}"
                )
            return prefix + bytes.fromhex(digest)
    if _HEX64.fullmatch(text):
        return BLOB_PREFIX + bytes.fromhex(text)
    if text.startswith(_HEX_FORM):
        digits = text[len(_HEX_FORM) :]
        if not _HEX_EVEN.fullmatch(digits):
            raise ValueError(f"{_HEX_FORM} must be followed by pairs of hex digits: {text!r}")
        key = bytes.fromhex(digits)
        if not key:
            raise ValueError("empty key")
    elif text.startswith("/"):
        if not text.isprintable():
            raise ValueError(f"key contains unprintable characters: {text!r}")
        key = text.encode("utf-8")
    else:
        raise ValueError(
            f"not a key: {text!r} (expected /zhtp/blob/<64 hex>, a 64-hex digest, "
            "or a /namespace/... key)"
        )
    if len(key) > MAX_KEY_SIZE:
        raise ValueError(f"key is {len(key)} bytes; the maximum is {MAX_KEY_SIZE}")
    return key
