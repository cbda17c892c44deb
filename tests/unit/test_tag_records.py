"""`/zhtp/tag/` search-index records: tags, entries, the canonical index, merge.

tests/vectors/tags/tag_index.json holds entries signed by identities made from
fixed seeds; its signatures are also checked here with the `cryptography`
package, independently of pycryptodome.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.identity import Identity, identity_id_of
from node.records.tags import (
    ENTRY_SIZE,
    INDEX_VERSION,
    MAX_CLOCK_SKEW_MS,
    MAX_ENTRIES_PER_OWNER,
    MAX_ENTRY_LIFETIME_MS,
    MAX_TAG_ENTRIES,
    MAX_TAG_INDEX_SIZE,
    MAX_TAG_SIZE,
    SIGNING_DOMAIN,
    TAG_PREFIX,
    TagEntry,
    TagIndexValidator,
    decode_tag_index,
    encode_tag_index,
    make_tag_entry,
    merge_tag_entries,
    normalise_tag,
    parse_tag_key,
    signing_payload,
    tag_key,
)
from node.records.validators import RecordInvalid

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "tags" / "tag_index.json"

CHECK = settings(derandomize=True, deadline=None, max_examples=60)
HOUR_MS = 60 * 60 * 1000
NOW = 1_700_000_000_000
TAG = "music"
KEY = tag_key(TAG)
VALIDATOR = TagIndexValidator()

# Generated once: hypothesis runs many examples.
ALICE = Identity.generate(with_mldsa=False)
BOB = Identity.generate(with_mldsa=False)


def _cid(n: int) -> bytes:
    return bytes([n]) * 32


def _entry(
    who: Identity,
    cid: int,
    *,
    published: int = NOW,
    lifetime: int = HOUR_MS,
    tag: str = TAG,
) -> TagEntry:
    return make_tag_entry(who, tag, _cid(cid), published, published + lifetime)


def _signed(
    who: Identity, content_id: bytes, published: int, expires: int, key: bytes = KEY
) -> TagEntry:
    """An entry signed directly, bypassing make_tag_entry's checks."""
    signature = who.sign_ed25519(signing_payload(key, content_id, published, expires))
    return TagEntry(content_id, _public_key(who), published, expires, signature)


def _public_key(who: Identity) -> bytes:
    return who.public_identity(name="x", sequence=0).ed25519_public_key


def _raw_index(entries: list[TagEntry], *, version: int = INDEX_VERSION) -> bytes:
    """Entries in the given order, unchecked: for building non-canonical input."""
    return struct.pack(">BH", version, len(entries)) + b"".join(e.encode() for e in entries)


def _refused(key: bytes, value: bytes, now_ms: int = NOW) -> str:
    with pytest.raises(RecordInvalid) as caught:
        VALIDATOR.validate(key, value, now_ms)
    reason = caught.value.reason
    # Short, fixed phrases: never the attacker's bytes.
    assert reason.isascii() and len(reason) < 60
    return reason


# -- pools for property tests ----------------------------------------------------------
# 18 owners x 10 content IDs (of 12), some pairs published twice, with mixed
# lifetimes: enough to exceed both the per-owner and the total cap.

POOL_OWNERS = [Identity.generate(with_mldsa=False) for _ in range(18)]


def _build_pool() -> list[TagEntry]:
    pool = []
    for number, owner in enumerate(POOL_OWNERS):
        for cid in range(10):
            content = (number + cid) % 12
            published = NOW - (number * 7 + cid * 13) % 50 * 1000
            lifetime = HOUR_MS * (1 + (number + cid) % 3)
            pool.append(_entry(owner, content, published=published, lifetime=lifetime))
            if (number + cid) % 4 == 0:
                pool.append(_entry(owner, content, published=published + 500, lifetime=HOUR_MS))
    return pool


POOL = _build_pool()
assert len(POOL) > MAX_TAG_ENTRIES + 20
# Before any pool entry expires: merging there only enforces the caps.
EARLY = NOW - 60_000
LATER = NOW + HOUR_MS + 30_000  # the one-hour entries have expired

pool_subsets = st.lists(st.sampled_from(POOL), max_size=60)


def _value_of(entries: list[TagEntry]) -> bytes:
    """A valid value holding (the best of) `entries`."""
    return encode_tag_index(merge_tag_entries(entries, EARLY))


# Large subsets too, so that merges run into the total cap.
large_subsets = st.tuples(st.permutations(POOL), st.integers(60, len(POOL))).map(
    lambda drawn: drawn[0][: drawn[1]]
)
values_strategy = st.one_of(pool_subsets.filter(bool), large_subsets).map(_value_of)


# -- vectors ---------------------------------------------------------------------------


def _vector() -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(VECTORS.read_text())
    return vector


def _vector_identity(seed: str) -> Identity:
    n = int(seed, 16)
    return Identity(
        ed25519_seed=bytes([n]) * 32,
        x25519_seed=bytes([n + 0x10]) * 32,
        xwing_seed=bytes([n + 0x20]) * 32,
        mldsa_seed=None,
    )


def test_vector_key_and_tag() -> None:
    vector = _vector()
    assert normalise_tag(vector["tag_input"]) == vector["tag"]
    assert tag_key(vector["tag_input"]) == bytes.fromhex(vector["key"])
    assert parse_tag_key(bytes.fromhex(vector["key"])) == vector["tag"]


def test_vector_entries_reproduce_and_verify_independently() -> None:
    vector = _vector()
    key = bytes.fromhex(vector["key"])
    made = []
    for item in vector["entries"]:
        who = _vector_identity(vector["identities"][item["owner"]])
        content_id = bytes.fromhex(item["content_id"])
        entry = make_tag_entry(
            who, vector["tag_input"], content_id, item["published_ms"], item["expires_at_ms"]
        )
        payload = signing_payload(key, content_id, item["published_ms"], item["expires_at_ms"])
        assert payload == bytes.fromhex(item["signing_payload"])
        assert payload.startswith(SIGNING_DOMAIN + struct.pack(">I", len(key)) + key)
        assert entry.owner_public_key.hex() == item["owner_public_key"]
        assert entry.owner_id == identity_id_of(entry.owner_public_key)
        assert entry.owner_id.hex() == item["owner_id"]
        assert entry.signature.hex() == item["signature"]
        Ed25519PublicKey.from_public_bytes(entry.owner_public_key).verify(entry.signature, payload)
        made.append(entry)
    index = bytes.fromhex(vector["index"])
    assert encode_tag_index(made) == index
    assert set(decode_tag_index(index)) == set(made)
    VALIDATOR.validate(key, index, vector["entries"][0]["published_ms"])


# -- tags and keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("music", "music"),
        ("  MuSiC ", "music"),
        ("Cafe\u0301", "caf\u00e9"),  # decomposed -> NFC
        ("CAF\u00c9", "caf\u00e9"),
        ("rock and roll", "rock and roll"),
        ("\u00e9" * 32, "\u00e9" * 32),  # 64 bytes of UTF-8
    ],
)
def test_normalise_tag(text: str, tag: str) -> None:
    assert normalise_tag(text) == tag
    assert tag_key(text) == TAG_PREFIX + tag.encode("utf-8")
    assert parse_tag_key(tag_key(text)) == tag


@pytest.mark.parametrize(
    "text", ["", "   ", "a/b", "tab\there", "new\nline", "x" * 65, "\u00e9" * 33, "\x00"]
)
def test_bad_tags_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_tag(text)
    with pytest.raises(ValueError):
        tag_key(text)


@CHECK
@given(st.text(max_size=MAX_TAG_SIZE))
def test_normalisation_is_idempotent(text: str) -> None:
    try:
        tag = normalise_tag(text)
    except ValueError:
        return
    assert normalise_tag(tag) == tag
    assert parse_tag_key(tag_key(tag)) == tag


@pytest.mark.parametrize(
    "key",
    [
        b"/zhtp/name/music",
        b"/zhtp/tag/",
        b"/zhtp/tag/Music",  # not normalised
        b"/zhtp/tag/ music",
        b"/zhtp/tag/a/b",
        b"/zhtp/tag/\xff\xfe",
        b"/zhtp/tag/" + b"x" * 65,
    ],
)
def test_bad_tag_keys_are_refused(key: bytes) -> None:
    with pytest.raises(RecordInvalid):
        parse_tag_key(key)
    _refused(key, encode_tag_index([_entry(ALICE, 1)]))


# -- entries and encoding --------------------------------------------------------------


def test_make_tag_entry_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        make_tag_entry(ALICE, "a/b", _cid(1), NOW, NOW + HOUR_MS)
    with pytest.raises(ValueError):
        make_tag_entry(ALICE, TAG, b"short", NOW, NOW + HOUR_MS)
    with pytest.raises(ValueError):
        make_tag_entry(ALICE, TAG, _cid(1), NOW, NOW)
    with pytest.raises(ValueError):
        make_tag_entry(ALICE, TAG, _cid(1), NOW, NOW + MAX_ENTRY_LIFETIME_MS + 1)
    make_tag_entry(ALICE, TAG, _cid(1), NOW, NOW + MAX_ENTRY_LIFETIME_MS)


def test_tag_entry_checks_field_sizes() -> None:
    good = _entry(ALICE, 1)
    with pytest.raises(ValueError):
        TagEntry(good.content_id[:31], good.owner_public_key, NOW, NOW + 1, good.signature)
    with pytest.raises(ValueError):
        TagEntry(good.content_id, good.owner_public_key + b"\x00", NOW, NOW + 1, good.signature)
    with pytest.raises(ValueError):
        TagEntry(good.content_id, good.owner_public_key, NOW, NOW + 1, good.signature[:63])
    with pytest.raises(ValueError):
        TagEntry(good.content_id, good.owner_public_key, -1, NOW, good.signature)
    with pytest.raises(ValueError):
        TagEntry(good.content_id, good.owner_public_key, NOW, 1 << 64, good.signature)


def test_index_layout() -> None:
    entries = [_entry(BOB, 2), _entry(ALICE, 2), _entry(ALICE, 1)]
    data = encode_tag_index(entries)
    assert data[:3] == bytes([INDEX_VERSION, 0, 3])
    assert len(data) == 3 + 3 * ENTRY_SIZE
    assert ENTRY_SIZE == 32 + 32 + 8 + 8 + 64
    assert MAX_TAG_INDEX_SIZE == 3 + MAX_TAG_ENTRIES * ENTRY_SIZE
    decoded = decode_tag_index(data)
    assert [e.pair for e in decoded] == sorted(e.pair for e in entries)
    first = decoded[0]
    assert data[3 : 3 + ENTRY_SIZE] == first.encode()
    assert data[3 + 64 : 3 + 80] == struct.pack(">QQ", first.published_ms, first.expires_at_ms)
    assert encode_tag_index([]) == bytes([INDEX_VERSION, 0, 0])
    assert decode_tag_index(encode_tag_index([])) == ()


@CHECK
@given(pool_subsets, st.randoms(use_true_random=False))
def test_round_trip_is_canonical(entries: list[TagEntry], random: Any) -> None:
    unique = list({e.pair: e for e in entries}.values())[:MAX_TAG_ENTRIES]
    data = encode_tag_index(unique)
    shuffled = list(unique)
    random.shuffle(shuffled)
    assert encode_tag_index(shuffled) == data
    decoded = decode_tag_index(data)
    assert set(decoded) == set(unique) and len(decoded) == len(unique)
    assert encode_tag_index(decoded) == data


def test_encode_refuses_duplicates_and_too_many() -> None:
    with pytest.raises(ValueError):
        encode_tag_index([_entry(ALICE, 1), _entry(ALICE, 1, published=NOW + 1)])
    unique = list({e.pair: e for e in POOL}.values())
    assert len(unique) > MAX_TAG_ENTRIES
    with pytest.raises(ValueError):
        encode_tag_index(unique)


def test_non_canonical_indexes_are_refused() -> None:
    a1, a2, b1 = _entry(ALICE, 1), _entry(ALICE, 2), _entry(BOB, 1)
    ordered = sorted([a1, a2, b1], key=lambda e: e.pair)
    good = _raw_index(ordered)
    assert good == encode_tag_index(ordered)
    decode_tag_index(good)
    cases = {
        "unsorted": _raw_index(ordered[::-1]),
        "duplicate": _raw_index([a1, _entry(ALICE, 1, published=NOW + 1)]),
        "same entry twice": _raw_index([a1, a1]),
        "trailing": good + b"\x00",
        "truncated": good[:-1],
        "short entry": good[: 3 + ENTRY_SIZE + 10],
        "bad version": _raw_index(ordered, version=2),
        "version 0": _raw_index(ordered, version=0),
        "empty": b"",
        "header only part": b"\x01\x00",
        "count too high": struct.pack(">BH", INDEX_VERSION, MAX_TAG_ENTRIES + 1),
        "count past data": struct.pack(">BH", INDEX_VERSION, 4) + good[3:],
    }
    for name, data in cases.items():
        with pytest.raises(RecordInvalid):
            decode_tag_index(data)
        reason = _refused(KEY, data)
        assert reason, name


# -- validate --------------------------------------------------------------------------


def test_valid_index_is_accepted() -> None:
    value = encode_tag_index([_entry(ALICE, 1), _entry(BOB, 1), _entry(ALICE, 2)])
    VALIDATOR.validate(KEY, value, NOW)
    VALIDATOR.validate(KEY, value, NOW + HOUR_MS - 1)
    assert VALIDATOR.expires_at_ms(KEY, value) == NOW + HOUR_MS


def test_signature_by_another_key_is_refused() -> None:
    alice = _entry(ALICE, 1)
    forged = TagEntry(
        alice.content_id, _public_key(BOB), alice.published_ms, alice.expires_at_ms, alice.signature
    )
    assert "signature" in _refused(KEY, encode_tag_index([forged]))


def test_entry_signed_for_another_tag_is_refused() -> None:
    other = _entry(ALICE, 1, tag="jazz")
    VALIDATOR.validate(tag_key("jazz"), encode_tag_index([other]), NOW)
    assert "signature" in _refused(KEY, encode_tag_index([other]))
    # ... even next to honest entries.
    assert "signature" in _refused(KEY, encode_tag_index([other, _entry(BOB, 2)]))


def test_tampered_fields_are_refused() -> None:
    good = _entry(ALICE, 1)
    data = encode_tag_index([good])
    # content id, published, expiry, signature: all covered by the signature.
    for offset in (3, 3 + 64 + 7, 3 + 72 + 7, 3 + 80, 3 + 143):
        tampered = data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]
        _refused(KEY, tampered)


def test_bad_owner_keys_are_refused() -> None:
    good = _entry(ALICE, 1)
    small_order = bytes([1]) + bytes(31)  # the neutral point
    not_a_point = bytes([2]) + bytes(31)
    for owner in (small_order, not_a_point):
        entry = TagEntry(good.content_id, owner, NOW, NOW + HOUR_MS, good.signature)
        assert "owner key" in _refused(KEY, encode_tag_index([entry]))


def test_expired_entries() -> None:
    short = _entry(ALICE, 1, lifetime=1000)
    long = _entry(BOB, 1, lifetime=HOUR_MS)
    alone = encode_tag_index([short])
    assert _refused(KEY, alone, NOW + 1000) == "tag index has no live entries"
    VALIDATOR.validate(KEY, alone, NOW + 999)
    # A value stays valid until its last entry expires; merge drops the rest.
    both = encode_tag_index([short, long])
    VALIDATOR.validate(KEY, both, NOW + 5000)
    assert VALIDATOR.expires_at_ms(KEY, both) == NOW + HOUR_MS
    _refused(KEY, both, NOW + HOUR_MS)
    pruned = VALIDATOR.merge(KEY, [both], NOW + 5000)
    assert decode_tag_index(pruned) == (long,)


def test_entry_times_are_checked() -> None:
    too_long = _signed(ALICE, _cid(1), NOW, NOW + MAX_ENTRY_LIFETIME_MS + 1)
    assert _refused(KEY, encode_tag_index([too_long])) == "tag entry lifetime is too long"
    backwards = _signed(ALICE, _cid(1), NOW, NOW)
    both = encode_tag_index([backwards, _entry(BOB, 1)])
    assert _refused(KEY, both) == "tag entry expires before it is published"
    future = _entry(ALICE, 1, published=NOW + MAX_CLOCK_SKEW_MS + 1)
    assert _refused(KEY, encode_tag_index([future])) == "tag entry is published in the future"
    VALIDATOR.validate(KEY, encode_tag_index([future]), NOW + 1)


def test_too_many_entries_by_one_owner_are_refused() -> None:
    entries = [_entry(ALICE, n) for n in range(MAX_ENTRIES_PER_OWNER + 1)]
    value = encode_tag_index(entries)
    assert _refused(KEY, value) == "tag index has too many entries by one owner"
    VALIDATOR.validate(KEY, encode_tag_index(entries[:-1]), NOW)


def test_oversized_value_is_refused() -> None:
    value = encode_tag_index([_entry(ALICE, 1)])
    assert _refused(KEY, value + bytes(MAX_TAG_INDEX_SIZE)) == "tag index too large"


# -- merge -----------------------------------------------------------------------------


def test_merge_is_a_union() -> None:
    alice = encode_tag_index([_entry(ALICE, 1), _entry(ALICE, 2)])
    bob = encode_tag_index([_entry(BOB, 1)])
    merged = VALIDATOR.merge(KEY, [alice, bob], NOW)
    assert set(decode_tag_index(merged)) == set(decode_tag_index(alice) + decode_tag_index(bob))
    VALIDATOR.validate(KEY, merged, NOW)
    assert VALIDATOR.merge(KEY, [bob, alice], NOW) == merged


def test_merge_keeps_the_newest_publication_of_a_pair() -> None:
    old = _entry(ALICE, 1, published=NOW, lifetime=5 * HOUR_MS)
    new = _entry(ALICE, 1, published=NOW + 10, lifetime=HOUR_MS)
    merged = VALIDATOR.merge(KEY, [encode_tag_index([old]), encode_tag_index([new])], NOW + 20)
    assert decode_tag_index(merged) == (new,)
    # Once the newer one lapses, the older one (still live) is what remains.
    later = VALIDATOR.merge(
        KEY, [encode_tag_index([old]), encode_tag_index([new])], NOW + 2 * HOUR_MS
    )
    assert decode_tag_index(later) == (old,)


def test_merge_breaks_publication_ties_by_signature() -> None:
    one = _entry(ALICE, 1, lifetime=HOUR_MS)
    two = _entry(ALICE, 1, lifetime=2 * HOUR_MS)
    best = max(one, two, key=lambda e: e.signature)
    for order in ([one, two], [two, one]):
        values = [encode_tag_index([e]) for e in order]
        assert decode_tag_index(VALIDATOR.merge(KEY, values, NOW)) == (best,)


def test_merge_caps_entries_per_owner() -> None:
    alice = [_entry(ALICE, n, published=NOW + n) for n in range(MAX_ENTRIES_PER_OWNER + 4)]
    values = [
        encode_tag_index(alice[:6]),
        encode_tag_index(alice[6:]),
        encode_tag_index([_entry(BOB, 1)]),
    ]
    merged = decode_tag_index(VALIDATOR.merge(KEY, values, NOW))
    kept_alice = [e for e in merged if e.owner_public_key == _public_key(ALICE)]
    assert set(kept_alice) == set(alice[-MAX_ENTRIES_PER_OWNER:])  # the newest
    assert len(merged) == MAX_ENTRIES_PER_OWNER + 1  # and Bob's entry


def test_merge_is_bounded_and_keeps_the_newest() -> None:
    values = [
        _value_of([e for e in POOL if e.owner_public_key == _public_key(owner)])
        for owner in POOL_OWNERS
    ]
    merged_bytes = VALIDATOR.merge(KEY, values, NOW)
    merged = decode_tag_index(merged_bytes)
    assert len(merged) == MAX_TAG_ENTRIES
    VALIDATOR.validate(KEY, merged_bytes, NOW)
    oldest_kept = min(e.published_ms for e in merged)
    kept_pairs = {e.pair for e in merged}
    owners = Counter(e.owner_public_key for e in merged)
    for value in values:
        for entry in decode_tag_index(value):
            dropped = entry.pair not in kept_pairs
            if dropped and owners[entry.owner_public_key] < MAX_ENTRIES_PER_OWNER:
                assert entry.published_ms <= oldest_kept


def test_merge_with_nothing_live_is_refused() -> None:
    value = encode_tag_index([_entry(ALICE, 1)])
    with pytest.raises(RecordInvalid):
        VALIDATOR.merge(KEY, [value], NOW + HOUR_MS)
    with pytest.raises(ValueError):
        VALIDATOR.merge(KEY, [], NOW)
    with pytest.raises(RecordInvalid):
        VALIDATOR.merge(b"/zhtp/name/x", [value], NOW)


def _entries(value: bytes) -> set[TagEntry]:
    return set(decode_tag_index(value))


@CHECK
@given(st.lists(values_strategy, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_merge_is_commutative_and_idempotent(values: list[bytes], random: Any) -> None:
    merged = VALIDATOR.merge(KEY, values, EARLY)
    shuffled = list(values)
    random.shuffle(shuffled)
    assert VALIDATOR.merge(KEY, shuffled, EARLY) == merged
    assert VALIDATOR.merge(KEY, values + values, EARLY) == merged
    assert VALIDATOR.merge(KEY, [merged], EARLY) == merged
    assert VALIDATOR.merge(KEY, [merged, *values], EARLY) == merged


@CHECK
@given(values_strategy, values_strategy, values_strategy)
def test_merge_is_associative(a: bytes, b: bytes, c: bytes) -> None:
    for now in (EARLY, NOW, LATER):
        try:
            flat = VALIDATOR.merge(KEY, [a, b, c], now)
        except RecordInvalid:
            continue  # nothing live at all
        groupings = []
        for first, second, third in itertools.permutations([a, b, c]):
            try:
                inner = VALIDATOR.merge(KEY, [first, second], now)
            except RecordInvalid:
                groupings.append(VALIDATOR.merge(KEY, [third], now))
                continue
            groupings.append(VALIDATOR.merge(KEY, [inner, third], now))
        assert all(grouping == flat for grouping in groupings)


@settings(derandomize=True, deadline=None, max_examples=20)
@given(st.lists(values_strategy, min_size=1, max_size=3), st.sampled_from([EARLY, NOW]))
def test_merge_result_validates_and_respects_bounds(values: list[bytes], now: int) -> None:
    merged = VALIDATOR.merge(KEY, values, now)
    VALIDATOR.validate(KEY, merged, now)
    entries = decode_tag_index(merged)
    assert len(entries) <= MAX_TAG_ENTRIES
    assert max(Counter(e.owner_public_key for e in entries).values()) <= MAX_ENTRIES_PER_OWNER
    inputs = set().union(*(_entries(v) for v in values))
    assert set(entries) <= inputs
    for entry in entries:
        assert now < entry.expires_at_ms
        rivals = [e for e in inputs if e.pair == entry.pair and now < e.expires_at_ms]
        assert all(
            (e.published_ms, e.signature) <= (entry.published_ms, entry.signature) for e in rivals
        )


# -- select ----------------------------------------------------------------------------


def test_select_prefers_more_entries_then_greater_bytes() -> None:
    one = encode_tag_index([_entry(ALICE, 1)])
    two = encode_tag_index([_entry(ALICE, 1), _entry(BOB, 1)])
    other_one = encode_tag_index([_entry(BOB, 2)])
    assert VALIDATOR.select(KEY, [one, two]) == 1
    assert VALIDATOR.select(KEY, [two, one]) == 0
    best = max(one, other_one)
    assert [one, other_one][VALIDATOR.select(KEY, [one, other_one])] == best
    assert [other_one, one][VALIDATOR.select(KEY, [other_one, one])] == best
    with pytest.raises(ValueError):
        VALIDATOR.select(KEY, [])


@CHECK
@given(st.lists(values_strategy, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_select_is_deterministic(values: list[bytes], random: Any) -> None:
    chosen = values[VALIDATOR.select(KEY, values)]
    shuffled = list(values)
    random.shuffle(shuffled)
    assert shuffled[VALIDATOR.select(KEY, shuffled)] == chosen
