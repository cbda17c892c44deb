"""The policy between the network and the record store.

Theory of operation
-------------------
Every record a peer sends, and every copy we hold, is judged by the same
`NamespacedValidator` at the caller's `now_ms`:

- an invalid incoming record raises `RecordInvalid` and changes nothing;
- a valid one is compared with our copy (if that copy is itself still
  valid) with the namespace's `select`; only a winner replaces it, so an
  older name record never displaces a newer one;
- the same bytes again only refresh the receive/republish times;
- in a namespace whose copies merge (a tag index, many writers), a valid
  incoming value is united with our copy instead, so concurrent writers
  never erase each other;
- a held copy that stops validating (expired, or a namespace whose rules
  tightened) is dropped when it is next read.

Check-then-write runs under one lock, so two concurrent `accept` calls
(e.g. from worker threads) cannot let the loser overwrite the winner. All
record writes should go through a `RecordBook` for that reason.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Sequence

from node.records.store import RecordStore
from node.records.validators import NamespacedValidator, RecordInvalid

__all__ = ["PutOutcome", "RecordBook"]

# Expiries are uint64 on the wire but SQLite stores signed 64-bit integers.
# Anything past 2**63-1 ms (~292 million years) means the same as "then".
_STORE_TIME_MAX = (1 << 63) - 1


class PutOutcome(enum.Enum):
    STORED = "stored"  # new key, or the incoming record won selection
    REFRESHED = "refreshed"  # the very same value was received again
    KEPT_EXISTING = "kept_existing"  # our copy won selection: incoming is stale


class RecordBook:
    def __init__(self, store: RecordStore, validator: NamespacedValidator) -> None:
        self.store = store
        self.validator = validator
        self._lock = threading.Lock()

    def _store(self, key: bytes, value: bytes, now_ms: int) -> None:
        expires = self.validator.expires_at_ms(key, value)
        if expires is not None:
            expires = min(expires, _STORE_TIME_MAX)
        self.store.put(key, value, now_ms=now_ms, expires_at_ms=expires)

    def _current(self, key: bytes, now_ms: int) -> bytes | None:
        """Our copy of `key` if it is still valid; an invalid copy is dropped."""
        stored = self.store.get(key)
        if stored is None:
            return None
        try:
            self.validator.validate(key, stored.value, now_ms)
        except RecordInvalid:
            self.store.delete(key)
            return None
        return stored.value

    def accept(self, key: bytes, value: bytes, now_ms: int) -> PutOutcome:
        """Judge a record offered by a peer (or by us); raises RecordInvalid, changing nothing."""
        self.validator.validate(key, value, now_ms)
        with self._lock:
            current = self._current(key, now_ms)
            if current is None:
                self._store(key, value, now_ms)
                return PutOutcome.STORED
            if current == value:
                self._store(key, value, now_ms)
                return PutOutcome.REFRESHED
            merger = self.validator.merger_for(key)
            if merger is not None:
                merged = merger.merge(key, [current, value], now_ms)
                self._store(key, merged, now_ms)
                return PutOutcome.REFRESHED if merged == current else PutOutcome.STORED
            if self.validator.select(key, [current, value]) == 0:
                return PutOutcome.KEPT_EXISTING
            self._store(key, value, now_ms)
            return PutOutcome.STORED

    def get_valid(self, key: bytes, now_ms: int) -> bytes | None:
        """Our copy of `key` if it still validates at `now_ms` (else drop it and return None)."""
        with self._lock:
            return self._current(key, now_ms)

    def combine(self, key: bytes, values: Sequence[bytes], now_ms: int) -> bytes | None:
        """The value to keep from copies collected from several peers; None if none is valid.

        The merged value in a merging namespace, else the best one. Touches no state.
        """
        valid = [v for v in values if self._is_valid(key, v, now_ms)]
        if not valid:
            return None
        merger = self.validator.merger_for(key)
        if merger is not None:
            try:
                return merger.merge(key, valid, now_ms)
            except RecordInvalid:
                return None
        return valid[self.validator.select(key, valid)]

    def _is_valid(self, key: bytes, value: bytes, now_ms: int) -> bool:
        try:
            self.validator.validate(key, value, now_ms)
        except RecordInvalid:
            return False
        return True

    def best(self, key: bytes, values: Sequence[bytes], now_ms: int) -> int | None:
        """Index into `values` of the best valid one; None if none is valid.

        Used to pick among GET_VALUE answers from several peers; touches no state.
        """
        valid: list[int] = []
        for index, value in enumerate(values):
            try:
                self.validator.validate(key, value, now_ms)
            except RecordInvalid:
                continue
            valid.append(index)
        if not valid:
            return None
        return valid[self.validator.select(key, [values[i] for i in valid])]
