"""`/zhtp/tag/<tag>` records: the search index behind ``zhtp search TAG``.

Theory of operation
-------------------
Anyone may label content with a tag, so one DHT key per tag is written by
many owners. The value under ``/zhtp/tag/`` + normalised tag is therefore not
one owner's record but a tag index: a bounded set of `TagEntry` values, each
saying "the user identity with this Ed25519 key publishes the manifest with
this content ID under this tag, from `published_ms` until `expires_at_ms`",
and each signed by that identity.

Records MERGE rather than replace. A node that stores a tag record merges the
incoming value with the copy it holds (`TagIndexValidator.merge`), and a
reader merges the copies it collects from several holders, so two owners
writing the same tag at the same time do not erase each other. `select`
exists for code paths that can only keep one of several copies; it prefers
the copy with more entries, which is the weaker choice: tag keys should go
through `merge`.

Merge rule (a pure function of the *set* of entries in all inputs, so it is
commutative, associative and idempotent, and every node given the same copies
computes the same bytes):

1. drop entries expired at `now_ms` (``now_ms >= expires_at_ms``);
2. rank the rest, best first, by published time, then signature bytes, then
   expiry, content ID and owner key (a total order: only identical entries
   tie);
3. walk them best first and keep an entry unless its (content ID, owner) pair
   is already kept (so the newest publication of a pair wins), its owner
   already has `MAX_ENTRIES_PER_OWNER` entries kept, or `MAX_TAG_ENTRIES`
   entries are kept.

Those three caps nest (a pair belongs to one owner), so this greedy walk is
the one that picks the best basis of a laminar matroid; whether an entry
survives depends only on what better entries exist, which is why merging in
any grouping or order gives the same result.

Known limitation: bounded size is the defence against unbounded growth, and
the price is that a flood of newer entries by many keys can push older
entries out of a tag. Keys cost nothing, so no rule at this layer can stop a
determined flooder; the per-owner cap only stops one key from filling a tag
by itself. Owners' nodes re-publish their entries (merging them in again)
well within `MAX_ENTRY_LIFETIME_MS`, which both renews them and brings back
entries a flood has displaced once the flood expires.

Removal: not implemented. An entry disappears when it expires and its
owner's node stops re-publishing it; a tombstone would have to outlive every
copy of the entry it cancels, which the expiry-first merge above does not do.

Expired entries inside a value: `validate` accepts a value as long as one of
its entries is still live, so a held copy stays valid exactly until
`expires_at_ms` (its latest entry expiry) and is not thrown away whole when
its oldest entry lapses; merging drops the expired entries.

Encoding (the DHT value), integers unsigned big-endian::

    version    1 byte    = 1
    count      2 bytes   number of entries, 0-MAX_TAG_ENTRIES
    entries    count x 144 bytes, sorted by (content ID, owner key), and no
               two with the same pair:
        content ID    32 bytes   BLAKE3-256 digest of the manifest
        owner key     32 bytes   Ed25519 public key (RFC 8032) of a user identity
        published     8 bytes    ms since the Unix epoch
        expires       8 bytes    ms since the Unix epoch
        signature     64 bytes   Ed25519 over `signing_payload`

Every field has a fixed size and the order is fixed, so one set of entries
has exactly one encoding; anything else (unsorted, duplicate pairs, trailing
bytes, a short entry, another version) is refused.

Signing payload of one entry: `SIGNING_DOMAIN`, the tag key with a 4-byte
length, the content ID, then published and expiry as 8 bytes each. The key
is covered so that an entry signed for one tag cannot be replayed under
another; the domain tag keeps any other signature by the same identity key
(an identity record, a name) from passing as a tag entry.
"""

from __future__ import annotations

import struct
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from Crypto.PublicKey.ECC import EccKey
from Crypto.Signature import eddsa

from node.identity import Identity, identity_id_of
from node.records.validators import RecordInvalid

__all__ = [
    "CONTENT_ID_SIZE",
    "ENTRY_SIZE",
    "INDEX_VERSION",
    "MAX_CLOCK_SKEW_MS",
    "MAX_ENTRIES_PER_OWNER",
    "MAX_ENTRY_LIFETIME_MS",
    "MAX_TAG_ENTRIES",
    "MAX_TAG_INDEX_SIZE",
    "MAX_TAG_SIZE",
    "SIGNING_DOMAIN",
    "TAG_PREFIX",
    "TagEntry",
    "TagIndexValidator",
    "decode_tag_index",
    "encode_tag_index",
    "make_tag_entry",
    "merge_tag_entries",
    "normalise_tag",
    "parse_tag_key",
    "signing_payload",
    "tag_key",
]

TAG_PREFIX = b"/zhtp/tag/"
MAX_TAG_SIZE = 64
SIGNING_DOMAIN = b"zhtp-tag-entry-v1\x00"
INDEX_VERSION = 1

MAX_TAG_ENTRIES = 128
MAX_ENTRIES_PER_OWNER = 8
MAX_ENTRY_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000
# How far in the future `published_ms` may lie, for clocks that run ahead.
# Without a bound, a far-future publication would also allow a far-future
# expiry, and the entry would outlive MAX_ENTRY_LIFETIME_MS.
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000

CONTENT_ID_SIZE = 32
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_UINT64_MAX = (1 << 64) - 1

_HEADER = struct.Struct(">BH")  # version, count
_TIMES = struct.Struct(">QQ")  # published, expires
ENTRY_SIZE = CONTENT_ID_SIZE + _ED25519_KEY_SIZE + _TIMES.size + _ED25519_SIGNATURE_SIZE
MAX_TAG_INDEX_SIZE = _HEADER.size + MAX_TAG_ENTRIES * ENTRY_SIZE


@dataclass(frozen=True)
class TagEntry:
    """One owner's signed statement that `content_id` is published under a tag."""

    content_id: bytes
    owner_public_key: bytes  # raw Ed25519 public key of a user identity
    published_ms: int
    expires_at_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        for field, value, size in (
            ("content_id", self.content_id, CONTENT_ID_SIZE),
            ("owner_public_key", self.owner_public_key, _ED25519_KEY_SIZE),
            ("signature", self.signature, _ED25519_SIGNATURE_SIZE),
        ):
            if len(value) != size:
                raise ValueError(f"{field} must be {size} bytes, got {len(value)}")
        for field, number in (
            ("published_ms", self.published_ms),
            ("expires_at_ms", self.expires_at_ms),
        ):
            if not 0 <= number <= _UINT64_MAX:
                raise ValueError(f"{field} must fit in uint64, got {number}")

    @property
    def owner_id(self) -> bytes:
        """The identity ID of the owner (see `node.identity.identity_id_of`)."""
        return identity_id_of(self.owner_public_key)

    @property
    def pair(self) -> tuple[bytes, bytes]:
        """(content ID, owner key): what an index holds at most one entry for."""
        return self.content_id, self.owner_public_key

    def encode(self) -> bytes:
        return (
            self.content_id
            + self.owner_public_key
            + _TIMES.pack(self.published_ms, self.expires_at_ms)
            + self.signature
        )


def normalise_tag(text: str) -> str:
    """The one spelling of a tag: trimmed, lower case, NFC.

    Raises ValueError (with a message fit for a CLI user) unless the result is
    1-`MAX_TAG_SIZE` bytes of UTF-8, printable, and without '/'.
    """
    tag = _normal_form(text)
    encoded = tag.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_TAG_SIZE:
        raise ValueError(f"a tag is 1-{MAX_TAG_SIZE} bytes of UTF-8, got {len(encoded)}")
    if "/" in tag or not tag.isprintable():
        raise ValueError(f"a tag is printable text without '/': {text!r}")
    # Lower-casing can, for rare characters, undo NFC or lower-case further
    # on a second pass; a tag must be a fixed point so its key is unique.
    if _normal_form(tag) != tag:
        raise ValueError(f"tag has no stable normal form: {text!r}")
    return tag


def _normal_form(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).strip().lower())


def tag_key(tag: str) -> bytes:
    """The DHT key of `tag` (normalised first; ValueError on a bad tag)."""
    return TAG_PREFIX + normalise_tag(tag).encode("utf-8")


def parse_tag_key(key: bytes) -> str:
    """The tag a key names; RecordInvalid unless it is exactly `tag_key(tag)`."""
    if not key.startswith(TAG_PREFIX):
        raise RecordInvalid("not a tag key")
    try:
        tag = key[len(TAG_PREFIX) :].decode("utf-8")
        normal = normalise_tag(tag)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise RecordInvalid("tag key has an invalid tag") from None
    if normal != tag:
        raise RecordInvalid("tag key is not normalised")
    return tag


def signing_payload(key: bytes, content_id: bytes, published_ms: int, expires_at_ms: int) -> bytes:
    """The bytes an owner signs: `SIGNING_DOMAIN`, the key with a 4-byte
    big-endian length, the 32-byte content ID, then published and expiry as
    8-byte big-endian integers.
    """
    if len(content_id) != CONTENT_ID_SIZE:
        raise ValueError(f"content_id must be {CONTENT_ID_SIZE} bytes, got {len(content_id)}")
    return (
        SIGNING_DOMAIN
        + struct.pack(">I", len(key))
        + key
        + content_id
        + _TIMES.pack(published_ms, expires_at_ms)
    )


def _check_lifetime(published_ms: int, expires_at_ms: int) -> str | None:
    # The reason an entry's times are refused, or None; shared by the signer
    # (ValueError) and the validator (RecordInvalid).
    if expires_at_ms <= published_ms:
        return "tag entry expires before it is published"
    if expires_at_ms - published_ms > MAX_ENTRY_LIFETIME_MS:
        return "tag entry lifetime is too long"
    return None


def make_tag_entry(
    identity: Identity, tag: str, content_id: bytes, published_ms: int, expires_at_ms: int
) -> TagEntry:
    """`identity`'s signed entry publishing `content_id` under `tag`.

    ValueError on a bad tag, content ID or lifetime (at most
    `MAX_ENTRY_LIFETIME_MS` after `published_ms`).
    """
    problem = _check_lifetime(published_ms, expires_at_ms)
    if problem is not None:
        raise ValueError(problem)
    public_key = identity.ed25519_public_key
    payload = signing_payload(tag_key(tag), content_id, published_ms, expires_at_ms)
    return TagEntry(
        content_id=content_id,
        owner_public_key=public_key,
        published_ms=published_ms,
        expires_at_ms=expires_at_ms,
        signature=identity.sign_ed25519(payload),
    )


def encode_tag_index(entries: Iterable[TagEntry]) -> bytes:
    """The canonical encoding of a set of entries (in any order).

    ValueError on two entries for the same (content ID, owner) pair or on
    more than `MAX_TAG_ENTRIES`: both are the caller's bug (`merge` never
    produces them).
    """
    ordered = sorted(entries, key=lambda entry: entry.pair)
    if len(ordered) > MAX_TAG_ENTRIES:
        raise ValueError(f"a tag index holds at most {MAX_TAG_ENTRIES} entries")
    for before, after in pairwise(ordered):
        if before.pair == after.pair:
            raise ValueError("a tag index holds one entry per (content ID, owner) pair")
    return _HEADER.pack(INDEX_VERSION, len(ordered)) + b"".join(e.encode() for e in ordered)


def decode_tag_index(data: bytes) -> tuple[TagEntry, ...]:
    """The entries of a canonically encoded index; RecordInvalid otherwise.

    Checks structure only: signatures and times are `TagIndexValidator`'s.
    """
    if len(data) < _HEADER.size:
        raise RecordInvalid("tag index truncated")
    version, count = _HEADER.unpack_from(data)
    if version != INDEX_VERSION:
        raise RecordInvalid("tag index has an unknown version")
    if count > MAX_TAG_ENTRIES:
        raise RecordInvalid("tag index has too many entries")
    size = _HEADER.size + count * ENTRY_SIZE
    if len(data) < size:
        raise RecordInvalid("tag index truncated")
    if len(data) > size:
        raise RecordInvalid("tag index has trailing bytes")
    entries = []
    offset = _HEADER.size
    for _ in range(count):
        content_id = data[offset : offset + CONTENT_ID_SIZE]
        offset += CONTENT_ID_SIZE
        owner = data[offset : offset + _ED25519_KEY_SIZE]
        offset += _ED25519_KEY_SIZE
        published_ms, expires_at_ms = _TIMES.unpack_from(data, offset)
        offset += _TIMES.size
        signature = data[offset : offset + _ED25519_SIGNATURE_SIZE]
        offset += _ED25519_SIGNATURE_SIZE
        entries.append(TagEntry(content_id, owner, published_ms, expires_at_ms, signature))
    for before, after in pairwise(entries):
        if before.pair == after.pair:
            raise RecordInvalid("tag index has two entries for one content and owner")
        if before.pair > after.pair:
            raise RecordInvalid("tag index entries are not sorted")
    return tuple(entries)


def _merge_rank(entry: TagEntry) -> tuple[int, bytes, int, bytes, bytes]:
    # Best first when sorted in reverse; every field of the entry takes part,
    # so two different entries never rank equal.
    return (
        entry.published_ms,
        entry.signature,
        entry.expires_at_ms,
        entry.content_id,
        entry.owner_public_key,
    )


def merge_tag_entries(entries: Iterable[TagEntry], now_ms: int) -> tuple[TagEntry, ...]:
    """The entries a merge keeps (see the module doc), in encoding order.

    Does not check signatures: give it only entries of validated values.
    """
    live = {entry for entry in entries if now_ms < entry.expires_at_ms}
    kept: list[TagEntry] = []
    pairs: set[tuple[bytes, bytes]] = set()
    per_owner: Counter[bytes] = Counter()
    for entry in sorted(live, key=_merge_rank, reverse=True):
        if len(kept) == MAX_TAG_ENTRIES:
            break
        if entry.pair in pairs or per_owner[entry.owner_public_key] >= MAX_ENTRIES_PER_OWNER:
            continue
        kept.append(entry)
        pairs.add(entry.pair)
        per_owner[entry.owner_public_key] += 1
    return tuple(sorted(kept, key=lambda entry: entry.pair))


def _owner_key(public_key: bytes) -> EccKey:
    try:
        key = eddsa.import_public_key(public_key)
    except ValueError:
        raise RecordInvalid("tag entry owner key is not a curve point") from None
    # Another encoding of the same point would be a second "owner" for the
    # same private key, dodging the per-owner cap.
    if key.export_key(format="raw") != public_key:
        raise RecordInvalid("tag entry owner key is not canonically encoded")
    # A small-order key verifies forged signatures: it belongs to everyone.
    if (key.pointQ * 8).is_point_at_infinity():
        raise RecordInvalid("tag entry owner key has small order")
    return key


class TagIndexValidator:
    """Validator (and merger) for the `/zhtp/tag/` namespace."""

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        """Accept a canonical index for `key` whose entries all verify and one is live.

        Cheapest checks first; signatures last.
        """
        if len(value) > MAX_TAG_INDEX_SIZE:
            raise RecordInvalid("tag index too large")
        parse_tag_key(key)
        entries = decode_tag_index(value)
        if not any(now_ms < entry.expires_at_ms for entry in entries):
            raise RecordInvalid("tag index has no live entries")
        owners = Counter(entry.owner_public_key for entry in entries)
        if owners and max(owners.values()) > MAX_ENTRIES_PER_OWNER:
            raise RecordInvalid("tag index has too many entries by one owner")
        for entry in entries:
            problem = _check_lifetime(entry.published_ms, entry.expires_at_ms)
            if problem is not None:
                raise RecordInvalid(problem)
            if entry.published_ms > now_ms + MAX_CLOCK_SKEW_MS:
                raise RecordInvalid("tag entry is published in the future")
        verifiers = {owner: eddsa.new(_owner_key(owner), "rfc8032") for owner in owners}
        for entry in entries:
            payload = signing_payload(
                key, entry.content_id, entry.published_ms, entry.expires_at_ms
            )
            try:
                verifiers[entry.owner_public_key].verify(payload, entry.signature)
            except ValueError:
                raise RecordInvalid("tag entry signature does not verify") from None

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Most entries; then the greatest encoded bytes (the same choice everywhere).

        `values` must all have passed `validate` for `key`. Prefer `merge`,
        which loses no one's entry.
        """
        if not values:
            raise ValueError("select needs at least one value")
        ranks = [(len(decode_tag_index(value)), value) for value in values]
        return max(range(len(values)), key=ranks.__getitem__)

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        """The latest expiry of any entry: until then the value stays valid."""
        return max((entry.expires_at_ms for entry in decode_tag_index(value)), default=0)

    def merge(self, key: bytes, values: Sequence[bytes], now_ms: int) -> bytes:
        """One index holding the best live entries of all `values` (module doc).

        `values` must all have passed `validate` for `key`; the result then
        validates at `now_ms`. RecordInvalid if no entry is live any more (the
        caller drops the record).
        """
        if not values:
            raise ValueError("merge needs at least one value")
        parse_tag_key(key)
        entries = [entry for value in values for entry in decode_tag_index(value)]
        merged = merge_tag_entries(entries, now_ms)
        if not merged:
            raise RecordInvalid("tag index has no live entries")
        return encode_tag_index(merged)
