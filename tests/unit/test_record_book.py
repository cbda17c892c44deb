"""RecordBook: the replacement policy between the network and the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.identity import Identity
from node.records.book import PutOutcome, RecordBook
from node.records.names import NAME_PREFIX, NameRecord, NameValidator, make_name_record
from node.records.store import RecordStore, StoredRecord
from node.records.validators import (
    BLOB_PREFIX,
    BlobValidator,
    NamespacedValidator,
    RecordInvalid,
    blob_key,
)

NOW = 1_700_000_000_000
HOUR = 3_600_000


def _identity(tag: int) -> Identity:
    # Deterministic and cheap (no ML-DSA key).
    return Identity(
        ed25519_seed=bytes([tag]) * 32,
        x25519_seed=bytes([tag + 0x10]) * 32,
        xwing_seed=bytes([tag + 0x20]) * 32,
        mldsa_seed=None,
    )


OWNER = _identity(3)
OTHER = _identity(4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore(tmp_path / "records.sqlite3") as s:
        yield s


@pytest.fixture
def book(store: RecordStore) -> RecordBook:
    validator = NamespacedValidator({BLOB_PREFIX: BlobValidator(), NAME_PREFIX: NameValidator()})
    return RecordBook(store, validator)


def _snapshot(store: RecordStore) -> list[StoredRecord | None]:
    # store.keys() is a method returning a list, not a dict view (ruff SIM118).
    keys = store.keys()
    return [store.get(key) for key in keys]


def _name(seq: int, value: bytes = b"cid", expires: int = NOW + HOUR) -> tuple[bytes, bytes]:
    return make_name_record(OWNER, "site", value, seq, expires)


def test_new_record_is_stored(book: RecordBook, store: RecordStore) -> None:
    key, value = _name(1)
    assert book.accept(key, value, NOW) is PutOutcome.STORED
    assert store.get(key) == StoredRecord(key, value, NOW, NOW + HOUR, NOW)
    assert book.get_valid(key, NOW) == value


def test_stale_name_record_is_refused(book: RecordBook, store: RecordStore) -> None:
    key, newer = _name(5)
    _, older = _name(4, b"old-cid", expires=NOW + 10 * HOUR)
    book.accept(key, newer, NOW)
    before = _snapshot(store)
    assert book.accept(key, older, NOW + 1) is PutOutcome.KEPT_EXISTING
    assert _snapshot(store) == before
    assert book.get_valid(key, NOW + 1) == newer


def test_newer_name_record_replaces(book: RecordBook, store: RecordStore) -> None:
    key, older = _name(1)
    _, newer = _name(2, b"cid-2", expires=NOW + 2 * HOUR)
    book.accept(key, older, NOW)
    assert book.accept(key, newer, NOW + 5) is PutOutcome.STORED
    assert store.get(key) == StoredRecord(key, newer, NOW + 5, NOW + 2 * HOUR, NOW + 5)


@pytest.mark.parametrize("tamper", ["unsigned", "forged", "garbage", "expired", "wrong_hash"])
def test_invalid_record_changes_nothing(book: RecordBook, store: RecordStore, tamper: str) -> None:
    key, value = _name(1)
    book.accept(key, value, NOW)
    blob = b"blob"
    book.accept(blob_key(blob), blob, NOW)
    before = _snapshot(store)

    record = NameRecord.decode(value)
    if tamper == "unsigned":
        # A higher sequence without a signature must not win.
        bad_key, bad = key, NameRecord(b"evil", 99, NOW + HOUR, record.public_key, b"").encode()
    elif tamper == "forged":
        forged_key, forged = make_name_record(OTHER, "site", b"evil", 99, NOW + HOUR)
        bad_key, bad = key, forged
        assert forged_key != key
    elif tamper == "garbage":
        bad_key, bad = key, b"\xff\x00garbage"
    elif tamper == "expired":
        bad_key, bad = _name(99, b"evil", expires=NOW)
    else:
        bad_key, bad = blob_key(blob), b"not the blob"

    with pytest.raises(RecordInvalid):
        book.accept(bad_key, bad, NOW)
    assert _snapshot(store) == before


def test_invalid_record_for_new_key_stores_nothing(book: RecordBook, store: RecordStore) -> None:
    with pytest.raises(RecordInvalid):
        book.accept(b"/zhtp/unknown/x", b"v", NOW)
    with pytest.raises(RecordInvalid):
        book.accept(blob_key(b"a"), b"b", NOW)
    assert store.count() == 0


def test_refresh_same_blob(book: RecordBook, store: RecordStore) -> None:
    value = b"content"
    key = blob_key(value)
    assert book.accept(key, value, NOW) is PutOutcome.STORED
    assert book.accept(key, value, NOW + HOUR) is PutOutcome.REFRESHED
    # Same value, fresh receive time: it counts as republished, and it never expires.
    assert store.get(key) == StoredRecord(key, value, NOW + HOUR, None, NOW + HOUR)
    assert store.count() == 1


def test_refresh_same_name_record(book: RecordBook) -> None:
    key, value = _name(3)
    book.accept(key, value, NOW)
    assert book.accept(key, value, NOW + 1) is PutOutcome.REFRESHED


def test_expired_local_copy_is_replaced_even_by_lower_sequence(
    book: RecordBook, store: RecordStore
) -> None:
    # Our copy expired: it no longer counts, so any valid record is better.
    key, high = _name(9, expires=NOW + 10)
    _, low = _name(1, expires=NOW + HOUR)
    book.accept(key, high, NOW)
    assert book.accept(key, low, NOW + 10) is PutOutcome.STORED
    stored = store.get(key)
    assert stored is not None and stored.value == low


def test_get_valid_drops_expired(book: RecordBook, store: RecordStore) -> None:
    key, value = _name(1, expires=NOW + 10)
    book.accept(key, value, NOW)
    assert book.get_valid(key, NOW + 9) == value
    assert store.get(key) is not None
    assert book.get_valid(key, NOW + 10) is None
    assert store.get(key) is None
    assert book.get_valid(key, NOW + 10) is None


def test_get_valid_drops_corrupt_copy(book: RecordBook, store: RecordStore) -> None:
    key = blob_key(b"good")
    store.put(key, b"bit-rotted", now_ms=NOW, expires_at_ms=None)
    assert book.get_valid(key, NOW) is None
    assert store.count() == 0


def test_get_missing(book: RecordBook) -> None:
    assert book.get_valid(blob_key(b"nothing"), NOW) is None


def test_huge_expiry_is_stored(book: RecordBook, store: RecordStore) -> None:
    # uint64 on the wire, int64 in SQLite: the far future stays the far future.
    key, value = _name(1, expires=2**64 - 1)
    assert book.accept(key, value, NOW) is PutOutcome.STORED
    stored = store.get(key)
    assert stored is not None and stored.expires_at_ms == 2**63 - 1


def test_best_picks_among_valid(book: RecordBook, store: RecordStore) -> None:
    key, v1 = _name(1)
    _, v3 = _name(3)
    _, expired = _name(7, expires=NOW)
    forged = make_name_record(OTHER, "site", b"evil", 99, NOW + HOUR)[1]
    assert book.best(key, [v1, forged, v3, expired, b"junk"], NOW) == 2
    assert book.best(key, [forged, b"junk", expired], NOW) is None
    assert book.best(key, [], NOW) is None
    assert store.count() == 0  # best() never stores
