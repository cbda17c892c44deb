"""The contracts this node takes part in or replicates, kept in the node database.

Theory of operation
-------------------
A `ContractBook` holds, per contract, the history a `ContractRecord`
carries -- terms, the client's proposal signature, every transition -- plus
what this node is to the contract (`BookRole`: client, provider or replica)
and a summary of the current state for queries. The history is the truth:
the state is always what `replay` of the stored history gives, and the row's
state name, sequence and `state_digest` are a cache of it, checked on every
reload (a mismatch is `BookCorrupt`: disk damage or a bug, never a peer).

Writes:

- `add` stores a whole record (a proposal we received, a copy a replica is
  asked to keep). It is replayed first and refused if invalid. The same
  history again changes nothing; a valid history that extends the stored one
  replaces it; a shorter one, or one that diverges from it (an equivocation
  by a party, see `node.records.contracts`), is refused with
  `ContractError`. The role is set by the first `add` and cannot change.
- `apply` appends one transition, checked by `node.market.contract.apply`
  against the current state. Signatures are put in role order first
  (`canonical_transition`), the one form a record can carry; a transition
  that would make the record outgrow `MAX_RECORD_TRANSITIONS` or
  `MAX_RECORD_SIZE` is refused, so every stored history can be published.

Each method is one SQLite transaction (``BEGIN IMMEDIATE``): a refusal, an
exception or a crash leaves the book as it was, and reopening the file gives
the same states. Replaying our own stored history does not consult the
clock again -- each transition was checked against it when it was accepted
-- so a clock stepped backwards cannot make stored contracts unreadable.

Shards: every shard address a contract names is indexed in
``contract_shards``, so a holder can ask `active_for_provider` whether it has
promised to keep a shard before accepting or keeping it.

Tables (component ``contracts`` of `migrate_component`):

- ``contracts``: one row per contract: ID, role, terms bytes, proposal
  signature, client and provider IDs, state name, sequence, state digest,
  price, size, start and end (renewals counted), updated time;
- ``contract_transitions``: (contract ID, sequence) -> `encode_transition`;
- ``contract_shards``: (shard address, contract ID).

Threads: calls block; one connection, serialised by a lock. Recently used
states are cached in memory and reused only while their sequence and digest
match the row.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from node.market.contract import (
    DIGEST_SIZE,
    MAX_RECORD_TRANSITIONS,
    ContractError,
    ContractRecord,
    ContractState,
    State,
    Transition,
    canonical_transition,
    contract_record,
    encode_contract_record,
    encode_transition,
    replay,
    state_digest,
)
from node.market.contract import apply as apply_transition
from node.storage.shards import open_component_database

__all__ = [
    "SCHEMA_VERSION",
    "SERVING_STATES",
    "BookCorrupt",
    "BookRole",
    "ContractBook",
    "ContractSummary",
]

# The states in which a provider has promised to keep the contract's shards.
# VIOLATION and PENALISED are included: the contract still runs (RESOLVE
# returns it to MONITORING) and the client may re-store a lost shard then.
SERVING_STATES: frozenset[State] = frozenset(
    {State.ACTIVE, State.MONITORING, State.VIOLATION, State.PENALISED}
)
_CACHE_SIZE = 256
# Replaying our own stored history: every transition passed the clock check
# when it was accepted, so "now" is the end of time.
_TRUSTED_NOW_MS = (1 << 63) - 1


class BookCorrupt(RuntimeError):
    """A stored contract no longer replays to what the book recorded for it."""


class BookRole(StrEnum):
    CLIENT = "client"
    PROVIDER = "provider"
    REPLICA = "replica"


@dataclass(frozen=True, slots=True)
class ContractSummary:
    contract_id: bytes
    role: BookRole
    client: bytes
    provider: bytes
    state: State
    sequence: int
    price_micro_tokens: int
    total_size: int
    start_ms: int
    end_ms: int  # renewals counted
    updated_ms: int

    @property
    def counterparty(self) -> bytes | None:
        """The other party; None when we only replicate the contract."""
        if self.role is BookRole.CLIENT:
            return self.provider
        if self.role is BookRole.PROVIDER:
            return self.client
        return None


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    roles = ", ".join(f"'{role.value}'" for role in BookRole)
    states = ", ".join(f"'{state.value}'" for state in State)
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS contracts (
            contract_id BLOB PRIMARY KEY NOT NULL CHECK (length(contract_id) = 32),
            role TEXT NOT NULL CHECK (role IN ({roles})),
            terms BLOB NOT NULL,
            client_signature BLOB NOT NULL CHECK (length(client_signature) = 64),
            client BLOB NOT NULL,
            provider BLOB NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({states})),
            sequence INTEGER NOT NULL CHECK (sequence >= 0),
            state_digest BLOB NOT NULL CHECK (length(state_digest) = 32),
            price INTEGER NOT NULL,
            total_size INTEGER NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS contracts_role_state ON contracts (role, state)")
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS contract_transitions (
            contract_id BLOB NOT NULL,
            sequence INTEGER NOT NULL CHECK (sequence >= 1),
            encoded BLOB NOT NULL,
            PRIMARY KEY (contract_id, sequence)
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS contract_shards (
            address BLOB NOT NULL CHECK (length(address) = 32),
            contract_id BLOB NOT NULL,
            PRIMARY KEY (address, contract_id)
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS contract_shards_contract ON contract_shards (contract_id)"
    )


# Append only.
_MIGRATIONS = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)
_COMPONENT = "contracts"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_contract_id(contract_id: object) -> bytes:
    if not isinstance(contract_id, bytes) or len(contract_id) != DIGEST_SIZE:
        raise ValueError(f"a contract ID is {DIGEST_SIZE} bytes")
    return contract_id


class ContractBook:
    """Contracts we are a party to or a replica of, in the node database at `db_path`."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, ContractState] = OrderedDict()
        self._conn = open_component_database(db_path, _COMPONENT, _MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ContractBook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading (lock held) ---------------------------------------------------

    def _stored_record(self, contract_id: bytes) -> tuple[BookRole, ContractRecord] | None:
        row = self._conn.execute(
            "SELECT role, terms, client_signature FROM contracts WHERE contract_id = ?",
            (contract_id,),
        ).fetchone()
        if row is None:
            return None
        transitions = tuple(
            bytes(encoded)
            for (encoded,) in self._conn.execute(
                "SELECT encoded FROM contract_transitions WHERE contract_id = ? ORDER BY sequence",
                (contract_id,),
            )
        )
        return BookRole(row[0]), ContractRecord(bytes(row[1]), bytes(row[2]), transitions)

    def _load(self, contract_id: bytes) -> ContractState | None:
        row = self._conn.execute(
            "SELECT sequence, state_digest FROM contracts WHERE contract_id = ?",
            (contract_id,),
        ).fetchone()
        if row is None:
            return None
        sequence, digest = int(row[0]), bytes(row[1])
        cached = self._cache.get(contract_id)
        if cached is not None and cached.sequence == sequence and state_digest(cached) == digest:
            self._cache.move_to_end(contract_id)
            return cached
        stored = self._stored_record(contract_id)
        assert stored is not None
        try:
            state = replay(stored[1], _TRUSTED_NOW_MS)
        except ContractError as error:
            raise BookCorrupt(f"stored contract does not replay: {error.reason}") from None
        if state.sequence != sequence or state_digest(state) != digest:
            raise BookCorrupt("stored contract does not replay to its recorded state")
        self._remember(state)
        return state

    def _remember(self, state: ContractState) -> None:
        self._cache[state.contract_id] = state
        self._cache.move_to_end(state.contract_id)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- writing (lock held, inside a transaction) -----------------------------------

    def _write_summary(
        self, state: ContractState, role: BookRole, terms: bytes, now_ms: int
    ) -> None:
        t = state.terms
        self._conn.execute(
            "INSERT INTO contracts (contract_id, role, terms, client_signature, client,"
            " provider, state, sequence, state_digest, price, total_size, start_ms, end_ms,"
            " updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (contract_id) DO UPDATE SET state = excluded.state,"
            " sequence = excluded.sequence, state_digest = excluded.state_digest,"
            " end_ms = excluded.end_ms, updated_ms = excluded.updated_ms",
            (
                state.contract_id,
                role.value,
                terms,
                state.client_signature,
                t.client,
                t.provider,
                state.state.value,
                state.sequence,
                state_digest(state),
                t.price_micro_tokens,
                t.total_size,
                t.start_ms,
                state.end_ms,
                now_ms,
            ),
        )

    def _insert_transitions(
        self, contract_id: bytes, first: int, encoded: tuple[bytes, ...]
    ) -> None:
        self._conn.executemany(
            "INSERT INTO contract_transitions (contract_id, sequence, encoded) VALUES (?, ?, ?)",
            [(contract_id, first + i, raw) for i, raw in enumerate(encoded)],
        )

    # -- the API ------------------------------------------------------------------

    def add(self, record: ContractRecord, role: BookRole, now_ms: int) -> ContractState:
        """Store a contract's history (module docstring); its state after the history.

        Raises ContractError for an invalid record, a shorter or diverging
        history than the stored one, or a different role; nothing changes then.
        """
        role = BookRole(role)
        encode_contract_record(record)  # the bounds a publishable record obeys
        state = replay(record, now_ms)  # pure CPU: before the write lock
        contract_id = state.contract_id
        with self._lock, _transaction(self._conn):
            stored = self._stored_record(contract_id)
            if stored is None:
                self._write_summary(state, role, record.terms, now_ms)
                self._insert_transitions(contract_id, 1, record.transitions)
                self._conn.executemany(
                    "INSERT INTO contract_shards (address, contract_id) VALUES (?, ?)",
                    [(shard.address, contract_id) for shard in state.terms.shards],
                )
            else:
                stored_role, old = stored
                if stored_role is not role:
                    raise ContractError(f"contract is already held as {stored_role.value}")
                if old.client_signature != record.client_signature:
                    raise ContractError("a different proposal signature is stored")
                common = min(len(old.transitions), len(record.transitions))
                for index in range(common):
                    if old.transitions[index] != record.transitions[index]:
                        raise ContractError(
                            f"history diverges from the stored one at transition {index}"
                        )
                if len(record.transitions) < len(old.transitions):
                    raise ContractError("history is shorter than the stored one")
                if len(record.transitions) == len(old.transitions):
                    return state  # the same history: nothing to do
                self._insert_transitions(contract_id, common + 1, record.transitions[common:])
                self._write_summary(state, role, record.terms, now_ms)
        self._remember(state)
        return state

    def apply(self, contract_id: bytes, transition: Transition, now_ms: int) -> ContractState:
        """Append `transition` to a stored contract; the new state.

        ContractError if there is no such contract or the transition is
        refused (`node.market.contract.apply`); nothing changes then.
        """
        _check_contract_id(contract_id)
        transition = canonical_transition(transition)
        with self._lock, _transaction(self._conn):
            state = self._load(contract_id)
            if state is None:
                raise ContractError("no such contract in the book")
            if state.sequence >= MAX_RECORD_TRANSITIONS:
                raise ContractError("contract history is full")
            new = apply_transition(state, transition, now_ms)
            encoded = encode_transition(transition)
            encode_contract_record(contract_record(new))  # still publishable
            row = self._conn.execute(
                "SELECT role, terms FROM contracts WHERE contract_id = ?", (contract_id,)
            ).fetchone()
            self._insert_transitions(contract_id, new.sequence, (encoded,))
            self._write_summary(new, BookRole(row[0]), bytes(row[1]), now_ms)
        self._remember(new)
        return new

    def state(self, contract_id: bytes) -> ContractState | None:
        """The contract's current state; None if it is not in the book."""
        _check_contract_id(contract_id)
        with self._lock:
            return self._load(contract_id)

    def record(self, contract_id: bytes) -> ContractRecord | None:
        """The contract's stored history, ready to publish; None if it is not in the book."""
        _check_contract_id(contract_id)
        with self._lock:
            stored = self._stored_record(contract_id)
        return None if stored is None else stored[1]

    def role(self, contract_id: bytes) -> BookRole | None:
        _check_contract_id(contract_id)
        with self._lock:
            row = self._conn.execute(
                "SELECT role FROM contracts WHERE contract_id = ?", (contract_id,)
            ).fetchone()
        return None if row is None else BookRole(row[0])

    def list(
        self,
        role: BookRole | None = None,
        states: Collection[State] | None = None,
    ) -> list[ContractSummary]:
        """Summaries of the stored contracts, by start then ID; optionally filtered."""
        query = (
            "SELECT contract_id, role, client, provider, state, sequence, price, total_size,"
            " start_ms, end_ms, updated_ms FROM contracts"
        )
        where: list[str] = []
        params: list[object] = []
        if role is not None:
            where.append("role = ?")
            params.append(BookRole(role).value)
        if states is not None:
            names = sorted(State(s).value for s in states)
            if not names:
                return []
            where.append(f"state IN ({', '.join('?' * len(names))})")
            params.extend(names)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY start_ms, contract_id"
        with self._lock:
            rows = self._conn.execute(query, params).fetchall()
        return [
            ContractSummary(
                contract_id=bytes(r[0]),
                role=BookRole(r[1]),
                client=bytes(r[2]),
                provider=bytes(r[3]),
                state=State(r[4]),
                sequence=int(r[5]),
                price_micro_tokens=int(r[6]),
                total_size=int(r[7]),
                start_ms=int(r[8]),
                end_ms=int(r[9]),
                updated_ms=int(r[10]),
            )
            for r in rows
        ]

    def active_for_provider(self, shard_address: bytes) -> builtins.list[bytes]:
        """IDs (sorted) of contracts in `SERVING_STATES` in which we are the provider
        and that name `shard_address`; empty if we have promised no one to keep it.
        """
        if not isinstance(shard_address, bytes) or len(shard_address) != DIGEST_SIZE:
            raise ValueError(f"a shard address is {DIGEST_SIZE} bytes")
        names = sorted(s.value for s in SERVING_STATES)
        marks = ", ".join("?" * len(names))
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.contract_id FROM contract_shards AS s"
                " JOIN contracts AS c ON c.contract_id = s.contract_id"
                f" WHERE s.address = ? AND c.role = ? AND c.state IN ({marks})"
                " ORDER BY c.contract_id",
                (shard_address, BookRole.PROVIDER.value, *names),
            ).fetchall()
        return [bytes(r[0]) for r in rows]
