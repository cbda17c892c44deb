"""ShardStore on a real directory and SQLite file."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.records.store import SCHEMA_VERSION as RECORDS_SCHEMA_VERSION
from node.records.store import RecordStore
from node.storage import atomic
from node.storage.shards import (
    SCHEMA_VERSION,
    ReconcileReport,
    Reservation,
    ShardCorrupt,
    ShardMismatch,
    ShardNotFound,
    ShardStats,
    ShardStore,
    StorageFull,
    StoreLocked,
)

MAX = 1 << 20


def make_shard(size: int = 1000, seed: int = 0) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return blake3.blake3(data).digest(), data


def put(store: ShardStore, data: bytes) -> bytes:
    address = blake3.blake3(data).digest()
    assert store.commit(store.reserve(address, len(data)), data) is True
    return address


def shard_file(root: Path, address: bytes) -> Path:
    return root / address.hex()[:2] / address.hex()


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def rows(db_path: Path) -> list[tuple[bytes, int, str]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT address, size, state FROM shard_files ORDER BY address"
        ).fetchall()
    finally:
        conn.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "shards"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.sqlite3"


@pytest.fixture
def store(root: Path, db_path: Path) -> Iterator[ShardStore]:
    with ShardStore(root, db_path, max_bytes=MAX) as s:
        yield s


# -- opening -------------------------------------------------------------------


def test_creates_layout_and_tables(store: ShardStore, root: Path, db_path: Path) -> None:
    assert (root / "tmp").is_dir()
    assert (root / "quarantine").is_dir()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute(
            "SELECT version FROM schema_versions WHERE component = 'shards'"
        ).fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_shares_the_node_database_with_the_record_store(root: Path, db_path: Path) -> None:
    with RecordStore(db_path) as records, ShardStore(root, db_path, max_bytes=MAX) as store:
        records.put(b"k", b"v", now_ms=1, expires_at_ms=None)
        address = put(store, b"shard")
        assert records.get(b"k") is not None
        assert store.has(address)
        # The records store owns user_version; the shard store leaves it alone.
        assert records._conn.execute("PRAGMA user_version").fetchone() == (RECORDS_SCHEMA_VERSION,)
    with ShardStore(root, db_path, max_bytes=MAX) as again, RecordStore(db_path) as records:
        assert again.has(address)
        assert records.get(b"k") is not None


def test_refuses_newer_schema(root: Path, db_path: Path) -> None:
    ShardStore(root, db_path, max_bytes=MAX).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_versions SET version = ? WHERE component = 'shards'", (99,))
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        ShardStore(root, db_path, max_bytes=MAX)
    # The refusal released the directory lock.
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_versions SET version = ? WHERE component = 'shards'", (1,))
    conn.commit()
    conn.close()
    ShardStore(root, db_path, max_bytes=MAX).close()


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_rejects_non_positive_max_bytes(root: Path, db_path: Path, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ShardStore(root, db_path, max_bytes=max_bytes)
    assert not root.exists()


@pytest.mark.parametrize("max_bytes", [True, 1.5, "100"])
def test_rejects_non_int_max_bytes(root: Path, db_path: Path, max_bytes: Any) -> None:
    with pytest.raises(TypeError, match="max_bytes"):
        ShardStore(root, db_path, max_bytes=max_bytes)
    assert not root.exists()


def test_refuses_root_that_is_a_file(root: Path, db_path: Path) -> None:
    root.write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        ShardStore(root, db_path, max_bytes=MAX)


def test_second_store_on_same_root_is_refused(store: ShardStore, root: Path, db_path: Path) -> None:
    with pytest.raises(StoreLocked, match="in use"):
        ShardStore(root, db_path, max_bytes=MAX)
    store.close()
    ShardStore(root, db_path, max_bytes=MAX).close()


def test_reopen_keeps_shards_and_counters(root: Path, db_path: Path) -> None:
    with ShardStore(root, db_path, max_bytes=MAX) as first:
        a = put(first, b"a" * 100)
        b = put(first, b"b" * 200)
    with ShardStore(root, db_path, max_bytes=MAX) as second:
        assert second.addresses() == sorted([a, b])
        assert second.used_bytes() == 300
        assert second.read(b) == b"b" * 200


def test_closed_store_refuses_calls(store: ShardStore) -> None:
    address, _ = make_shard()
    store.close()
    store.close()  # harmless twice
    with pytest.raises(ValueError, match="closed"):
        store.has(address)
    with pytest.raises(ValueError, match="closed"):
        store.reserve(address, 1000)


# -- commit --------------------------------------------------------------------


def test_commit_then_read(store: ShardStore) -> None:
    address, data = make_shard(5000)
    reservation = store.reserve(address, len(data))
    assert store.commit(reservation, data) is True
    assert store.read(address) == data
    assert store.has(address)
    assert store.size_of(address) == 5000
    assert store.stats() == ShardStats(
        count=1, bytes=5000, missing=0, corrupt=0, reserved=0, quarantined=0
    )


def test_commit_writes_named_private_file(store: ShardStore, root: Path, db_path: Path) -> None:
    address, data = make_shard()
    put(store, data)
    path = shard_file(root, address)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(root / "tmp") == []
    assert rows(db_path) == [(address, len(data), "ok")]


def test_commit_is_idempotent(store: ShardStore, db_path: Path) -> None:
    address, data = make_shard()
    put(store, data)
    again = store.reserve(address, len(data))
    assert store.commit(again, data) is False
    assert store.stats().count == 1
    assert store.used_bytes() == len(data)
    assert store.stats().reserved == 0
    assert len(rows(db_path)) == 1


def test_commit_rejects_bad_hash_and_writes_nothing(
    store: ShardStore, root: Path, db_path: Path
) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))
    tampered = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(ShardMismatch, match="does not hash"):
        store.commit(reservation, tampered)
    assert files_under(root) == [root / ".lock"]
    assert rows(db_path) == []
    # The reservation is still the caller's to use or release.
    assert store.stats().reserved == len(data)
    assert store.commit(reservation, data) is True


def test_commit_rejects_wrong_size(store: ShardStore, root: Path, db_path: Path) -> None:
    address, data = make_shard(1000)
    reservation = store.reserve(address, 999)
    with pytest.raises(ShardMismatch, match="1000 bytes, reservation is for 999"):
        store.commit(reservation, data)
    assert files_under(root) == [root / ".lock"]
    assert rows(db_path) == []


def test_commit_rejects_mutable_buffer(store: ShardStore) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))
    with pytest.raises(TypeError, match="must be bytes"):
        store.commit(reservation, bytearray(data))  # type: ignore[arg-type]
    assert not store.has(address)


def test_commit_rejects_released_reservation(store: ShardStore) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))
    store.release(reservation)
    with pytest.raises(ValueError, match="not active"):
        store.commit(reservation, data)
    assert not store.has(address)


def test_commit_rejects_reservation_used_twice(store: ShardStore) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))
    store.commit(reservation, data)
    with pytest.raises(ValueError, match="not active"):
        store.commit(reservation, data)


def test_commit_rejects_reservation_of_another_store(store: ShardStore, tmp_path: Path) -> None:
    address, data = make_shard()
    with ShardStore(tmp_path / "other", tmp_path / "other.sqlite3", max_bytes=MAX) as other:
        foreign = other.reserve(address, len(data))
        store.reserve(address, len(data))  # same id in this store, different object
        with pytest.raises(ValueError, match="not active"):
            store.commit(foreign, data)
    assert not store.has(address)


def test_commit_rejects_forged_reservation(store: ShardStore) -> None:
    address, data = make_shard()
    with pytest.raises(ValueError, match="not active"):
        store.commit(Reservation(1, address, len(data)), data)
    with pytest.raises(TypeError, match="Reservation"):
        store.commit((1, address, len(data)), data)  # type: ignore[arg-type]


def test_row_is_inserted_only_after_the_rename_is_durable(
    store: ShardStore, root: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, data = make_shard()
    seen: list[tuple[bool, int]] = []
    real = atomic.fsync_directory

    def fsync_directory(path: Path) -> None:
        if path == shard_file(root, address).parent:
            seen.append((shard_file(root, address).exists(), len(rows(db_path))))
        real(path)

    monkeypatch.setattr("node.storage.shards.fsync_directory", fsync_directory)
    put(store, data)
    assert seen == [(True, 0)]  # file in place, row not yet there
    assert rows(db_path) == [(address, len(data), "ok")]


def test_commit_syncs_file_before_rename_and_directory_after(
    store: ShardStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, data = make_shard()
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append("fsync dir" if stat.S_ISDIR(info.st_mode) else f"fsync {info.st_size}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(f"replace to {Path(dst).relative_to(root)}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    put(store, data)
    fan_out = address.hex()[:2]
    # The fan-out directory is new, so the root is synced when it is made.
    assert events == [
        f"fsync {len(data)}",
        "fsync dir",
        f"replace to {fan_out}/{address.hex()}",
        "fsync dir",
    ]


def test_directory_fsync_failure_leaves_no_file_and_no_row(
    store: ShardStore, root: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))

    def failing(path: Path) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr("node.storage.shards.fsync_directory", failing)
    with pytest.raises(OSError, match="I/O error"):
        store.commit(reservation, data)
    assert not shard_file(root, address).exists()
    assert os.listdir(root / "tmp") == []
    assert rows(db_path) == []
    assert store.used_bytes() == 0
    store.release(reservation)
    assert store.free_bytes() == MAX


def test_temp_write_failure_leaves_nothing(
    store: ShardStore, root: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, data = make_shard()
    reservation = store.reserve(address, len(data))

    def failing(fd: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="no space left"):
        store.commit(reservation, data)
    monkeypatch.undo()
    assert os.listdir(root / "tmp") == []
    assert rows(db_path) == []
    assert store.commit(reservation, data) is True


def test_recommit_after_quarantine_restores_the_shard(store: ShardStore, root: Path) -> None:
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    with pytest.raises(ShardCorrupt):
        store.read(address)
    assert put(store, data) == address
    assert store.read(address) == data
    stats = store.stats()
    assert (stats.count, stats.corrupt, stats.quarantined) == (1, 0, len(data))


# -- reserve and release -----------------------------------------------------------


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_reserve_rejects_bad_address_length(store: ShardStore, length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.reserve(b"\x01" * length, 10)
    assert store.stats().reserved == 0


def test_reserve_rejects_text_address(store: ShardStore) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        store.reserve("ab" * 32, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1])
def test_reserve_rejects_non_positive_size(store: ShardStore, size: int) -> None:
    address, _ = make_shard()
    with pytest.raises(ValueError, match="positive"):
        store.reserve(address, size)
    assert store.stats().reserved == 0


@pytest.mark.parametrize("size", [True, 1.0, "10"])
def test_reserve_rejects_non_int_size(store: ShardStore, size: Any) -> None:
    address, _ = make_shard()
    with pytest.raises(TypeError, match="size"):
        store.reserve(address, size)
    assert store.stats().reserved == 0


def test_reserve_up_to_exactly_full(store: ShardStore) -> None:
    address, _ = make_shard()
    reservation = store.reserve(address, MAX)
    assert store.free_bytes() == 0
    with pytest.raises(StorageFull, match="0 of"):
        store.reserve(make_shard(seed=1)[0], 1)
    store.release(reservation)
    assert store.free_bytes() == MAX


def test_reserve_beyond_maximum_is_full(store: ShardStore) -> None:
    with pytest.raises(StorageFull):
        store.reserve(make_shard()[0], MAX + 1)
    assert store.stats().reserved == 0


def test_reservations_count_against_capacity(store: ShardStore) -> None:
    store.reserve(make_shard(seed=1)[0], MAX // 2)
    store.reserve(make_shard(seed=2)[0], MAX // 2)
    with pytest.raises(StorageFull):
        store.reserve(make_shard(seed=3)[0], 1)


def test_stored_shards_count_against_capacity(root: Path, db_path: Path) -> None:
    with ShardStore(root, db_path, max_bytes=2500) as store:
        put(store, make_shard(1000, seed=1)[1])
        put(store, make_shard(1000, seed=2)[1])
        with pytest.raises(StorageFull):
            store.reserve(make_shard(seed=3)[0], 501)
        store.release(store.reserve(make_shard(seed=3)[0], 500))


def test_release_is_idempotent(store: ShardStore) -> None:
    reservation = store.reserve(make_shard()[0], 100)
    other = store.reserve(make_shard(seed=1)[0], 50)
    store.release(reservation)
    store.release(reservation)
    assert store.stats().reserved == 50
    store.release(other)
    assert store.stats().reserved == 0


def test_storing_a_present_shard_again_succeeds_when_full(root: Path, db_path: Path) -> None:
    # A peer retrying after a lost acknowledgement must not hear "full".
    address, data = make_shard(1000)
    with ShardStore(root, db_path, max_bytes=1000) as store:
        put(store, data)
        again = store.reserve(address, len(data))
        assert store.commit(again, data) is False
        assert store.used_bytes() == 1000


def test_shard_deleted_after_free_reservation_must_fit_again(root: Path, db_path: Path) -> None:
    a, data_a = make_shard(600, seed=1)
    b, _ = make_shard(600, seed=2)
    with ShardStore(root, db_path, max_bytes=1000) as store:
        put(store, data_a)
        retry = store.reserve(a, 600)  # holds nothing: already stored
        assert store.delete(a)
        store.reserve(b, 600)
        with pytest.raises(StorageFull):
            store.commit(retry, data_a)
        assert not store.has(a)
        assert store.used_bytes() + store.stats().reserved <= 1000


def test_concurrent_reservations_from_threads_never_overcommit(root: Path, db_path: Path) -> None:
    size, fits = 1000, 10
    threads_count = 32
    shards_ = [make_shard(size, seed=i) for i in range(threads_count)]
    granted: list[Reservation] = []
    refused: list[int] = []
    barrier = threading.Barrier(threads_count)
    with ShardStore(root, db_path, max_bytes=size * fits) as store:

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                reservation = store.reserve(shards_[i][0], size)
            except StorageFull:
                refused.append(i)
                return
            granted.append(reservation)
            assert store.commit(reservation, shards_[i][1]) is True

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(granted) == fits
        assert len(refused) == threads_count - fits
        assert store.used_bytes() == size * fits
        on_disk = sum(p.stat().st_size for p in files_under(root) if p.name != ".lock")
        assert on_disk == size * fits


def test_filling_the_store_never_exceeds_the_maximum(root: Path, db_path: Path) -> None:
    rng = random.Random(3)
    limit = 50_000
    with ShardStore(root, db_path, max_bytes=limit) as store:
        for seed in range(200):
            address, data = make_shard(rng.randint(1, 4000), seed=seed)
            try:
                reservation = store.reserve(address, len(data))
            except StorageFull:
                continue
            store.commit(reservation, data)
        assert store.free_bytes() < 4000
        on_disk = sum(p.stat().st_size for p in files_under(root) if p.name != ".lock")
        assert on_disk == store.used_bytes() <= limit


# -- read --------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_read_ranges(store: ShardStore) -> None:
    address, data = make_shard(1000)
    put(store, data)
    assert store.read(address, 10) == data[10:]
    assert store.read(address, 10, 20) == data[10:30]
    assert store.read(address, 0, 1000) == data
    assert store.read(address, 1000) == b""
    assert store.read(address, 500, 0) == b""


def test_read_absent_shard(store: ShardStore) -> None:
    with pytest.raises(ShardNotFound, match="not stored"):
        store.read(make_shard()[0])


def test_read_rejects_bad_address(store: ShardStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.read(b"short")


@pytest.mark.parametrize(
    ("offset", "length", "message"),
    [
        (-1, None, "offset must not be negative"),
        (0, -1, "length must not be negative"),
        (1001, None, "outside"),
        (1001, 0, "outside"),
        (0, 1001, "outside"),
        (999, 2, "outside"),
        (2**64, None, "outside"),
    ],
)
def test_read_rejects_bad_range(
    store: ShardStore, offset: int, length: int | None, message: str
) -> None:
    address, data = make_shard(1000)
    put(store, data)
    with pytest.raises(ValueError, match=message):
        store.read(address, offset, length)
    assert store.has(address)


@pytest.mark.parametrize(("offset", "length"), [(1.0, None), (0, 2.5), (True, None), ("0", 1)])
def test_read_rejects_non_int_range(store: ShardStore, offset: Any, length: Any) -> None:
    address, data = make_shard(1000)
    put(store, data)
    with pytest.raises(TypeError, match="must be an int"):
        store.read(address, offset, length)


def test_corrupted_file_is_detected_on_read_and_quarantined(
    store: ShardStore, root: Path, db_path: Path
) -> None:
    address, data = make_shard(1000)
    put(store, data)
    path = shard_file(root, address)
    corrupt(path)
    damaged = path.read_bytes()
    with pytest.raises(ShardCorrupt, match="quarantined"):
        store.read(address, 0, 10)
    assert not path.exists()
    assert (root / "quarantine" / address.hex()).read_bytes() == damaged
    assert rows(db_path) == [(address, 1000, "corrupt")]
    assert not store.has(address)
    assert store.damaged_addresses() == [address]
    assert store.stats() == ShardStats(
        count=0, bytes=0, missing=0, corrupt=1, reserved=0, quarantined=1000
    )
    # The quarantined file still takes disk space.
    assert store.used_bytes() == 1000
    with pytest.raises(ShardNotFound):
        store.read(address)


def test_truncated_file_is_detected_on_read(store: ShardStore, root: Path) -> None:
    address, data = make_shard(1000)
    put(store, data)
    shard_file(root, address).write_bytes(data[:999])
    with pytest.raises(ShardCorrupt):
        store.read(address)
    assert store.stats().corrupt == 1


def test_padded_file_is_detected_on_read(store: ShardStore, root: Path) -> None:
    address, data = make_shard(1000)
    put(store, data)
    shard_file(root, address).write_bytes(data + b"\x00")
    with pytest.raises(ShardCorrupt):
        store.read(address)
    assert store.stats().corrupt == 1


def test_file_removed_behind_our_back_is_marked_missing_on_read(
    store: ShardStore, root: Path, db_path: Path
) -> None:
    address, data = make_shard(1000)
    put(store, data)
    shard_file(root, address).unlink()
    with pytest.raises(ShardNotFound):
        store.read(address)
    assert rows(db_path) == [(address, 1000, "missing")]
    assert store.used_bytes() == 0


@pytest.fixture(scope="module")
def ranged_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShardStore, bytes]]:
    tmp = tmp_path_factory.mktemp("ranges")
    with ShardStore(tmp / "shards", tmp / "db", max_bytes=MAX) as store:
        _, data = make_shard(4096, seed=9)
        put(store, data)
        yield store, data


@given(offset=st.integers(0, 4096), length=st.none() | st.integers(0, 4096))
def test_read_any_valid_range_is_the_slice(
    ranged_store: tuple[ShardStore, bytes], offset: int, length: int | None
) -> None:
    store, data = ranged_store
    address = blake3.blake3(data).digest()
    end = len(data) if length is None else offset + length
    if end > len(data):
        with pytest.raises(ValueError, match="outside"):
            store.read(address, offset, length)
    else:
        assert store.read(address, offset, length) == data[offset:end]


# -- has, size_of, delete, listing ---------------------------------------------------


def test_has_many_keeps_order_and_duplicates(store: ShardStore) -> None:
    a = put(store, b"a")
    b = put(store, b"b")
    unknown = make_shard()[0]
    assert store.has_many([b, unknown, a, b]) == [True, False, True, True]
    assert store.has_many([]) == []


def test_has_many_beyond_one_query_chunk(store: ShardStore) -> None:
    stored = [put(store, bytes([i % 256, i // 256])) for i in range(600)]
    unknown = [make_shard(seed=i)[0] for i in range(600)]
    assert store.has_many(stored + unknown) == [True] * 600 + [False] * 600


def test_has_many_rejects_a_bad_address(store: ShardStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.has_many([make_shard()[0], b"short"])


def test_has_and_size_of_absent(store: ShardStore) -> None:
    address = make_shard()[0]
    assert store.has(address) is False
    assert store.size_of(address) is None


def test_has_rejects_bad_address(store: ShardStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.has(b"")


def test_delete(store: ShardStore, root: Path, db_path: Path) -> None:
    address, data = make_shard()
    put(store, data)
    assert store.delete(address) is True
    assert not shard_file(root, address).exists()
    assert rows(db_path) == []
    assert store.used_bytes() == 0
    assert store.delete(address) is False


def test_delete_rejects_bad_address(store: ShardStore) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        store.delete(b"x" * 31)


def test_delete_of_a_corrupt_shard_keeps_the_quarantined_copy(
    store: ShardStore, root: Path
) -> None:
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    with pytest.raises(ShardCorrupt):
        store.read(address)
    assert store.delete(address) is True
    assert store.stats().corrupt == 0
    assert (root / "quarantine" / address.hex()).exists()


def test_addresses_lists_intact_shards_in_order(store: ShardStore, root: Path) -> None:
    stored = sorted(put(store, bytes([i])) for i in range(5))
    shard_file(root, stored[0]).unlink()
    store.reconcile()
    assert store.addresses() == stored[1:]
    assert store.damaged_addresses() == stored[:1]


# -- reconcile ------------------------------------------------------------------------


def test_reconcile_on_a_clean_store_changes_nothing(store: ShardStore) -> None:
    put(store, b"one")
    assert store.reconcile(verify=True) == ReconcileReport(
        checked=1,
        temp_removed=0,
        orphans_removed=0,
        missing=0,
        corrupt=0,
        revived=0,
        unexpected=0,
    )
    assert store.stats().count == 1


def test_reconcile_removes_temp_files(store: ShardStore, root: Path) -> None:
    (root / "tmp" / ".abc.tmp").write_bytes(b"half a shard")
    (root / "tmp" / "other").write_bytes(b"")
    report = store.reconcile()
    assert report.temp_removed == 2
    assert os.listdir(root / "tmp") == []


def test_reconcile_removes_orphans(store: ShardStore, root: Path) -> None:
    kept = put(store, b"kept")
    address, data = make_shard()
    orphan = shard_file(root, address)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(data)  # crashed after the rename, before the insert
    report = store.reconcile()
    assert report.orphans_removed == 1
    assert not orphan.exists()
    assert shard_file(root, kept).exists()
    assert store.used_bytes() == 4


def test_reconcile_leaves_unexpected_files_alone(store: ShardStore, root: Path) -> None:
    address = make_shard()[0]
    wrong_dir = root / "00" / address.hex()  # right name, wrong fan-out directory
    wrong_dir.parent.mkdir()
    wrong_dir.write_bytes(b"x")
    (root / "00" / "notes.txt").write_bytes(b"operator's")
    report = store.reconcile()
    assert report.unexpected == 2
    assert report.orphans_removed == 0
    assert wrong_dir.exists()
    assert (root / "00" / "notes.txt").exists()


def test_reconcile_marks_missing_file(store: ShardStore, root: Path, db_path: Path) -> None:
    address, data = make_shard()
    put(store, data)
    shard_file(root, address).unlink()
    report = store.reconcile()
    assert (report.checked, report.missing) == (1, 1)
    assert rows(db_path) == [(address, len(data), "missing")]
    assert not store.has(address)
    assert store.used_bytes() == 0
    with pytest.raises(ShardNotFound):
        store.read(address)


def test_reconcile_marks_wrong_size_missing_and_quarantines_it(
    store: ShardStore, root: Path, db_path: Path
) -> None:
    address, data = make_shard(1000)
    put(store, data)
    shard_file(root, address).write_bytes(data[:10])
    report = store.reconcile()
    assert report.missing == 1
    assert rows(db_path) == [(address, 1000, "missing")]
    assert (root / "quarantine" / address.hex()).read_bytes() == data[:10]
    assert store.stats().quarantined == 10


def test_reconcile_without_verify_trusts_sizes(store: ShardStore, root: Path) -> None:
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    assert store.reconcile().corrupt == 0
    assert store.has(address)


def test_reconcile_verify_finds_and_quarantines_corrupt_files(
    store: ShardStore, root: Path, db_path: Path
) -> None:
    good = put(store, b"good")
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    report = store.reconcile(verify=True)
    assert (report.checked, report.corrupt) == (2, 1)
    assert (root / "quarantine" / address.hex()).exists()
    assert rows(db_path) == sorted([(good, 4, "ok"), (address, len(data), "corrupt")])
    assert store.stats().bytes == 4


def test_reconcile_keeps_corrupt_rows_corrupt(store: ShardStore, root: Path) -> None:
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    with pytest.raises(ShardCorrupt):
        store.read(address)
    report = store.reconcile(verify=True)
    assert (report.missing, report.corrupt, report.revived) == (0, 0, 0)
    assert store.stats().corrupt == 1


def test_reconcile_revives_a_missing_shard_whose_file_is_back(
    store: ShardStore, root: Path
) -> None:
    address, data = make_shard()
    put(store, data)
    path = shard_file(root, address)
    path.rename(root / "elsewhere")
    store.reconcile()
    (root / "elsewhere").rename(path)
    report = store.reconcile()
    assert report.revived == 1
    assert store.read(address) == data


def test_reconcile_does_not_revive_a_damaged_file(store: ShardStore, root: Path) -> None:
    address, data = make_shard()
    put(store, data)
    path = shard_file(root, address)
    path.unlink()
    store.reconcile()
    path.write_bytes(bytes(len(data)))  # right size, wrong bytes
    report = store.reconcile()
    assert report.revived == 0
    assert not store.has(address)
    assert not path.exists()


def test_reconcile_refuses_while_a_store_is_in_progress(store: ShardStore, root: Path) -> None:
    reservation = store.reserve(make_shard()[0], 10)
    (root / "tmp" / ".in-flight.tmp").write_bytes(b"")
    with pytest.raises(RuntimeError, match="in progress"):
        store.reconcile()
    assert (root / "tmp" / ".in-flight.tmp").exists()
    store.release(reservation)
    assert store.reconcile().temp_removed == 1


def test_reconcile_recounts_quarantine_cleaned_by_the_operator(
    store: ShardStore, root: Path
) -> None:
    address, data = make_shard()
    put(store, data)
    corrupt(shard_file(root, address))
    with pytest.raises(ShardCorrupt):
        store.read(address)
    (root / "quarantine" / address.hex()).unlink()
    store.reconcile()
    assert store.used_bytes() == 0


def test_threads_storing_reading_and_deleting_leave_index_and_files_in_agreement(
    store: ShardStore, root: Path
) -> None:
    failures: list[BaseException] = []
    shared: list[bytes] = []

    def traffic(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[bytes] = []
        try:
            for n in range(60):
                roll = rng.random()
                if mine and roll < 0.2:
                    assert store.delete(mine.pop(rng.randrange(len(mine))))
                elif shared and roll < 0.5:
                    # Another thread's shard: it may be deleted meanwhile,
                    # but what is returned is always intact.
                    address = rng.choice(shared)
                    with contextlib.suppress(ShardNotFound):
                        assert blake3.blake3(store.read(address)).digest() == address
                else:
                    data = f"{seed}:{n}:".encode() + rng.randbytes(rng.randint(0, 5000))
                    mine.append(put(store, data))
                    shared.append(mine[-1])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=traffic, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    on_disk = {bytes.fromhex(p.name): p.stat().st_size for p in root.glob("??/*")}
    assert set(on_disk) == set(store.addresses())
    assert store.used_bytes() == sum(on_disk.values())
    assert store.stats().reserved == 0
    assert store.reconcile(verify=True) == ReconcileReport(
        checked=len(on_disk),
        temp_removed=0,
        orphans_removed=0,
        missing=0,
        corrupt=0,
        revived=0,
        unexpected=0,
    )
