"""RecordStore on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.records.store import SCHEMA_VERSION, ProviderEntry, RecordStore, StoredRecord

NOW = 1_700_000_000_000
HOUR = 3_600_000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "records.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[RecordStore]:
    with RecordStore(db_path) as s:
        yield s


def test_put_get(store: RecordStore) -> None:
    assert store.get(b"k") is None
    store.put(b"k", b"v", now_ms=NOW, expires_at_ms=NOW + HOUR)
    assert store.get(b"k") == StoredRecord(b"k", b"v", NOW, NOW + HOUR, NOW)
    store.put(b"n", b"w", now_ms=NOW, expires_at_ms=None)
    assert store.get(b"n") == StoredRecord(b"n", b"w", NOW, None, NOW)
    assert store.keys() == [b"k", b"n"]
    assert store.count() == 2


def test_overwrite(store: RecordStore) -> None:
    store.put(b"k", b"v1", now_ms=NOW, expires_at_ms=NOW + HOUR)
    store.put(b"k", b"v2", now_ms=NOW + 5, expires_at_ms=None)
    assert store.get(b"k") == StoredRecord(b"k", b"v2", NOW + 5, None, NOW + 5)
    assert store.count() == 1


def test_binary_keys_are_exact(store: RecordStore) -> None:
    # Bytes keys everywhere: no text coercion, NULs and high bytes intact.
    keys = [b"\x00", b"\x00\x00", b"\xff/x", b"a\x00b"]
    for i, key in enumerate(keys):
        store.put(key, bytes([i]), now_ms=NOW, expires_at_ms=None)
    assert store.keys() == sorted(keys)
    for i, key in enumerate(keys):
        record = store.get(key)
        assert record is not None and record.value == bytes([i])


def test_delete(store: RecordStore) -> None:
    store.put(b"k", b"v", now_ms=NOW, expires_at_ms=None)
    assert store.delete(b"k") is True
    assert store.delete(b"k") is False
    assert store.get(b"k") is None


def test_persists_across_close_and_reopen(db_path: Path) -> None:
    first = RecordStore(db_path)
    first.put(b"k", b"v", now_ms=NOW, expires_at_ms=NOW + HOUR)
    first.add_provider(b"k", b"peer", [b"/ip4/127.0.0.1/tcp/1"], expires_at_ms=NOW + HOUR)
    first.close()
    with RecordStore(db_path) as second:
        assert second.get(b"k") == StoredRecord(b"k", b"v", NOW, NOW + HOUR, NOW)
        assert second.providers(b"k", NOW) == [
            ProviderEntry(b"peer", (b"/ip4/127.0.0.1/tcp/1",), NOW + HOUR)
        ]


def test_put_is_committed_before_returning(store: RecordStore, db_path: Path) -> None:
    # A second, independent connection sees the write at once: it is not
    # sitting in an open transaction of the store's connection.
    store.put(b"k", b"v", now_ms=NOW, expires_at_ms=None)
    store.add_provider(b"k", b"p", [], expires_at_ms=NOW + HOUR)
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("SELECT value FROM records WHERE key = ?", (b"k",)).fetchall() == [
            (b"v",)
        ]
        assert other.execute("SELECT COUNT(*) FROM providers").fetchone() == (1,)
    finally:
        other.close()
    assert not store._conn.in_transaction


def test_pragmas(store: RecordStore, db_path: Path) -> None:
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert store._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    # WAL is recorded in the file itself, so any other connection sees it.
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        other.close()


def test_reopen_existing_db_keeps_schema(db_path: Path) -> None:
    RecordStore(db_path).close()
    with RecordStore(db_path) as again:  # must not try to CREATE TABLE twice
        assert again._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert again._conn.execute("PRAGMA synchronous").fetchone() == (2,)
        assert again.count() == 0


def test_refuses_newer_schema(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        RecordStore(db_path)


def test_rejects_out_of_range_times(store: RecordStore) -> None:
    with pytest.raises(ValueError):
        store.put(b"k", b"v", now_ms=NOW, expires_at_ms=2**63)
    with pytest.raises(ValueError):
        store.put(b"k", b"v", now_ms=-1, expires_at_ms=None)
    assert store.count() == 0


def test_drop_expired(store: RecordStore) -> None:
    store.put(b"gone", b"v", now_ms=NOW, expires_at_ms=NOW + 10)
    store.put(b"edge", b"v", now_ms=NOW, expires_at_ms=NOW + 20)
    store.put(b"stays", b"v", now_ms=NOW, expires_at_ms=NOW + 21)
    store.put(b"forever", b"v", now_ms=NOW, expires_at_ms=None)
    assert store.drop_expired(NOW + 9) == 0
    assert store.drop_expired(NOW + 20) == 2  # expiry is inclusive
    assert store.keys() == [b"forever", b"stays"]
    assert store.drop_expired(NOW + 10 * HOUR) == 1
    assert store.keys() == [b"forever"]


def test_republish_schedule(store: RecordStore) -> None:
    store.put(b"a", b"v", now_ms=NOW, expires_at_ms=None)
    store.put(b"b", b"v", now_ms=NOW + 10, expires_at_ms=None)
    store.put(b"dying", b"v", now_ms=NOW, expires_at_ms=NOW + HOUR)
    assert store.due_for_republish(NOW + HOUR - 1, HOUR) == []
    # At NOW + HOUR, "a" is due; "dying" has just expired and is not.
    assert [r.key for r in store.due_for_republish(NOW + HOUR, HOUR)] == [b"a"]
    assert [r.key for r in store.due_for_republish(NOW + HOUR + 10, HOUR)] == [b"a", b"b"]

    store.mark_republished(b"a", NOW + HOUR + 10)
    assert [r.key for r in store.due_for_republish(NOW + HOUR + 10, HOUR)] == [b"b"]
    record = store.get(b"a")
    assert record is not None
    assert (record.received_at_ms, record.republished_at_ms) == (NOW, NOW + HOUR + 10)

    # Receiving the record again counts as a republish (Kademlia optimisation).
    store.put(b"b", b"v", now_ms=NOW + HOUR + 10, expires_at_ms=None)
    assert store.due_for_republish(NOW + HOUR + 10, HOUR) == []
    store.mark_republished(b"missing", NOW)  # no-op, no error


def test_providers_upsert(store: RecordStore) -> None:
    store.add_provider(b"k", b"p1", [b"a1"], expires_at_ms=NOW + HOUR)
    store.add_provider(b"k", b"p1", [b"a2", b"a3"], expires_at_ms=NOW + 2 * HOUR)
    assert store.providers(b"k", NOW) == [ProviderEntry(b"p1", (b"a2", b"a3"), NOW + 2 * HOUR)]
    assert store.provider_count() == 1
    store.add_provider(b"k", b"p2", [], expires_at_ms=NOW + 3 * HOUR)
    store.add_provider(b"other", b"p1", [b""], expires_at_ms=NOW + HOUR)
    assert store.providers(b"k", NOW) == [
        ProviderEntry(b"p2", (), NOW + 3 * HOUR),
        ProviderEntry(b"p1", (b"a2", b"a3"), NOW + 2 * HOUR),
    ]
    assert store.providers(b"other", NOW) == [ProviderEntry(b"p1", (b"",), NOW + HOUR)]
    assert store.provider_count() == 3


def test_providers_limit_and_newest_first(store: RecordStore) -> None:
    for i in range(10):
        store.add_provider(b"k", bytes([i]), [], expires_at_ms=NOW + i)
    found = store.providers(b"k", 0, limit=3)
    assert [p.peer_id for p in found] == [b"\x09", b"\x08", b"\x07"]


def test_providers_cap_evicts_soonest_expiring(db_path: Path) -> None:
    with RecordStore(db_path, max_providers_per_key=3) as store:
        for peer, expiry in ((b"a", 30), (b"b", 10), (b"c", 20)):
            store.add_provider(b"k", peer, [], expires_at_ms=NOW + expiry)
        store.add_provider(b"k", b"d", [], expires_at_ms=NOW + 40)
        assert [p.peer_id for p in store.providers(b"k", 0)] == [b"d", b"a", b"c"]
        # A newcomer that would expire before every kept entry is the one evicted.
        store.add_provider(b"k", b"e", [], expires_at_ms=NOW + 1)
        assert [p.peer_id for p in store.providers(b"k", 0)] == [b"d", b"a", b"c"]
        # Refreshing an existing peer is not an addition.
        store.add_provider(b"k", b"c", [], expires_at_ms=NOW + 50)
        assert [p.peer_id for p in store.providers(b"k", 0)] == [b"c", b"d", b"a"]
        # Other keys are capped separately.
        store.add_provider(b"k2", b"x", [], expires_at_ms=NOW)
        assert store.provider_count() == 4


def test_providers_expiry(store: RecordStore) -> None:
    store.add_provider(b"k", b"old", [], expires_at_ms=NOW + 10)
    store.add_provider(b"k", b"new", [], expires_at_ms=NOW + 20)
    assert [p.peer_id for p in store.providers(b"k", NOW + 10)] == [b"new"]
    assert store.provider_count() == 2  # hidden, not yet dropped
    assert store.drop_expired_providers(NOW + 10) == 1
    assert store.provider_count() == 1
    assert store.drop_expired_providers(NOW + 20) == 1
    assert store.providers(b"k", NOW) == []


def test_usable_from_worker_threads(store: RecordStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                key = f"{n}/{i}".encode()
                store.put(key, b"v", now_ms=NOW, expires_at_ms=None)
                store.add_provider(key, b"p", [b"a"], expires_at_ms=NOW + 1)
                assert store.get(key) is not None
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 200
    assert store.provider_count() == 200


def test_records_stay_fully_synchronous_around_provider_writes(store: RecordStore) -> None:
    # Providers are written without an fsync; records must never be.
    store.add_provider(b"k", b"peer", (), expires_at_ms=10)
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError):
        store.add_provider(b"k", b"peer", (), expires_at_ms=-1)
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
