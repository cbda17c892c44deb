"""The node's embedded ledger: balances, contract escrow and signed receipts, in SQLite.

Theory of operation
-------------------
Money is an integer number of micro-tokens (1 token = 1_000_000); there are
no floats anywhere. Accounts are opaque byte strings (an identity ID or a
PeerID, 1..64 bytes). Tokens exist in exactly three places:

* an account's **balance** (``ledger_accounts``);
* a contract's **escrow**: what the client locked to pay the provider;
* a contract's **collateral**: what the provider locked to back its promise.

Only `mint` (the testnet faucet) creates tokens, and nothing destroys them,
so at every commit::

    sum(balances) + sum(escrow remaining) + sum(collateral remaining) == total minted

`check_invariant` verifies that, and also rebuilds every balance and every
escrow from the receipts alone, so the receipts are a complete audit log.

Escrow lifecycle
~~~~~~~~~~~~~~~~
`lock_escrow` moves ``amount`` from the client's balance into the escrow of a
new contract, to be paid out in ``periods`` parts: each period gets
``amount // periods`` and the last period also gets the remainder
(``amount % periods``), so the parts add up to ``amount`` exactly; ``amount``
must be at least ``periods`` so that every part is positive.
`deposit_collateral` (any number of times, by the contract's provider) moves
provider funds into the collateral. `release_period` pays period *i*'s part
to the provider, once per period, in any order. `penalise` pays the client,
taking from the remaining escrow first and then from the collateral, never
more than both together hold. Because a penalty can take escrow that was
meant for later periods, a release pays ``min(part, escrow remaining)``;
when nothing is left it is refused (``escrow exhausted``). `refund` ends the
contract: the remaining escrow goes back to the client, the remaining
collateral back to the provider, and the escrow is closed -- every later
operation on it is refused (``escrow closed``).

Operations, idempotency and refusals
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Every operation is one ``BEGIN IMMEDIATE`` transaction and carries an
idempotency key. The key and a canonical encoding of the operation and its
arguments are stored in ``ledger_operations`` in the same transaction as the
effects. Calling again with the same key and the same arguments returns the
receipts of the first call and changes nothing (``now_ms`` is not an
argument in this sense: a retry naturally happens later); the same key with
other arguments, even of another operation, is refused (``idempotency key
reused``). Keys are global to the ledger, not per account.

A refusal raises `LedgerError` whose ``reason`` is one of the short
`Reason` strings -- never a secret, never an account's balance -- and, since
the transaction rolls back, changes nothing; a refused call also records
no key, so it may be retried with the same key once the cause is gone.

Receipts and signatures
~~~~~~~~~~~~~~~~~~~~~~~
Every movement of tokens writes one receipt row. ``src`` and ``dst`` name
the accounts whose balance the movement debits and credits; ``None`` stands
for the other side, which is the contract's escrow or collateral (see
``contract_id`` and ``kind``) or, for a mint, the faucet. A movement of zero
tokens (say, refunding an empty collateral) writes no receipt, so an
operation yields zero, one or two receipts.

Each receipt is signed by the ledger's owner with the ``signer`` given to the
constructor, over `receipt_signing_bytes`: the domain tag
``b"zhtp/ledger/receipt/v1"`` followed by the fields issuer, id, kind, src,
dst, amount, contract_id, period, time_ms, idempotency_key, *each* written as
a 4-byte big-endian length and then its bytes. Integers are 8-byte
big-endian unsigned, text is ASCII, and an absent value (``None``) is the
empty string -- unambiguous, because accounts and contract IDs are never
empty and a present period is always 8 bytes. `verify_receipt` checks one.

Durability and threads
~~~~~~~~~~~~~~~~~~~~~~
The tables live in the node's shared database file, opened like every other
component's (`open_node_database`: WAL, ``synchronous=FULL``) and versioned
under the component name ``ledger``. Once an operation returns, its effects
and receipts survive a crash or power loss; a crash before that leaves no
trace. Time is never read from a clock here: callers pass ``now_ms``.

Calls block; one connection is shared by all threads and serialised by a
lock. Several processes may open the file: ``BEGIN IMMEDIATE`` makes each
operation's read-check-write sequence atomic against other writers too.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from node.storage.shards import open_component_database

__all__ = [
    "MAX_ACCOUNT_LENGTH",
    "MAX_AMOUNT",
    "MAX_CONTRACT_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_PERIODS",
    "RECEIPT_DOMAIN",
    "SCHEMA_VERSION",
    "TOKEN",
    "Escrow",
    "InvariantViolation",
    "Ledger",
    "LedgerError",
    "Reason",
    "Receipt",
    "ReceiptKind",
    "Signer",
    "Verifier",
    "receipt_signing_bytes",
    "verify_receipt",
]

TOKEN = 1_000_000  # micro-tokens per token
MAX_AMOUNT = (1 << 63) - 1  # SQLite's largest INTEGER; amounts are below 2**63
MAX_ACCOUNT_LENGTH = 64
MAX_CONTRACT_ID_LENGTH = 64
MAX_KEY_LENGTH = 64
MAX_PERIODS = 1_000_000
RECEIPT_DOMAIN = b"zhtp/ledger/receipt/v1"
_REQUEST_DOMAIN = b"zhtp/ledger/request/v1"

Signer = Callable[[bytes], bytes]
"""Signs a message with the ledger owner's key: ``signer(message) -> signature``."""

Verifier = Callable[[bytes, bytes, bytes], bool]
"""``verify(public_key, message, signature) -> bool``; False (not an exception) when invalid."""


# -- errors --------------------------------------------------------------------


class Reason(StrEnum):
    """Why an operation was refused. Short, stable, and safe to show anyone."""

    INVALID_ACCOUNT = "invalid account"
    INVALID_CONTRACT = "invalid contract id"
    INVALID_KEY = "invalid idempotency key"
    INVALID_AMOUNT = "invalid amount"
    INVALID_PERIODS = "invalid number of periods"
    INVALID_PERIOD = "invalid period index"
    INVALID_TIME = "invalid time"
    INVALID_LIMIT = "invalid limit"
    KEY_REUSED = "idempotency key reused"
    SAME_ACCOUNT = "same account on both sides"
    INSUFFICIENT_BALANCE = "insufficient balance"
    SUPPLY_OVERFLOW = "total supply would exceed 2**63-1"
    ESCROW_EXISTS = "escrow already exists"
    NO_ESCROW = "no such escrow"
    ESCROW_CLOSED = "escrow closed"
    NOT_PROVIDER = "not the contract's provider"
    AMOUNT_BELOW_PERIODS = "amount smaller than number of periods"
    PERIOD_OUT_OF_RANGE = "period out of range"
    PERIOD_RELEASED = "period already released"
    ESCROW_EXHAUSTED = "escrow exhausted"
    BEYOND_ESCROW = "beyond escrowed amount"


class LedgerError(Exception):
    """An operation was refused; nothing changed. ``reason`` says why."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(str(reason))
        self.reason = reason


class InvariantViolation(RuntimeError):
    """The books do not balance: a bug or a tampered database, never a refusal."""


# -- values --------------------------------------------------------------------


class ReceiptKind(StrEnum):
    MINT = "mint"  # faucet -> dst
    # Paid to dst in another node's book (e.g. a client's release of a
    # period), recorded here on the strength of that node's signature.
    INBOUND = "inbound"  # src (the payer, in their book) -> dst
    TRANSFER = "transfer"  # src -> dst
    ESCROW_LOCK = "escrow_lock"  # client (src) -> escrow
    COLLATERAL_LOCK = "collateral_lock"  # provider (src) -> collateral
    RELEASE = "release"  # escrow -> provider (dst), one period
    PENALTY_ESCROW = "penalty_escrow"  # escrow -> client (dst)
    PENALTY_COLLATERAL = "penalty_collateral"  # collateral -> client (dst)
    REFUND_ESCROW = "refund_escrow"  # escrow -> client (dst), on termination
    REFUND_COLLATERAL = "refund_collateral"  # collateral -> provider (dst), on termination


@dataclass(frozen=True)
class Receipt:
    """One movement of tokens, signed by the ledger's owner (`issuer`)."""

    id: int
    kind: ReceiptKind
    src: bytes | None  # account debited; None: escrow, collateral or faucet
    dst: bytes | None  # account credited; None: escrow or collateral
    amount: int
    contract_id: bytes | None
    period: int | None  # release only
    time_ms: int
    idempotency_key: bytes
    issuer: bytes  # the public key that signed it
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class Escrow:
    """A contract's escrow and collateral. All amounts in micro-tokens."""

    contract_id: bytes
    client: bytes
    provider: bytes
    amount: int  # locked by the client at deployment
    periods: int
    collateral: int  # deposited by the provider, in total
    released: int  # paid to the provider for released periods
    penalised_escrow: int  # paid to the client out of the escrow
    penalised_collateral: int  # paid to the client out of the collateral
    refunded_escrow: int  # returned to the client on termination
    refunded_collateral: int  # returned to the provider on termination
    released_periods: tuple[int, ...]  # ascending
    closed: bool
    created_ms: int
    closed_ms: int | None

    @property
    def escrow_remaining(self) -> int:
        return self.amount - self.released - self.penalised_escrow - self.refunded_escrow

    @property
    def collateral_remaining(self) -> int:
        return self.collateral - self.penalised_collateral - self.refunded_collateral

    def period_amount(self, period_index: int) -> int:
        """Period `period_index`'s scheduled part: equal parts, the last one takes the remainder."""
        return _period_amount(self.amount, self.periods, period_index)


def _period_amount(amount: int, periods: int, period_index: int) -> int:
    if not 0 <= period_index < periods:
        raise LedgerError(Reason.PERIOD_OUT_OF_RANGE)
    part = amount // periods
    return part + amount % periods if period_index == periods - 1 else part


# -- canonical encodings -------------------------------------------------------


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def _fields(*values: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(value)) + value for value in values)


def receipt_signing_bytes(receipt: Receipt) -> bytes:
    """The exact bytes the ledger signs for `receipt` (see the module docstring)."""
    return _fields(
        RECEIPT_DOMAIN,
        receipt.issuer,
        _u64(receipt.id),
        receipt.kind.value.encode("ascii"),
        receipt.src or b"",
        receipt.dst or b"",
        _u64(receipt.amount),
        receipt.contract_id or b"",
        b"" if receipt.period is None else _u64(receipt.period),
        _u64(receipt.time_ms),
        receipt.idempotency_key,
    )


def verify_receipt(receipt: Receipt, public_key: bytes, verify: Verifier) -> bool:
    """Whether `receipt` was signed by `public_key` and is unaltered."""
    if receipt.issuer != public_key:
        return False
    return verify(public_key, receipt_signing_bytes(receipt), receipt.signature)


def _request(operation: bytes, *values: bytes) -> bytes:
    # What idempotency compares: the operation and its arguments, not the time.
    return _fields(_REQUEST_DOMAIN, operation, *values)


# -- argument checks -----------------------------------------------------------


def _check_bytes(value: object, max_length: int, reason: Reason) -> bytes:
    if not isinstance(value, bytes) or not 1 <= len(value) <= max_length:
        raise LedgerError(reason)
    return value


def _check_account(value: object) -> bytes:
    return _check_bytes(value, MAX_ACCOUNT_LENGTH, Reason.INVALID_ACCOUNT)


def _check_contract(value: object) -> bytes:
    return _check_bytes(value, MAX_CONTRACT_ID_LENGTH, Reason.INVALID_CONTRACT)


def _check_key(value: object) -> bytes:
    return _check_bytes(value, MAX_KEY_LENGTH, Reason.INVALID_KEY)


def _check_int(value: object, low: int, high: int, reason: Reason) -> int:
    # bool is an int subclass; True is not an amount.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LedgerError(reason)
    return value


def _check_amount(value: object) -> int:
    return _check_int(value, 1, MAX_AMOUNT, Reason.INVALID_AMOUNT)


# -- schema --------------------------------------------------------------------


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_totals (
            id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
            minted INTEGER NOT NULL CHECK (minted >= 0)
        )
        """
    )
    conn.execute("INSERT OR IGNORE INTO ledger_totals (id, minted) VALUES (1, 0)")
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_accounts (
            account BLOB PRIMARY KEY NOT NULL CHECK (length(account) BETWEEN 1 AND 64),
            balance INTEGER NOT NULL CHECK (balance >= 0)
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_escrows (
            contract_id BLOB PRIMARY KEY NOT NULL CHECK (length(contract_id) BETWEEN 1 AND 64),
            client BLOB NOT NULL,
            provider BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount > 0),
            periods INTEGER NOT NULL CHECK (periods BETWEEN 1 AND amount),
            collateral INTEGER NOT NULL DEFAULT 0 CHECK (collateral >= 0),
            released INTEGER NOT NULL DEFAULT 0 CHECK (released >= 0),
            penalised_escrow INTEGER NOT NULL DEFAULT 0 CHECK (penalised_escrow >= 0),
            penalised_collateral INTEGER NOT NULL DEFAULT 0 CHECK (penalised_collateral >= 0),
            refunded_escrow INTEGER NOT NULL DEFAULT 0 CHECK (refunded_escrow >= 0),
            refunded_collateral INTEGER NOT NULL DEFAULT 0 CHECK (refunded_collateral >= 0),
            closed INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),
            created_ms INTEGER NOT NULL,
            closed_ms INTEGER,
            CHECK (client <> provider),
            CHECK (released + penalised_escrow + refunded_escrow <= amount),
            CHECK (penalised_collateral + refunded_collateral <= collateral),
            CHECK (closed = 0 OR (released + penalised_escrow + refunded_escrow = amount
                                  AND penalised_collateral + refunded_collateral = collateral))
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS ledger_escrows_client ON ledger_escrows (client)")
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_releases (
            contract_id BLOB NOT NULL REFERENCES ledger_escrows (contract_id),
            period INTEGER NOT NULL CHECK (period >= 0),
            receipt_id INTEGER NOT NULL UNIQUE REFERENCES ledger_receipts (id),
            PRIMARY KEY (contract_id, period)
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_operations (
            idempotency_key BLOB PRIMARY KEY NOT NULL
                CHECK (length(idempotency_key) BETWEEN 1 AND 64),
            request BLOB NOT NULL,
            time_ms INTEGER NOT NULL
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_receipts (
            id INTEGER PRIMARY KEY NOT NULL CHECK (id > 0),
            kind TEXT NOT NULL,
            src BLOB,
            dst BLOB,
            amount INTEGER NOT NULL CHECK (amount > 0),
            contract_id BLOB,
            period INTEGER,
            time_ms INTEGER NOT NULL,
            idempotency_key BLOB NOT NULL REFERENCES ledger_operations (idempotency_key),
            issuer BLOB NOT NULL,
            signature BLOB NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS ledger_receipts_src ON ledger_receipts (src)")
    conn.execute("CREATE INDEX IF NOT EXISTS ledger_receipts_dst ON ledger_receipts (dst)")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS ledger_receipts_contract ON ledger_receipts (contract_id)"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS ledger_receipts_key ON ledger_receipts (idempotency_key)"
    )


# Append only.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)
_COMPONENT = "ledger"

_RECEIPT_COLUMNS = (
    "id, kind, src, dst, amount, contract_id, period, time_ms, idempotency_key, issuer, signature"
)
_ESCROW_COLUMNS = (
    "contract_id, client, provider, amount, periods, collateral, released, penalised_escrow,"
    " penalised_collateral, refunded_escrow, refunded_collateral, closed, created_ms, closed_ms"
)

_ReceiptRow = tuple[
    int, str, bytes | None, bytes | None, int, bytes | None, int | None, int, bytes, bytes, bytes
]


def _receipt_from_row(row: _ReceiptRow) -> Receipt:
    rid, kind, src, dst, amount, contract_id, period, time_ms, key, issuer, signature = row
    return Receipt(
        id=rid,
        kind=ReceiptKind(kind),
        src=src,
        dst=dst,
        amount=amount,
        contract_id=contract_id,
        period=period,
        time_ms=time_ms,
        idempotency_key=key,
        issuer=issuer,
        signature=signature,
    )


# -- the ledger ------------------------------------------------------------------


class _Operation:
    """What one operation's transaction knows: where to write and how to sign."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: bytes,
        now_ms: int,
        signer: Signer,
        issuer: bytes,
    ) -> None:
        self.conn = conn
        self.key = key
        self.now_ms = now_ms
        self._signer = signer
        self._issuer = issuer
        self.receipts: list[Receipt] = []

    def balance(self, account: bytes) -> int:
        row = self.conn.execute(
            "SELECT balance FROM ledger_accounts WHERE account = ?", (account,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def credit(self, account: bytes, amount: int) -> None:
        # Cannot overflow: every balance is at most the total minted, below 2**63.
        self.conn.execute(
            "INSERT INTO ledger_accounts (account, balance) VALUES (?, ?)"
            " ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
            (account, amount),
        )

    def debit(self, account: bytes, amount: int) -> None:
        if self.balance(account) < amount:
            raise LedgerError(Reason.INSUFFICIENT_BALANCE)
        self.conn.execute(
            "UPDATE ledger_accounts SET balance = balance - ? WHERE account = ?",
            (amount, account),
        )

    def open_escrow(self, contract_id: bytes) -> Escrow:
        escrow = _read_escrow(self.conn, contract_id)
        if escrow is None:
            raise LedgerError(Reason.NO_ESCROW)
        if escrow.closed:
            raise LedgerError(Reason.ESCROW_CLOSED)
        return escrow

    def emit(
        self,
        kind: ReceiptKind,
        *,
        src: bytes | None,
        dst: bytes | None,
        amount: int,
        contract_id: bytes | None = None,
        period: int | None = None,
    ) -> Receipt:
        """Sign and store the receipt of one movement (the balances are already moved)."""
        (next_id,) = self.conn.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM ledger_receipts"
        ).fetchone()
        unsigned = Receipt(
            id=int(next_id),
            kind=kind,
            src=src,
            dst=dst,
            amount=amount,
            contract_id=contract_id,
            period=period,
            time_ms=self.now_ms,
            idempotency_key=self.key,
            issuer=self._issuer,
            signature=b"",
        )
        signature = self._signer(receipt_signing_bytes(unsigned))
        if not isinstance(signature, bytes) or not signature:
            raise TypeError("the ledger's signer must return a non-empty bytes signature")
        receipt = dataclasses.replace(unsigned, signature=signature)
        self.conn.execute(
            f"INSERT INTO ledger_receipts ({_RECEIPT_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                receipt.id,
                receipt.kind.value,
                receipt.src,
                receipt.dst,
                receipt.amount,
                receipt.contract_id,
                receipt.period,
                receipt.time_ms,
                receipt.idempotency_key,
                receipt.issuer,
                receipt.signature,
            ),
        )
        self.receipts.append(receipt)
        return receipt


def _read_escrow(conn: sqlite3.Connection, contract_id: bytes) -> Escrow | None:
    row = conn.execute(
        f"SELECT {_ESCROW_COLUMNS} FROM ledger_escrows WHERE contract_id = ?", (contract_id,)
    ).fetchone()
    if row is None:
        return None
    periods = tuple(
        int(period)
        for (period,) in conn.execute(
            "SELECT period FROM ledger_releases WHERE contract_id = ? ORDER BY period",
            (contract_id,),
        )
    )
    (
        cid,
        client,
        provider,
        amount,
        n_periods,
        collateral,
        released,
        penalised_escrow,
        penalised_collateral,
        refunded_escrow,
        refunded_collateral,
        closed,
        created_ms,
        closed_ms,
    ) = row
    return Escrow(
        contract_id=cid,
        client=client,
        provider=provider,
        amount=amount,
        periods=n_periods,
        collateral=collateral,
        released=released,
        penalised_escrow=penalised_escrow,
        penalised_collateral=penalised_collateral,
        refunded_escrow=refunded_escrow,
        refunded_collateral=refunded_collateral,
        released_periods=periods,
        closed=bool(closed),
        created_ms=created_ms,
        closed_ms=closed_ms,
    )


class Ledger:
    """Balances, escrows and signed receipts in the node database at `db_path`.

    `signer` signs receipts with the key whose public half is
    `signer_public_key`. The connection keeps ``synchronous=FULL``, and no
    option lowers it: a returned operation must survive power loss. (The
    10**5-step model test measured no faster with ``NORMAL``.)
    """

    def __init__(self, db_path: Path, *, signer: Signer, signer_public_key: bytes) -> None:
        if not isinstance(signer_public_key, bytes) or not signer_public_key:
            raise TypeError("signer_public_key must be non-empty bytes")
        self.db_path = db_path
        self.public_key = signer_public_key
        self._signer = signer
        self._lock = threading.Lock()
        self._conn = open_component_database(db_path, _COMPONENT, _MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a read-check-write
        # sequence cannot be interleaved by another connection's write.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _run(
        self,
        key: bytes,
        now_ms: int,
        request: bytes,
        apply: Callable[[_Operation], None],
    ) -> tuple[Receipt, ...]:
        """Apply an operation once per idempotency key, in one transaction."""
        with self._lock, self._transaction():
            row = self._conn.execute(
                "SELECT request FROM ledger_operations WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != request:
                    raise LedgerError(Reason.KEY_REUSED)
                rows = self._conn.execute(
                    f"SELECT {_RECEIPT_COLUMNS} FROM ledger_receipts"
                    " WHERE idempotency_key = ? ORDER BY id",
                    (key,),
                ).fetchall()
                return tuple(_receipt_from_row(r) for r in rows)
            self._conn.execute(
                "INSERT INTO ledger_operations (idempotency_key, request, time_ms)"
                " VALUES (?, ?, ?)",
                (key, request, now_ms),
            )
            op = _Operation(self._conn, key, now_ms, self._signer, self.public_key)
            apply(op)
            return tuple(op.receipts)

    @staticmethod
    def _common(key: object, now_ms: object) -> tuple[bytes, int]:
        return (
            _check_key(key),
            _check_int(now_ms, 0, MAX_AMOUNT, Reason.INVALID_TIME),
        )

    # -- operations --------------------------------------------------------------

    def mint(self, account: bytes, amount: int, idempotency_key: bytes, *, now_ms: int) -> Receipt:
        """Create `amount` new tokens in `account` (the testnet faucet)."""
        account = _check_account(account)
        amount = _check_amount(amount)
        key, now = self._common(idempotency_key, now_ms)

        def apply(op: _Operation) -> None:
            (minted,) = op.conn.execute("SELECT minted FROM ledger_totals").fetchone()
            if amount > MAX_AMOUNT - int(minted):
                raise LedgerError(Reason.SUPPLY_OVERFLOW)
            op.conn.execute("UPDATE ledger_totals SET minted = minted + ?", (amount,))
            op.credit(account, amount)
            op.emit(ReceiptKind.MINT, src=None, dst=account, amount=amount)

        (receipt,) = self._run(key, now, _request(b"mint", account, _u64(amount)), apply)
        return receipt

    def inbound(
        self,
        payer: bytes,
        account: bytes,
        amount: int,
        idempotency_key: bytes,
        *,
        contract_id: bytes | None = None,
        period: int | None = None,
        now_ms: int,
    ) -> Receipt:
        """Credit `account` with `amount` that `payer` paid in its own book.

        Each node keeps its own book; money moving between books is proved by
        the payer's signature (a signed payment transition) and settled
        outside, on an external chain or by agreement. Inbound amounts join
        the supply of this book like minted ones, so the invariant still holds.
        """
        payer = _check_account(payer)
        account = _check_account(account)
        amount = _check_amount(amount)
        key, now = self._common(idempotency_key, now_ms)
        if payer == account:
            raise LedgerError(Reason.SAME_ACCOUNT)
        if contract_id is not None:
            contract_id = _check_contract(contract_id)

        def apply(op: _Operation) -> None:
            (minted,) = op.conn.execute("SELECT minted FROM ledger_totals").fetchone()
            if amount > MAX_AMOUNT - int(minted):
                raise LedgerError(Reason.SUPPLY_OVERFLOW)
            op.conn.execute("UPDATE ledger_totals SET minted = minted + ?", (amount,))
            op.credit(account, amount)
            op.emit(
                ReceiptKind.INBOUND,
                src=payer,
                dst=account,
                amount=amount,
                contract_id=contract_id,
                period=period,
            )

        request = _request(
            b"inbound", payer, account, _u64(amount), contract_id or b"",
            _u64(0 if period is None else period + 1),
        )  # fmt: skip
        (receipt,) = self._run(key, now, request, apply)
        return receipt

    def transfer(
        self, src: bytes, dst: bytes, amount: int, idempotency_key: bytes, *, now_ms: int
    ) -> Receipt:
        """Move `amount` from `src`'s balance to `dst`'s."""
        src = _check_account(src)
        dst = _check_account(dst)
        amount = _check_amount(amount)
        key, now = self._common(idempotency_key, now_ms)
        if src == dst:
            raise LedgerError(Reason.SAME_ACCOUNT)

        def apply(op: _Operation) -> None:
            op.debit(src, amount)
            op.credit(dst, amount)
            op.emit(ReceiptKind.TRANSFER, src=src, dst=dst, amount=amount)

        request = _request(b"transfer", src, dst, _u64(amount))
        (receipt,) = self._run(key, now, request, apply)
        return receipt

    def lock_escrow(
        self,
        contract_id: bytes,
        client: bytes,
        provider: bytes,
        amount: int,
        periods: int,
        idempotency_key: bytes,
        *,
        now_ms: int,
    ) -> Receipt:
        """Open the escrow of a new contract with `amount` from `client`'s balance.

        It pays `provider` in `periods` parts: ``amount // periods`` each, and
        the last period also the remainder.
        """
        contract_id = _check_contract(contract_id)
        client = _check_account(client)
        provider = _check_account(provider)
        amount = _check_amount(amount)
        periods = _check_int(periods, 1, MAX_PERIODS, Reason.INVALID_PERIODS)
        key, now = self._common(idempotency_key, now_ms)
        if client == provider:
            raise LedgerError(Reason.SAME_ACCOUNT)
        if amount < periods:
            raise LedgerError(Reason.AMOUNT_BELOW_PERIODS)

        def apply(op: _Operation) -> None:
            if _read_escrow(op.conn, contract_id) is not None:
                raise LedgerError(Reason.ESCROW_EXISTS)
            op.debit(client, amount)
            op.conn.execute(
                "INSERT INTO ledger_escrows (contract_id, client, provider, amount, periods,"
                " created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (contract_id, client, provider, amount, periods, op.now_ms),
            )
            op.emit(
                ReceiptKind.ESCROW_LOCK,
                src=client,
                dst=None,
                amount=amount,
                contract_id=contract_id,
            )

        request = _request(
            b"lock_escrow", contract_id, client, provider, _u64(amount), _u64(periods)
        )
        (receipt,) = self._run(key, now, request, apply)
        return receipt

    def deposit_collateral(
        self,
        contract_id: bytes,
        provider: bytes,
        amount: int,
        idempotency_key: bytes,
        *,
        now_ms: int,
    ) -> Receipt:
        """Move `amount` from `provider`'s balance into the contract's collateral."""
        contract_id = _check_contract(contract_id)
        provider = _check_account(provider)
        amount = _check_amount(amount)
        key, now = self._common(idempotency_key, now_ms)

        def apply(op: _Operation) -> None:
            escrow = op.open_escrow(contract_id)
            if escrow.provider != provider:
                raise LedgerError(Reason.NOT_PROVIDER)
            op.debit(provider, amount)
            op.conn.execute(
                "UPDATE ledger_escrows SET collateral = collateral + ? WHERE contract_id = ?",
                (amount, contract_id),
            )
            op.emit(
                ReceiptKind.COLLATERAL_LOCK,
                src=provider,
                dst=None,
                amount=amount,
                contract_id=contract_id,
            )

        request = _request(b"deposit_collateral", contract_id, provider, _u64(amount))
        (receipt,) = self._run(key, now, request, apply)
        return receipt

    def release_period(
        self, contract_id: bytes, period_index: int, idempotency_key: bytes, *, now_ms: int
    ) -> Receipt:
        """Pay period `period_index`'s part to the provider; each period is paid at most once.

        The payment is the period's scheduled part, or what is left in the
        escrow after penalties if that is less.
        """
        contract_id = _check_contract(contract_id)
        period_index = _check_int(period_index, 0, MAX_AMOUNT, Reason.INVALID_PERIOD)
        key, now = self._common(idempotency_key, now_ms)

        def apply(op: _Operation) -> None:
            escrow = op.open_escrow(contract_id)
            part = escrow.period_amount(period_index)  # refuses an index out of range
            if period_index in escrow.released_periods:
                raise LedgerError(Reason.PERIOD_RELEASED)
            pay = min(part, escrow.escrow_remaining)
            if pay == 0:
                raise LedgerError(Reason.ESCROW_EXHAUSTED)
            op.conn.execute(
                "UPDATE ledger_escrows SET released = released + ? WHERE contract_id = ?",
                (pay, contract_id),
            )
            op.credit(escrow.provider, pay)
            receipt = op.emit(
                ReceiptKind.RELEASE,
                src=None,
                dst=escrow.provider,
                amount=pay,
                contract_id=contract_id,
                period=period_index,
            )
            # The primary key (contract_id, period) refuses a second release
            # even if the check above were wrong.
            op.conn.execute(
                "INSERT INTO ledger_releases (contract_id, period, receipt_id) VALUES (?, ?, ?)",
                (contract_id, period_index, receipt.id),
            )

        request = _request(b"release_period", contract_id, _u64(period_index))
        (receipt,) = self._run(key, now, request, apply)
        return receipt

    def penalise(
        self, contract_id: bytes, amount: int, idempotency_key: bytes, *, now_ms: int
    ) -> tuple[Receipt, ...]:
        """Pay `amount` to the client: from the remaining escrow first, then the collateral.

        One receipt per source drawn on (one or two). Refused if `amount` is
        more than escrow and collateral hold together.
        """
        contract_id = _check_contract(contract_id)
        amount = _check_amount(amount)
        key, now = self._common(idempotency_key, now_ms)

        def apply(op: _Operation) -> None:
            escrow = op.open_escrow(contract_id)
            from_escrow = min(amount, escrow.escrow_remaining)
            from_collateral = amount - from_escrow
            if from_collateral > escrow.collateral_remaining:
                raise LedgerError(Reason.BEYOND_ESCROW)
            op.conn.execute(
                "UPDATE ledger_escrows SET penalised_escrow = penalised_escrow + ?,"
                " penalised_collateral = penalised_collateral + ? WHERE contract_id = ?",
                (from_escrow, from_collateral, contract_id),
            )
            op.credit(escrow.client, amount)
            for kind, part in (
                (ReceiptKind.PENALTY_ESCROW, from_escrow),
                (ReceiptKind.PENALTY_COLLATERAL, from_collateral),
            ):
                if part:
                    op.emit(kind, src=None, dst=escrow.client, amount=part, contract_id=contract_id)

        return self._run(key, now, _request(b"penalise", contract_id, _u64(amount)), apply)

    def refund(
        self, contract_id: bytes, idempotency_key: bytes, *, now_ms: int
    ) -> tuple[Receipt, ...]:
        """Terminate: remaining escrow to the client, remaining collateral to the provider.

        Closes the escrow for good. One receipt per non-zero amount returned
        (zero, one or two).
        """
        contract_id = _check_contract(contract_id)
        key, now = self._common(idempotency_key, now_ms)

        def apply(op: _Operation) -> None:
            escrow = op.open_escrow(contract_id)
            to_client = escrow.escrow_remaining
            to_provider = escrow.collateral_remaining
            op.conn.execute(
                "UPDATE ledger_escrows SET refunded_escrow = refunded_escrow + ?,"
                " refunded_collateral = refunded_collateral + ?, closed = 1, closed_ms = ?"
                " WHERE contract_id = ?",
                (to_client, to_provider, op.now_ms, contract_id),
            )
            for kind, dst, part in (
                (ReceiptKind.REFUND_ESCROW, escrow.client, to_client),
                (ReceiptKind.REFUND_COLLATERAL, escrow.provider, to_provider),
            ):
                if part:
                    op.credit(dst, part)
                    op.emit(kind, src=None, dst=dst, amount=part, contract_id=contract_id)

        return self._run(key, now, _request(b"refund", contract_id), apply)

    # -- reading -----------------------------------------------------------------

    def balance(self, account: bytes) -> int:
        account = _check_account(account)
        with self._lock:
            row = self._conn.execute(
                "SELECT balance FROM ledger_accounts WHERE account = ?", (account,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def escrow(self, contract_id: bytes) -> Escrow | None:
        contract_id = _check_contract(contract_id)
        with self._lock:
            return _read_escrow(self._conn, contract_id)

    def escrowed_total(self, account: bytes) -> int:
        """Escrow still locked in open contracts where `account` is the client."""
        account = _check_account(account)
        with self._lock:
            (total,) = self._conn.execute(
                "SELECT COALESCE(SUM(amount - released - penalised_escrow - refunded_escrow), 0)"
                " FROM ledger_escrows WHERE client = ? AND closed = 0",
                (account,),
            ).fetchone()
        return int(total)

    def receipts(self, account: bytes, limit: int = 100) -> list[Receipt]:
        """The newest `limit` receipts that debit or credit `account`, newest first."""
        account = _check_account(account)
        limit = _check_int(limit, 1, MAX_AMOUNT, Reason.INVALID_LIMIT)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_RECEIPT_COLUMNS} FROM ledger_receipts WHERE src = ? OR dst = ?"
                " ORDER BY id DESC LIMIT ?",
                (account, account, limit),
            ).fetchall()
        return [_receipt_from_row(row) for row in rows]

    def contract_receipts(self, contract_id: bytes) -> list[Receipt]:
        """Every receipt of the contract, oldest first."""
        contract_id = _check_contract(contract_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_RECEIPT_COLUMNS} FROM ledger_receipts WHERE contract_id = ? ORDER BY id",
                (contract_id,),
            ).fetchall()
        return [_receipt_from_row(row) for row in rows]

    def total_minted(self) -> int:
        with self._lock:
            (minted,) = self._conn.execute("SELECT minted FROM ledger_totals").fetchone()
        return int(minted)

    def check_invariant(self) -> None:
        """Raise `InvariantViolation` unless the books balance.

        Checks, on one consistent snapshot:

        1. balances + open escrow + collateral == total minted == sum of mint receipts;
        2. every balance equals its receipts' credits minus debits;
        3. every escrow's and collateral's columns equal the sums of its receipts;
        4. no period of any contract has more than one release receipt, and
           each release receipt has its row in ``ledger_releases``.
        """
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._check_invariant()
            finally:
                self._conn.execute("ROLLBACK")

    def _check_invariant(self) -> None:
        conn = self._conn

        def scalar(sql: str) -> int:
            (value,) = conn.execute(sql).fetchone()
            return int(value)

        minted = scalar("SELECT minted FROM ledger_totals")
        balances = scalar("SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts")
        locked = scalar(
            "SELECT COALESCE(SUM(amount - released - penalised_escrow - refunded_escrow"
            " + collateral - penalised_collateral - refunded_collateral), 0) FROM ledger_escrows"
        )
        if balances + locked != minted:
            raise InvariantViolation(
                f"balances {balances} + escrow and collateral {locked} != minted {minted}"
            )
        minted_receipts = scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_receipts WHERE kind IN ('mint', 'inbound')"
        )
        if minted_receipts != minted:
            raise InvariantViolation(f"mint receipts {minted_receipts} != minted {minted}")

        # 2. Balances rebuilt from the receipts.
        flows: dict[bytes, int] = {}
        for account, total in conn.execute(
            "SELECT dst, SUM(amount) FROM ledger_receipts WHERE dst IS NOT NULL GROUP BY dst"
        ):
            flows[account] = flows.get(account, 0) + int(total)
        for account, total in conn.execute(
            # An inbound receipt's payer is an account of another book.
            "SELECT src, SUM(amount) FROM ledger_receipts"
            " WHERE src IS NOT NULL AND kind <> 'inbound' GROUP BY src"
        ):
            flows[account] = flows.get(account, 0) - int(total)
        stored = {
            bytes(account): int(balance)
            for account, balance in conn.execute(
                "SELECT account, balance FROM ledger_accounts WHERE balance <> 0"
            )
        }
        if {a: b for a, b in flows.items() if b != 0} != stored:
            raise InvariantViolation("balances differ from the sums of their receipts")

        # 3. Escrow columns rebuilt from the receipts.
        column_of = {
            ReceiptKind.ESCROW_LOCK: "amount",
            ReceiptKind.COLLATERAL_LOCK: "collateral",
            ReceiptKind.RELEASE: "released",
            ReceiptKind.PENALTY_ESCROW: "penalised_escrow",
            ReceiptKind.PENALTY_COLLATERAL: "penalised_collateral",
            ReceiptKind.REFUND_ESCROW: "refunded_escrow",
            ReceiptKind.REFUND_COLLATERAL: "refunded_collateral",
        }
        sums: dict[tuple[bytes, str], int] = {}
        for contract_id, kind, total in conn.execute(
            "SELECT contract_id, kind, SUM(amount) FROM ledger_receipts"
            # Inbound receipts name the payer's contract; no escrow here.
            " WHERE contract_id IS NOT NULL AND kind <> 'inbound' GROUP BY contract_id, kind"
        ):
            sums[(bytes(contract_id), column_of[ReceiptKind(kind)])] = int(total)
        columns = list(dict.fromkeys(column_of.values()))
        for row in conn.execute(f"SELECT contract_id, {', '.join(columns)} FROM ledger_escrows"):
            contract_id = bytes(row[0])
            for column, value in zip(columns, row[1:], strict=True):
                if sums.pop((contract_id, column), 0) != value:
                    raise InvariantViolation(f"escrow {column} differs from its receipts")
        if sums:
            raise InvariantViolation("receipts name a contract with no escrow")

        # 4. Each period paid at most once, and every payment on record.
        twice = conn.execute(
            "SELECT 1 FROM ledger_receipts WHERE kind = 'release'"
            " GROUP BY contract_id, period HAVING COUNT(*) > 1 LIMIT 1"
        ).fetchone()
        if twice is not None:
            raise InvariantViolation("a period was released twice")
        unrecorded = conn.execute(
            "SELECT 1 FROM ledger_receipts AS r WHERE kind = 'release' AND NOT EXISTS"
            " (SELECT 1 FROM ledger_releases AS l WHERE l.contract_id = r.contract_id"
            " AND l.period = r.period AND l.receipt_id = r.id) LIMIT 1"
        ).fetchone()
        releases = scalar("SELECT COUNT(*) FROM ledger_releases")
        release_receipts = scalar("SELECT COUNT(*) FROM ledger_receipts WHERE kind = 'release'")
        if unrecorded is not None or releases != release_receipts:
            raise InvariantViolation("release receipts and released periods disagree")
