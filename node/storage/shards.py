"""Shard files on disk, named by their BLAKE3 address, indexed in SQLite.

Theory of operation
-------------------
A shard is stored as ``root/<first two hex chars>/<64 hex chars>``; the
node's SQLite database has one row per shard in ``shard_files`` with its
size and state (``ok``, ``missing``, ``corrupt``). The file is the data, the
row is the promise: a shard counts as stored only when both exist.

Storing is two steps, so concurrent stores cannot overcommit the disk:
`reserve` sets aside the shard's size against ``max_bytes`` before any
bytes arrive, and `commit` checks the bytes, writes them and releases the
reservation. Used + reserved never exceeds ``max_bytes``.

Commit order, chosen so that every crash point leaves something
`reconcile` can repair without losing an acknowledged shard:

1. hash the data (outside the lock) -- a wrong shard writes nothing;
2. write ``root/tmp/<random>.tmp`` and fsync it (outside the lock);
3. under the lock: rename it into place and fsync the directory;
4. insert the row and commit the transaction (``synchronous=FULL``).

Crash after 2: a temporary file, removed at start-up. Crash after 3: a
file with no row -- an *orphan*, never acknowledged, removed at start-up.
After 4 the shard survives; only then does `commit` return and may the
caller acknowledge it. Delete goes the other way round (row first, then
file), so a crash in between leaves an orphan rather than a row pointing at
a file that was deliberately removed.

Reading re-hashes the whole file. A mismatch means the disk lied: the file
moves to ``root/quarantine/`` (kept for diagnosis), the row is marked
``corrupt`` and `ShardCorrupt` is raised, so repair can fetch the shard
again. Quarantined files still occupy the disk, so they count as used.

Threads: calls block; callers on an event loop run them in a worker
thread. One lock serialises the index and the renames; writing, reading and
hashing file contents happen outside it. One process at a time may open a
store directory (an exclusive ``flock`` on ``root/.lock``), because the
byte counters are kept in memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import blake3

from node.storage.atomic import fsync_directory, make_directory, write_temp_file

__all__ = [
    "ADDRESS_LENGTH",
    "SCHEMA_VERSION",
    "ReconcileReport",
    "Reservation",
    "ShardCorrupt",
    "ShardMismatch",
    "ShardNotFound",
    "ShardState",
    "ShardStats",
    "ShardStore",
    "StorageError",
    "StorageFull",
    "StoreLocked",
    "migrate_component",
    "open_component_database",
    "open_node_database",
]

ADDRESS_LENGTH = 32  # BLAKE3-256
_HEX_DIGITS = frozenset("0123456789abcdef")
# Stay well under SQLite's limit on bound parameters per statement.
_QUERY_CHUNK = 500


# -- errors ----------------------------------------------------------------


class StorageError(Exception):
    """Base of the errors the shard store raises on purpose."""


class StorageFull(StorageError):
    """Storing the shard would exceed the configured maximum."""


class ShardMismatch(StorageError, ValueError):
    """The bytes offered are not the shard that was reserved (hash or size)."""


class ShardNotFound(StorageError):
    """No intact copy of the shard is stored here."""


class ShardCorrupt(StorageError):
    """The stored file no longer hashes to its address; it was quarantined."""


class StoreLocked(StorageError):
    """Another process has this store directory open."""


# -- the node database -------------------------------------------------------


def open_node_database(path: Path) -> sqlite3.Connection:
    """A connection to the node's SQLite file, configured like every other user of it.

    WAL journal and ``synchronous=FULL``: a committed transaction survives
    power loss. ``isolation_level=None``: single statements autocommit and
    multi-statement writes use explicit ``BEGIN IMMEDIATE``.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot enable WAL (journal_mode={mode})")
        # Per connection, so it is set on every open, not stored in the file.
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-then-write sequence
    # cannot be interleaved by another connection's write.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate_component(
    conn: sqlite3.Connection,
    component: str,
    migrations: Sequence[Callable[[sqlite3.Connection], None]],
) -> None:
    """Bring `component`'s tables to version ``len(migrations)``.

    Several components share the node's database file, and the records
    store owns ``PRAGMA user_version``; so each component keeps its own
    version in ``schema_versions``. ``migrations[n]`` takes the component
    from version n to n + 1, all in one transaction.
    """
    target = len(migrations)
    with _transaction(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions ("
            " component TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)"
        )
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        version = 0 if row is None else int(row[0])
        if version > target:
            raise RuntimeError(
                f"database schema of {component!r} is version {version}, newer than "
                f"this software understands ({target})"
            )
        for migrate in migrations[version:]:
            migrate(conn)
        conn.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
            " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, target),
        )


def open_component_database(
    path: Path,
    component: str,
    migrations: Sequence[Callable[[sqlite3.Connection], None]],
) -> sqlite3.Connection:
    """The node database, with `component`'s tables migrated (closed again on failure)."""
    conn = open_node_database(path)
    try:
        migrate_component(conn, component, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS shard_files (
            address BLOB PRIMARY KEY NOT NULL CHECK (length(address) = 32),
            size INTEGER NOT NULL CHECK (size > 0),
            state TEXT NOT NULL CHECK (state IN ('ok', 'missing', 'corrupt'))
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS shard_files_state ON shard_files (state)")


# Append only.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)
_COMPONENT = "shards"


# -- values ------------------------------------------------------------------


class ShardState(StrEnum):
    OK = "ok"
    MISSING = "missing"  # the row promises a file that is gone or truncated
    CORRUPT = "corrupt"  # the file failed its hash and sits in quarantine


@dataclass(frozen=True)
class Reservation:
    """Space set aside for one shard until it is committed or released."""

    id: int
    address: bytes
    size: int


@dataclass(frozen=True)
class ShardStats:
    count: int  # intact shards
    bytes: int  # their total size
    missing: int
    corrupt: int
    reserved: int  # bytes set aside for stores in progress
    quarantined: int  # bytes of quarantined files, still on disk


@dataclass(frozen=True)
class ReconcileReport:
    checked: int  # index rows examined
    temp_removed: int
    orphans_removed: int  # shard files with no row: never acknowledged
    missing: int  # rows newly marked missing
    corrupt: int  # files newly found corrupt (verify=True) and quarantined
    revived: int  # missing/corrupt rows whose intact file is back
    unexpected: int  # files in the shard directories that are not shards; left alone


def _check_address(address: object) -> bytes:
    if not isinstance(address, bytes):
        raise TypeError(f"shard address must be bytes, got {type(address).__name__}")
    if len(address) != ADDRESS_LENGTH:
        raise ValueError(
            f"shard address must be {ADDRESS_LENGTH} bytes (BLAKE3-256), got {len(address)}"
        )
    return address


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def _hash(data: bytes) -> bytes:
    digest: bytes = blake3.blake3(data).digest()
    return digest


def _is_shard_name(name: str) -> bool:
    return len(name) == 2 * ADDRESS_LENGTH and set(name) <= _HEX_DIGITS


# -- the store -----------------------------------------------------------------


class ShardStore:
    """Content-addressed shard files under `root`, indexed in the database at `db_path`."""

    def __init__(self, root: Path, db_path: Path, *, max_bytes: int) -> None:
        if _check_int("max_bytes", max_bytes) <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = root
        self.db_path = db_path
        self.max_bytes = max_bytes
        self._tmp_dir = root / "tmp"
        self._quarantine_dir = root / "quarantine"
        self._lock = threading.Lock()
        self._reservations: dict[int, Reservation] = {}
        # Bytes each reservation holds against max_bytes: less than its size
        # when the shard was already stored at reserve time (see `reserve`).
        self._held: dict[int, int] = {}
        self._reserved = 0
        self._ids = itertools.count(1)
        self._closed = False

        make_directory(root)
        make_directory(self._tmp_dir)
        make_directory(self._quarantine_dir)
        self._lock_fd = self._lock_directory()
        try:
            self._conn = open_node_database(db_path)
            try:
                migrate_component(self._conn, _COMPONENT, _MIGRATIONS)
                self._stored = self._sum_ok_sizes()
                self._quarantined = self._scan_quarantine()
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _lock_directory(self) -> int:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StoreLocked(f"{self.root} is in use by another process") from None
            raise
        return fd

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            # Closing the descriptor drops the flock.
            os.close(self._lock_fd)

    def __enter__(self) -> ShardStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- paths and rows (call with the lock held) -------------------------------

    def _shard_dir(self, address: bytes) -> Path:
        return self.root / address[:1].hex()

    def _shard_path(self, address: bytes) -> Path:
        return self._shard_dir(address) / address.hex()

    def _quarantine_path(self, address: bytes) -> Path:
        return self._quarantine_dir / address.hex()

    def _row(self, address: bytes) -> tuple[int, ShardState] | None:
        row = self._conn.execute(
            "SELECT size, state FROM shard_files WHERE address = ?", (address,)
        ).fetchone()
        return None if row is None else (int(row[0]), ShardState(row[1]))

    def _set_state(self, address: bytes, state: ShardState) -> None:
        self._conn.execute(
            "UPDATE shard_files SET state = ? WHERE address = ?", (state.value, address)
        )

    def _sum_ok_sizes(self) -> int:
        (total,) = self._conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM shard_files WHERE state = 'ok'"
        ).fetchone()
        return int(total)

    def _scan_quarantine(self) -> int:
        total = 0
        with os.scandir(self._quarantine_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("shard store is closed")

    def _move_to_quarantine(self, address: bytes) -> int:
        """Move the shard's file aside; returns how much the quarantine grew."""
        source = self._shard_path(address)
        target = self._quarantine_path(address)
        moved = source.stat().st_size
        replaced = target.stat().st_size if target.exists() else 0
        os.replace(source, target)
        fsync_directory(self._quarantine_dir)
        fsync_directory(source.parent)
        return moved - replaced

    def _quarantine(self, address: bytes, size: int) -> None:
        """Move the shard's file aside and mark its intact-until-now row corrupt."""
        self._quarantined += self._move_to_quarantine(address)
        self._set_state(address, ShardState.CORRUPT)
        self._stored -= size

    # -- reserving space ---------------------------------------------------------

    def reserve(self, address: bytes, size: int) -> Reservation:
        """Set aside `size` bytes for shard `address`; raises `StorageFull` if they don't fit.

        A shard that is already stored intact holds nothing: storing it
        again (say, a peer retrying after a lost acknowledgement) must not
        fail because the disk is full of that very shard.
        """
        _check_address(address)
        if _check_int("size", size) <= 0:
            raise ValueError(f"shard size must be positive, got {size}")
        with self._lock:
            self._check_open()
            row = self._row(address)
            held = 0 if row == (size, ShardState.OK) else size
            if self._stored + self._quarantined + self._reserved + held > self.max_bytes:
                raise StorageFull(
                    f"cannot store {size} bytes: {self._free_locked()} of "
                    f"{self.max_bytes} bytes free"
                )
            reservation = Reservation(next(self._ids), address, size)
            self._reservations[reservation.id] = reservation
            self._held[reservation.id] = held
            self._reserved += held
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Give the reservation's space back; harmless if it was committed or released."""
        with self._lock:
            if self._reservations.get(reservation.id) is reservation:
                self._drop_reservation(reservation)

    def _drop_reservation(self, reservation: Reservation) -> None:
        del self._reservations[reservation.id]
        self._reserved -= self._held.pop(reservation.id)

    def _check_active(self, reservation: Reservation) -> None:
        if not isinstance(reservation, Reservation):
            raise TypeError(f"expected a Reservation, got {type(reservation).__name__}")
        if self._reservations.get(reservation.id) is not reservation:
            raise ValueError("reservation is not active in this store (committed or released)")

    # -- storing -------------------------------------------------------------------

    def commit(self, reservation: Reservation, data: bytes) -> bool:
        """Store `data` as the reserved shard, durably; False if it was already stored.

        Raises `ShardMismatch` if `data` is not the reserved shard, writing
        nothing. On any exception the reservation stays active: the caller
        releases it (`release` is idempotent, so ``finally: release(r)``).
        Once this returns the shard survives a crash, and only then may it
        be acknowledged.
        """
        # Immutable bytes only: a buffer changed after hashing would be
        # written under an address it no longer matches.
        if not isinstance(data, bytes):
            raise TypeError(f"shard data must be bytes, got {type(data).__name__}")
        with self._lock:
            self._check_open()
            self._check_active(reservation)
        address, size = reservation.address, reservation.size
        if len(data) != size:
            raise ShardMismatch(f"shard is {len(data)} bytes, reservation is for {size}")
        if _hash(data) != address:
            raise ShardMismatch(f"data does not hash to shard address {address.hex()}")

        with self._lock:
            self._check_open()
            self._check_active(reservation)
            row = self._row(address)
            if row is not None and row[1] is ShardState.OK:
                self._drop_reservation(reservation)
                return False
        temp = write_temp_file(self._tmp_dir, data)
        renamed = False
        try:
            with self._lock:
                self._check_open()
                self._check_active(reservation)
                row = self._row(address)
                if row is not None and row[1] is ShardState.OK:
                    self._drop_reservation(reservation)
                    return False
                self._ensure_budget(reservation)
                final = self._shard_path(address)
                make_directory(final.parent)
                os.replace(temp, final)
                renamed = True
                try:
                    fsync_directory(final.parent)
                    self._conn.execute(
                        "INSERT INTO shard_files (address, size, state) VALUES (?, ?, 'ok')"
                        " ON CONFLICT (address) DO UPDATE SET"
                        " size = excluded.size, state = excluded.state",
                        (address, size),
                    )
                except BaseException:
                    # Not acknowledged: take the file away again rather than
                    # leave an orphan that the byte counters do not see.
                    with contextlib.suppress(OSError):
                        final.unlink()
                    raise
                self._stored += size
                self._drop_reservation(reservation)
                return True
        finally:
            if not renamed:
                with contextlib.suppress(OSError):
                    temp.unlink()

    def _ensure_budget(self, reservation: Reservation) -> None:
        # A reservation made while the shard was stored holds nothing; if the
        # shard has gone since, its bytes must fit now.
        missing = reservation.size - self._held[reservation.id]
        if missing and (
            self._stored + self._quarantined + self._reserved + missing > self.max_bytes
        ):
            raise StorageFull(
                f"cannot store {reservation.size} bytes: {self._free_locked()} of "
                f"{self.max_bytes} bytes free"
            )
        self._held[reservation.id] += missing
        self._reserved += missing

    def delete(self, address: bytes) -> bool:
        """Forget shard `address` and remove its file; False if it was not indexed.

        A quarantined copy stays in ``root/quarantine/`` for the operator.
        """
        _check_address(address)
        with self._lock:
            self._check_open()
            row = self._row(address)
            if row is None:
                return False
            self._conn.execute("DELETE FROM shard_files WHERE address = ?", (address,))
            if row[1] is ShardState.OK:
                self._stored -= row[0]
            path = self._shard_path(address)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True

    # -- reading -----------------------------------------------------------------

    def has(self, address: bytes) -> bool:
        """True if an intact copy of the shard is stored."""
        _check_address(address)
        with self._lock:
            self._check_open()
            row = self._row(address)
        return row is not None and row[1] is ShardState.OK

    def has_many(self, addresses: Iterable[bytes]) -> list[bool]:
        wanted = [_check_address(address) for address in addresses]
        present: set[bytes] = set()
        with self._lock:
            self._check_open()
            for start in range(0, len(wanted), _QUERY_CHUNK):
                chunk = wanted[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT address FROM shard_files WHERE state = 'ok' AND address IN ({marks})",
                    chunk,
                ).fetchall()
                present.update(address for (address,) in rows)
        return [address in present for address in wanted]

    def size_of(self, address: bytes) -> int | None:
        """The size of the intact shard `address`, or None."""
        _check_address(address)
        with self._lock:
            self._check_open()
            row = self._row(address)
        return row[0] if row is not None and row[1] is ShardState.OK else None

    def read(self, address: bytes, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset + length)`` of shard `address`, after verifying all of it.

        `length` None reads to the end. Raises `ShardNotFound` if no intact
        copy is stored, `ShardCorrupt` (after quarantining the file) if it
        fails its hash, ValueError for a range outside the shard.
        """
        _check_address(address)
        if _check_int("offset", offset) < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        if length is not None and _check_int("length", length) < 0:
            raise ValueError(f"length must not be negative, got {length}")
        with self._lock:
            self._check_open()
            row = self._row(address)
        if row is None or row[1] is not ShardState.OK:
            raise ShardNotFound(f"shard {address.hex()} is not stored here")
        size = row[0]
        end = size if length is None else offset + length
        if offset > size or end > size:
            raise ValueError(
                f"range {offset}..{end} is outside shard {address.hex()} of {size} bytes"
            )

        path = self._shard_path(address)
        try:
            with path.open("rb") as file:
                identity = os.fstat(file.fileno())
                # One byte more than expected is enough to see a padded file.
                data = file.read(size + 1)
        except FileNotFoundError:
            with self._lock:
                self._check_open()
                if self._row(address) == (size, ShardState.OK) and not path.exists():
                    self._set_state(address, ShardState.MISSING)
                    self._stored -= size
            raise ShardNotFound(f"shard {address.hex()} is not stored here") from None
        if len(data) == size and _hash(data) == address:
            return data[offset:end]

        with self._lock:
            self._check_open()
            # Quarantine only the file we actually read: it may have been
            # deleted, or re-stored intact, while we were hashing.
            current = self._row(address)
            with contextlib.suppress(FileNotFoundError):
                on_disk = path.stat()
                same_file = (on_disk.st_dev, on_disk.st_ino) == (identity.st_dev, identity.st_ino)
                if same_file and current is not None and current[1] is ShardState.OK:
                    self._quarantine(address, current[0])
        raise ShardCorrupt(f"shard {address.hex()} failed verification and was quarantined")

    def addresses(self) -> list[bytes]:
        """Addresses of all intact shards, in byte order."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT address FROM shard_files WHERE state = 'ok' ORDER BY address"
            ).fetchall()
        return [address for (address,) in rows]

    def damaged_addresses(self) -> list[bytes]:
        """Addresses indexed here whose file is missing or corrupt: candidates for repair."""
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT address FROM shard_files WHERE state != 'ok' ORDER BY address"
            ).fetchall()
        return [address for (address,) in rows]

    # -- accounting --------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes on disk: intact shards plus quarantined files."""
        with self._lock:
            return self._stored + self._quarantined

    def _free_locked(self) -> int:
        return max(0, self.max_bytes - self._stored - self._quarantined - self._reserved)

    def free_bytes(self) -> int:
        """Bytes that a new reservation may still take."""
        with self._lock:
            return self._free_locked()

    def stats(self) -> ShardStats:
        with self._lock:
            self._check_open()
            counts = dict(
                self._conn.execute(
                    "SELECT state, COUNT(*) FROM shard_files GROUP BY state"
                ).fetchall()
            )
            return ShardStats(
                count=int(counts.get(ShardState.OK.value, 0)),
                bytes=self._stored,
                missing=int(counts.get(ShardState.MISSING.value, 0)),
                corrupt=int(counts.get(ShardState.CORRUPT.value, 0)),
                reserved=self._reserved,
                quarantined=self._quarantined,
            )

    # -- start-up --------------------------------------------------------------------

    def reconcile(self, *, verify: bool = False) -> ReconcileReport:
        """Make the index and the files agree again after a crash; run at start-up.

        Removes temporary files and orphans (files with no row: a crash
        between rename and insert, so never acknowledged); marks rows whose
        file is gone or has the wrong size ``missing``; with `verify`, also
        re-hashes every file and quarantines those that fail. A missing or
        corrupt row whose intact file is back becomes ``ok`` again. Refuses
        to run while stores are in progress, because their temporary files
        would look like leftovers. Holds the lock throughout.
        """
        with self._lock:
            self._check_open()
            if self._reservations:
                raise RuntimeError("reconcile while shard stores are in progress")
            temp_removed = self._remove_temp_files()
            rows = {
                address: (int(size), ShardState(state))
                for address, size, state in self._conn.execute(
                    "SELECT address, size, state FROM shard_files"
                )
            }
            orphans, unexpected = self._remove_orphans(rows)
            missing = corrupt = revived = 0
            for address, (size, state) in rows.items():
                outcome = self._reconcile_row(address, size, state, verify=verify)
                missing += outcome is ShardState.MISSING and state is ShardState.OK
                corrupt += outcome is ShardState.CORRUPT and state is ShardState.OK
                revived += outcome is ShardState.OK and state is not ShardState.OK
            self._stored = self._sum_ok_sizes()
            self._quarantined = self._scan_quarantine()
        return ReconcileReport(
            checked=len(rows),
            temp_removed=temp_removed,
            orphans_removed=orphans,
            missing=missing,
            corrupt=corrupt,
            revived=revived,
            unexpected=unexpected,
        )

    def _remove_temp_files(self) -> int:
        removed = 0
        with os.scandir(self._tmp_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            fsync_directory(self._tmp_dir)
        return removed

    def _remove_orphans(self, rows: dict[bytes, tuple[int, ShardState]]) -> tuple[int, int]:
        orphans = unexpected = 0
        with os.scandir(self.root) as top:
            fan_out = [
                Path(entry.path)
                for entry in top
                if len(entry.name) == 2
                and set(entry.name) <= _HEX_DIGITS
                and entry.is_dir(follow_symlinks=False)
            ]
        for directory in fan_out:
            removed_here = 0
            with os.scandir(directory) as entries:
                for entry in entries:
                    name = entry.name
                    if not (
                        _is_shard_name(name)
                        and name.startswith(directory.name)
                        and entry.is_file(follow_symlinks=False)
                    ):
                        unexpected += 1
                        continue
                    if bytes.fromhex(name) not in rows:
                        os.unlink(entry.path)
                        removed_here += 1
            if removed_here:
                fsync_directory(directory)
                orphans += removed_here
        return orphans, unexpected

    def _reconcile_row(
        self, address: bytes, size: int, state: ShardState, *, verify: bool
    ) -> ShardState:
        """Check one row against its file; returns the row's state afterwards.

        Counters are recomputed by the caller, so this only moves files and
        updates rows.
        """
        path = self._shard_path(address)
        try:
            on_disk: int | None = path.stat().st_size
        except FileNotFoundError:
            on_disk = None
        if on_disk is not None and on_disk != size:
            # Truncated or padded: useless as a shard, kept for diagnosis.
            self._move_to_quarantine(address)
            on_disk = None
        if on_disk is None:
            # A corrupt row stays corrupt: its file is in quarantine.
            if state is ShardState.OK:
                self._set_state(address, ShardState.MISSING)
                return ShardState.MISSING
            return state
        # A file that failed once is trusted again only after a full check.
        if (verify or state is not ShardState.OK) and _hash(path.read_bytes()) != address:
            self._move_to_quarantine(address)
            if state is ShardState.OK:
                self._set_state(address, ShardState.CORRUPT)
                return ShardState.CORRUPT
            return state
        if state is not ShardState.OK:
            self._set_state(address, ShardState.OK)
        return ShardState.OK
