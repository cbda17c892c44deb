"""SQLite persistence for DHT records and provider announcements.

Theory of operation
-------------------
The store is deliberately dumb: it keeps whatever `RecordBook` (the policy
layer) decides to keep, and answers questions about time only with the
`now_ms` it is given. It never validates values.

Durability: WAL journal with ``synchronous=FULL``, and every write method is
one transaction committed before it returns -- once `put` returns, the
record survives a crash or power loss.

Republishing (Kademlia's "republish every hour"): each record remembers when
it was last (re)published. Receiving a record counts as a republish, because
whoever sent it is storing it on the other closest nodes as well; this is the
optimisation from the Kademlia paper that keeps k holders from all
republishing the same record every interval.

Threads: calls block; callers on an event loop may run them in a worker
thread. One connection is shared by all threads and serialised by a lock.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["SCHEMA_VERSION", "ProviderEntry", "RecordStore", "StoredRecord"]

# Largest time SQLite's signed 64-bit INTEGER holds.
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class StoredRecord:
    key: bytes
    value: bytes
    received_at_ms: int
    expires_at_ms: int | None  # None: kept until replaced or deleted
    republished_at_ms: int


@dataclass(frozen=True)
class ProviderEntry:
    peer_id: bytes
    addrs: tuple[bytes, ...]
    expires_at_ms: int


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE records (
            key BLOB PRIMARY KEY NOT NULL,
            value BLOB NOT NULL,
            received_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER,
            republished_at_ms INTEGER NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX records_expiry ON records (expires_at_ms)")
    conn.execute("CREATE INDEX records_republish ON records (republished_at_ms)")
    conn.execute(
        """
        CREATE TABLE providers (
            key BLOB NOT NULL,
            peer_id BLOB NOT NULL,
            addrs BLOB NOT NULL,
            expires_at_ms INTEGER NOT NULL,
            PRIMARY KEY (key, peer_id)
        )
        """
    )
    conn.execute("CREATE INDEX providers_expiry ON providers (expires_at_ms)")


# MIGRATIONS[n] takes a database at user_version n to n + 1. Append only.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)


def _encode_addrs(addrs: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(addr)) + addr for addr in addrs)


def _decode_addrs(blob: bytes) -> tuple[bytes, ...]:
    addrs = []
    offset = 0
    while offset < len(blob):
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        addrs.append(blob[offset : offset + length])
        offset += length
    return tuple(addrs)


def _check_ms(name: str, value: int) -> None:
    # SQLite would raise OverflowError deep inside execute(); say what is wrong.
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be between 0 and 2**63-1, got {value}")


class RecordStore:
    """Records and provider entries in one SQLite file."""

    def __init__(self, path: Path, *, max_providers_per_key: int = 64) -> None:
        if max_providers_per_key <= 0:
            raise ValueError("max_providers_per_key must be positive")
        self.path = path
        self.max_providers_per_key = max_providers_per_key
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; single statements
        # autocommit and multi-statement writes use explicit BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _configure(self) -> None:
        self._conn.execute("PRAGMA busy_timeout = 5000")
        (mode,) = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
        # Per connection, so it is set on every open, not stored in the file.
        self._conn.execute("PRAGMA synchronous = FULL")

    def _migrate(self) -> None:
        with self._transaction():
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: database schema version {version} is newer than "
                    f"this software understands ({SCHEMA_VERSION})"
                )
            for migrate in _MIGRATIONS[version:]:
                migrate(self._conn)
            # PRAGMA takes no parameters; SCHEMA_VERSION is our own int.
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a read-then-write
        # sequence cannot be interleaved by another connection's write.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def _soft_state(self) -> Iterator[None]:
        # Provider entries are soft state: they expire, and every holder
        # re-announces within the TTL. An fsync per ADD_PROVIDER (one per
        # stored shard, times R) stalled a busy holder's event loop for a
        # quarter of its time; without it a power cut may lose the newest
        # entries, which their providers announce again. WAL keeps them
        # consistent either way. Records themselves stay synchronous=FULL.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- records -----------------------------------------------------------

    def get(self, key: bytes) -> StoredRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT key, value, received_at_ms, expires_at_ms, republished_at_ms"
                " FROM records WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else StoredRecord(*row)

    def put(self, key: bytes, value: bytes, *, now_ms: int, expires_at_ms: int | None) -> None:
        """Insert or replace `key`; received and republished times become `now_ms`."""
        _check_ms("now_ms", now_ms)
        if expires_at_ms is not None:
            _check_ms("expires_at_ms", expires_at_ms)
        with self._lock:
            self._conn.execute(
                "INSERT INTO records"
                " (key, value, received_at_ms, expires_at_ms, republished_at_ms)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " received_at_ms = excluded.received_at_ms,"
                " expires_at_ms = excluded.expires_at_ms,"
                " republished_at_ms = excluded.republished_at_ms",
                (key, value, now_ms, expires_at_ms, now_ms),
            )

    def delete(self, key: bytes) -> bool:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM records WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def keys(self) -> list[bytes]:
        with self._lock:
            rows = self._conn.execute("SELECT key FROM records ORDER BY key").fetchall()
        return [key for (key,) in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(n)

    def drop_expired(self, now_ms: int) -> int:
        """Delete records whose expiry is at or before `now_ms`; returns how many."""
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM records WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?",
                (now_ms,),
            )
        return cursor.rowcount

    def due_for_republish(self, now_ms: int, interval_ms: int) -> list[StoredRecord]:
        """Unexpired records not (re)published in the last `interval_ms`, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value, received_at_ms, expires_at_ms, republished_at_ms"
                " FROM records"
                " WHERE republished_at_ms <= ?"
                " AND (expires_at_ms IS NULL OR expires_at_ms > ?)"
                " ORDER BY republished_at_ms, key",
                (now_ms - interval_ms, now_ms),
            ).fetchall()
        return [StoredRecord(*row) for row in rows]

    def mark_republished(self, key: bytes, now_ms: int) -> None:
        """Record a republish of `key`; a no-op if the record has gone meanwhile."""
        _check_ms("now_ms", now_ms)
        with self._lock:
            self._conn.execute(
                "UPDATE records SET republished_at_ms = ? WHERE key = ?", (now_ms, key)
            )

    # -- providers ---------------------------------------------------------

    def add_provider(
        self, key: bytes, peer_id: bytes, addrs: Sequence[bytes], *, expires_at_ms: int
    ) -> None:
        """Insert or refresh (`key`, `peer_id`).

        At most `max_providers_per_key` entries are kept per key; beyond that
        the entries expiring soonest go -- which may be the new one, if every
        other entry outlives it.
        """
        _check_ms("expires_at_ms", expires_at_ms)
        with self._lock, self._soft_state(), self._transaction():
            self._conn.execute(
                "INSERT INTO providers (key, peer_id, addrs, expires_at_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, peer_id) DO UPDATE SET addrs = excluded.addrs,"
                " expires_at_ms = excluded.expires_at_ms",
                (key, peer_id, _encode_addrs(addrs), expires_at_ms),
            )
            self._conn.execute(
                "DELETE FROM providers WHERE key = ? AND peer_id IN ("
                " SELECT peer_id FROM providers WHERE key = ?"
                " ORDER BY expires_at_ms DESC, peer_id LIMIT -1 OFFSET ?)",
                (key, key, self.max_providers_per_key),
            )

    def providers(self, key: bytes, now_ms: int, limit: int = 20) -> list[ProviderEntry]:
        """Unexpired providers of `key`, newest first.

        "Newest" is the latest expiry: callers set expiry = announce time +
        TTL, so this is the most recently announced first.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT peer_id, addrs, expires_at_ms FROM providers"
                " WHERE key = ? AND expires_at_ms > ?"
                " ORDER BY expires_at_ms DESC, peer_id LIMIT ?",
                (key, now_ms, limit),
            ).fetchall()
        return [ProviderEntry(peer, _decode_addrs(addrs), expiry) for peer, addrs, expiry in rows]

    def drop_expired_providers(self, now_ms: int) -> int:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM providers WHERE expires_at_ms <= ?", (now_ms,))
        return cursor.rowcount

    def provider_count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM providers").fetchone()
        return int(n)
