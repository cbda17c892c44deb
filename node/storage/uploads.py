"""What this node has put into the network, for ``zhtp ls``.

One row per content ID in ``upload_entries`` of the node database. The log
is local bookkeeping: it answers "what did I upload, and how do I read it
back", not "what exists".

An entry may hold a capability: the string that lets its holder read the
content, secret key included. It is stored as given (the node database is
the owner's, like the keystore), but never shown by ``repr``, so it cannot
leak into logs or tracebacks.

Threads: calls block; one connection shared by all threads, serialised by a
lock -- the same habits as the records store and the shard store.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from node.storage.shards import open_component_database

__all__ = ["CONTENT_ID_LENGTH", "SCHEMA_VERSION", "UploadEntry", "UploadLog"]

CONTENT_ID_LENGTH = 32  # BLAKE3-256 of the manifest
MAX_NAME_BYTES = 4096
MAX_TIER_LENGTH = 32
MAX_CAPABILITY_LENGTH = 16384
MAX_TAGS = 64
MAX_TAG_BYTES = 256
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class UploadEntry:
    content_id: bytes
    name: str
    size: int  # bytes of the original file
    created: int  # Unix time in seconds, as in the manifest
    tier: str
    public: bool
    capability: str | None = field(repr=False)  # secret: grants read access
    tags: tuple[str, ...] = ()


def _check_text(what: str, value: object, *, max_bytes: int, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value and not empty_ok:
        raise ValueError(f"{what} must not be empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates, e.g. from os.fsdecode of a non-UTF-8 file name.
        raise ValueError(f"{what} is not valid Unicode text") from None
    if len(encoded) > max_bytes:
        raise ValueError(f"{what} is {len(encoded)} bytes long, more than {max_bytes}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def _check_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {value}")
    return value


def _check_content_id(content_id: object) -> bytes:
    if not isinstance(content_id, bytes):
        raise TypeError(f"content ID must be bytes, got {type(content_id).__name__}")
    if len(content_id) != CONTENT_ID_LENGTH:
        raise ValueError(
            f"content ID must be {CONTENT_ID_LENGTH} bytes (BLAKE3-256), got {len(content_id)}"
        )
    return content_id


def _check_entry(entry: object) -> UploadEntry:
    if not isinstance(entry, UploadEntry):
        raise TypeError(f"expected an UploadEntry, got {type(entry).__name__}")
    _check_content_id(entry.content_id)
    _check_text("name", entry.name, max_bytes=MAX_NAME_BYTES, empty_ok=True)
    _check_int("size", entry.size)
    _check_int("created", entry.created)
    _check_text("tier", entry.tier, max_bytes=MAX_TIER_LENGTH)
    if not entry.tier.isascii() or not entry.tier.isprintable():
        raise ValueError(f"tier must be printable ASCII, got {entry.tier!r}")
    if not isinstance(entry.public, bool):
        raise TypeError(f"public must be a bool, got {type(entry.public).__name__}")
    if entry.capability is not None:
        # The value itself is never put in a message: it is secret.
        _check_text("capability", entry.capability, max_bytes=MAX_CAPABILITY_LENGTH)
    if not isinstance(entry.tags, tuple):
        raise TypeError(f"tags must be a tuple, got {type(entry.tags).__name__}")
    if len(entry.tags) > MAX_TAGS:
        raise ValueError(f"{len(entry.tags)} tags, more than {MAX_TAGS}")
    for tag in entry.tags:
        _check_text("tag", tag, max_bytes=MAX_TAG_BYTES)
    return entry


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    # A rowid table: rowid breaks ties between entries created in the same
    # second, so "newest first" is also "most recently recorded first".
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS upload_entries (
            content_id BLOB NOT NULL UNIQUE CHECK (length(content_id) = 32),
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            created INTEGER NOT NULL,
            tier TEXT NOT NULL,
            public INTEGER NOT NULL CHECK (public IN (0, 1)),
            capability TEXT,
            tags TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS upload_entries_created ON upload_entries (created)")


# Append only.
_MIGRATIONS = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)
_COMPONENT = "uploads"
_COLUMNS = "content_id, name, size, created, tier, public, capability, tags"


def _from_row(row: tuple[bytes, str, int, int, str, int, str | None, str]) -> UploadEntry:
    content_id, name, size, created, tier, public, capability, tags = row
    return UploadEntry(
        content_id=content_id,
        name=name,
        size=size,
        created=created,
        tier=tier,
        public=bool(public),
        capability=capability,
        tags=tuple(json.loads(tags)),
    )


class UploadLog:
    """The uploads recorded in the node database at `db_path`."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._conn = open_component_database(db_path, _COMPONENT, _MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> UploadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def record(self, entry: UploadEntry) -> None:
        """Add `entry`, or replace the entry with the same content ID."""
        _check_entry(entry)
        with self._lock:
            self._conn.execute(
                f"INSERT INTO upload_entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (content_id) DO UPDATE SET name = excluded.name,"
                " size = excluded.size, created = excluded.created, tier = excluded.tier,"
                " public = excluded.public, capability = excluded.capability,"
                " tags = excluded.tags",
                (
                    entry.content_id,
                    entry.name,
                    entry.size,
                    entry.created,
                    entry.tier,
                    int(entry.public),
                    entry.capability,
                    json.dumps(list(entry.tags)),
                ),
            )

    def list(self) -> builtins.list[UploadEntry]:
        """Every entry, newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM upload_entries ORDER BY created DESC, rowid DESC"
            ).fetchall()
        return [_from_row(row) for row in rows]

    def get(self, content_id: bytes) -> UploadEntry | None:
        _check_content_id(content_id)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM upload_entries WHERE content_id = ?", (content_id,)
            ).fetchone()
        return None if row is None else _from_row(row)

    def forget(self, content_id: bytes) -> bool:
        """Remove the entry; False if there was none. The content itself stays in the network."""
        _check_content_id(content_id)
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM upload_entries WHERE content_id = ?", (content_id,)
            )
        return cursor.rowcount > 0
