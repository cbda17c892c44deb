"""Shard files and the node's SQLite bookkeeping, crash-safe. No networking here."""

from node.storage.atomic import write_file_atomically
from node.storage.shards import (
    ReconcileReport,
    Reservation,
    ShardCorrupt,
    ShardMismatch,
    ShardNotFound,
    ShardState,
    ShardStats,
    ShardStore,
    StorageError,
    StorageFull,
    StoreLocked,
)
from node.storage.uploads import UploadEntry, UploadLog

__all__ = [
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
    "UploadEntry",
    "UploadLog",
    "write_file_atomically",
]
