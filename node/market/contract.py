"""Storage contracts: signed terms and a replicated, table-driven state machine.

Theory of operation
-------------------
The seed's lifecycle is "Quote -> Contract -> Active -> Monitoring ->
Completion -> Settlement, with Violation -> Penalty -> Resolution". Here:

==============  =============================================================
seed            this module
==============  =============================================================
Quote           not a state: the provider's price quote is named in the terms
                (``quote_id``, ``quote_valid_until_ms``) and must still be
                valid when the provider countersigns
Contract        ``PROPOSED``: terms signed by the client (`open_contract`)
Active          ``ACTIVE``: the provider countersigned; the client's escrow
                and the provider's collateral are locked
Monitoring      ``MONITORING``: the first audit period has started; audits
                give each period a verdict, passed periods are paid
Completion      ``COMPLETED``: the duration is over, every period judged
Settlement      ``SETTLED``: final payment, refund and collateral return
Violation       ``VIOLATION``: a period failed its audit or its SLA
Penalty         ``PENALISED``: the penalty for that period was taken from the
                provider's collateral
Resolution      the ``RESOLVE`` event: back to ``MONITORING`` -- or the
                ``TERMINATE`` event: to ``TERMINATED``
==============  =============================================================

plus ``REFUSED`` (the provider declined, or the client withdrew, a proposal)
and ``TERMINATED`` (ended early; still to be settled).

Everything that happens to a contract after the proposal is a `Transition`:
contract ID, sequence number, event, a small payload, a timestamp chosen by
the signer, and Ed25519 signatures. `apply` accepts a transition only if

1. the contract is not finished (``SETTLED`` / ``REFUSED``) and the transition
   names this contract;
2. its sequence is exactly one more than the current one (no gaps, no
   replays);
3. ``(state, event)`` is a key of `TRANSITIONS`, the literal table below;
4. its signatures come from the roles `REQUIRED_SIGNERS` names for the event
   and each verifies over `transition_signing_bytes`;
5. its timestamp does not go backwards and is not in the future as seen by
   this replica (``now_ms + MAX_CLOCK_SKEW_MS``);
6. the event's preconditions hold (documented at `_check_preconditions`).

Otherwise it raises `ContractError` and, since `ContractState` is immutable,
nothing changed. Who signs what: the client is the auditor and the payer, so
it alone signs audit verdicts, violation reports, penalties and payment
releases; the provider alone countersigns; either party may refuse, start
monitoring, resolve, terminate or complete; renewal takes both; settlement
takes the client, and both after an early termination.

Why replicas agree (SPEC section 6, "ContractDeploy/Query/Execute"): a
contract is replicated on the R nodes closest to its ID. Every decision in
`apply` depends only on the previous state and the transition itself -- time
preconditions use the transition's signed ``issued_ms``, never the replica's
clock -- so replicas that apply the same transitions in the same order reach
the same state, and `state_digest` lets them compare. The replica's clock is
consulted for one check only, that ``issued_ms`` is not in its future; since
clocks only move forward, a replica that applies the same history later
accepts it too. Amounts are not chosen by the signer: the payload must carry
exactly the amount the terms dictate (`period_payment`, `penalty_due`,
`final_payout`), so a signature is an agreement to numbers every replica
computes the same way.

Limits of the model: the client signs audit verdicts, so a dishonest client
can withhold a pass; the provider's remedy is to stop serving and terminate,
and reputation of clients is outside this module. ``issued_ms`` is as honest
as its signer's clock: the quote expiry stops a countersign the provider
dates after ``quote_valid_until_ms``, and a client that wants a stale
proposal gone should ``REFUSE`` (withdraw) it, which no later countersign can
follow.

This module is pure: no I/O, no clock, no networking.

Terms encoding (version 1)
--------------------------
Integers are unsigned big-endian; ``bytes16`` is a 2-byte length and then
that many bytes::

    domain             TERMS_DOMAIN (30 bytes)
    version            1 byte   = 1
    client             bytes16  1..MAX_PARTY_ID_SIZE bytes (peer / identity ID)
    provider           bytes16  1..MAX_PARTY_ID_SIZE bytes, not the client
    client key         32 bytes Ed25519 public key (RFC 8032), not small order
    provider key       32 bytes Ed25519 public key, not the client's
    quote id           bytes16  1..MAX_QUOTE_ID_SIZE bytes
    quote valid until  8 bytes  ms since the Unix epoch
    start              8 bytes  ms since the Unix epoch
    duration           8 bytes  ms, a whole number of periods
    period             8 bytes  ms, audit and payment period
    price              8 bytes  micro-tokens for the whole duration
    escrow             8 bytes  micro-tokens locked by the client, >= price
    collateral         8 bytes  micro-tokens locked by the provider
    penalty            8 bytes  micro-tokens per failed period
    uptime             2 bytes  SLA, basis points
    retrieval          4 bytes  SLA, ms (p95)
    integrity          2 bytes  SLA, basis points
    audits per period  2 bytes  1..MAX_AUDITS_PER_PERIOD
    leaves per audit   2 bytes  1..MAX_CHALLENGE_LEAVES
    leaf size          4 bytes  Merkle leaf size (see node.market.audit)
    total size         8 bytes  bytes, = sum of shard sizes
    shard count        2 bytes  1..MAX_SHARDS, then for each shard:
      address          32 bytes BLAKE3 of the shard
      merkle root      32 bytes audit root (node.market.audit.merkle_root)
      size             8 bytes  1.. bytes

Shard addresses are distinct; nothing may follow the last shard. Contract
ID = BLAKE3-256 of the whole encoding, domain included. The client's proposal
signature is Ed25519 over ``PROPOSAL_DOMAIN || contract ID``.

Transition signing bytes (version 1)::

    domain             TRANSITION_DOMAIN (35 bytes)
    contract id        32 bytes
    sequence           8 bytes  1..
    issued             8 bytes  ms since the Unix epoch
    event              1 byte   `Event` code
    period             4 bytes  period index, or 0xFFFFFFFF for none
    amount             8 bytes  micro-tokens
    digest length      1 byte   0 or 32, then the digest (audit evidence)
    reason             bytes16  UTF-8, at most MAX_REASON_SIZE bytes

Transition encoding (`encode_transition` / `decode_transition`)::

    signing bytes      as above
    signature count    1 byte   0..MAX_SIGNATURES (2)
    each signature     1 byte role (1 client, 2 provider), then 64 bytes Ed25519

Roles are strictly ascending (as `sign_transition` keeps them), so a
transition has exactly one encoding; nothing may follow the last signature.
At most MAX_TRANSITION_SIZE bytes.

Contract record (version 1; `encode_contract_record`; the DHT value under
``/zhtp/contract/<contract id>``)::

    domain             RECORD_DOMAIN (31 bytes)
    version            1 byte   = 1
    terms              4-byte length 1..MAX_TERMS_SIZE, then `encode_terms` bytes
    client signature   bytes16  exactly 64 bytes: the proposal signature
    transition count   2 bytes  0..MAX_RECORD_TRANSITIONS (4096)
    each transition    bytes16  1..MAX_TRANSITION_SIZE bytes of `encode_transition`

in sequence order, nothing after the last; the whole record is at most
MAX_RECORD_SIZE (1 MiB). A contract whose history would outgrow either bound
cannot be published; at typical sizes (~200 bytes a transition) that is some
4000 transitions, about 2000 audit periods with one pass and one release each.
`replay` is the one way to read a record: decode the terms, `open_contract`,
then `apply` each transition in order -- the same rules as a live replica.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Final

import blake3
from Crypto.Signature import eddsa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node.market.audit import MAX_CHALLENGE_LEAVES, MAX_LEAF_SIZE, MIN_LEAF_SIZE
from node.market.quality import Sla

__all__ = [
    "DIGEST_SIZE",
    "MAX_CLOCK_SKEW_MS",
    "MAX_PERIODS",
    "MAX_REASON_SIZE",
    "MAX_RECORD_SIZE",
    "MAX_RECORD_TRANSITIONS",
    "MAX_SHARDS",
    "MAX_TRANSITION_SIZE",
    "PROPOSAL_DOMAIN",
    "RECORD_DOMAIN",
    "REQUIRED_SIGNERS",
    "SIGNATURE_SIZE",
    "TERMS_DOMAIN",
    "TRANSITIONS",
    "TRANSITION_DOMAIN",
    "ContractError",
    "ContractRecord",
    "ContractState",
    "ContractTerms",
    "Event",
    "ReplayError",
    "Role",
    "Settlement",
    "ShardTerm",
    "State",
    "Transition",
    "apply",
    "canonical_transition",
    "compute_contract_id",
    "contract_record",
    "countersign",
    "decode_contract_record",
    "decode_terms",
    "decode_transition",
    "encode_contract_record",
    "encode_terms",
    "encode_transition",
    "final_payout",
    "make_transition",
    "open_contract",
    "penalty_due",
    "period_payment",
    "periods_in_term",
    "replay",
    "seal_terms",
    "sign_proposal",
    "sign_transition",
    "state_digest",
    "transition_signing_bytes",
]

TERMS_DOMAIN: Final = b"zhtp/market/contract-terms/v1\x00"
PROPOSAL_DOMAIN: Final = b"zhtp/market/contract-proposal/v1\x00"
TRANSITION_DOMAIN: Final = b"zhtp/market/contract-transition/v1\x00"
STATE_DOMAIN: Final = b"zhtp/market/contract-state/v1\x00"
TERMS_VERSION: Final = 1

DIGEST_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_PARTY_ID_SIZE: Final = 128
MAX_QUOTE_ID_SIZE: Final = 64
MAX_SHARDS: Final = 1024
MAX_PERIODS: Final = 10_000  # over the whole life of a contract, renewals included
MAX_AUDITS_PER_PERIOD: Final = 1_000
MAX_REASON_SIZE: Final = 256
MAX_CLOCK_SKEW_MS: Final = 60_000
MAX_U64: Final = (1 << 63) - 1  # fits SQLite's INTEGER too
MAX_U32: Final = (1 << 32) - 1
NO_PERIOD: Final = MAX_U32
MAX_SIGNATURES: Final = 2


class ContractError(Exception):
    """A refused transition or invalid terms; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the lifecycle tables ------------------------------------------------------


class State(StrEnum):
    PROPOSED = "proposed"
    REFUSED = "refused"
    ACTIVE = "active"
    MONITORING = "monitoring"
    VIOLATION = "violation"
    PENALISED = "penalised"
    COMPLETED = "completed"
    TERMINATED = "terminated"
    SETTLED = "settled"


class Event(IntEnum):
    """Transition events; the values are the wire codes."""

    COUNTERSIGN = 1
    REFUSE = 2
    START_MONITORING = 3
    AUDIT_PASSED = 4
    AUDIT_FAILED = 5
    VIOLATION_REPORT = 6
    PENALTY_APPLIED = 7
    RESOLVE = 8
    PAYMENT_RELEASE = 9
    RENEW = 10
    TERMINATE = 11
    COMPLETE = 12
    SETTLE = 13


class Role(IntEnum):
    CLIENT = 1
    PROVIDER = 2


# (state, event) -> next state. A pair that is not a key is refused.
TRANSITIONS: Final[Mapping[tuple[State, Event], State]] = {
    (State.PROPOSED, Event.COUNTERSIGN): State.ACTIVE,
    (State.PROPOSED, Event.REFUSE): State.REFUSED,
    (State.ACTIVE, Event.START_MONITORING): State.MONITORING,
    (State.ACTIVE, Event.TERMINATE): State.TERMINATED,
    (State.MONITORING, Event.AUDIT_PASSED): State.MONITORING,
    (State.MONITORING, Event.AUDIT_FAILED): State.VIOLATION,
    (State.MONITORING, Event.VIOLATION_REPORT): State.VIOLATION,
    (State.MONITORING, Event.PAYMENT_RELEASE): State.MONITORING,
    (State.MONITORING, Event.RENEW): State.MONITORING,
    (State.MONITORING, Event.TERMINATE): State.TERMINATED,
    (State.MONITORING, Event.COMPLETE): State.COMPLETED,
    (State.VIOLATION, Event.PENALTY_APPLIED): State.PENALISED,
    (State.VIOLATION, Event.PAYMENT_RELEASE): State.VIOLATION,
    (State.VIOLATION, Event.TERMINATE): State.TERMINATED,
    (State.PENALISED, Event.RESOLVE): State.MONITORING,
    (State.PENALISED, Event.PAYMENT_RELEASE): State.PENALISED,
    (State.PENALISED, Event.TERMINATE): State.TERMINATED,
    (State.COMPLETED, Event.PAYMENT_RELEASE): State.COMPLETED,
    (State.COMPLETED, Event.RENEW): State.MONITORING,
    (State.COMPLETED, Event.SETTLE): State.SETTLED,
    (State.TERMINATED, Event.PAYMENT_RELEASE): State.TERMINATED,
    (State.TERMINATED, Event.SETTLE): State.SETTLED,
}

_CLIENT: Final = frozenset({Role.CLIENT})
_PROVIDER: Final = frozenset({Role.PROVIDER})
_BOTH: Final = frozenset({Role.CLIENT, Role.PROVIDER})

# event -> the sets of roles that may sign it: the transition must carry a
# valid signature from every role of at least one set, and none from a role
# outside all of them.
REQUIRED_SIGNERS: Final[Mapping[Event, tuple[frozenset[Role], ...]]] = {
    Event.COUNTERSIGN: (_PROVIDER,),
    Event.REFUSE: (_CLIENT, _PROVIDER),
    Event.START_MONITORING: (_CLIENT, _PROVIDER),
    Event.AUDIT_PASSED: (_CLIENT,),
    Event.AUDIT_FAILED: (_CLIENT,),
    Event.VIOLATION_REPORT: (_CLIENT,),
    Event.PENALTY_APPLIED: (_CLIENT,),
    Event.RESOLVE: (_CLIENT, _PROVIDER),
    Event.PAYMENT_RELEASE: (_CLIENT,),
    Event.RENEW: (_BOTH,),
    Event.TERMINATE: (_CLIENT, _PROVIDER),
    Event.COMPLETE: (_CLIENT, _PROVIDER),
    Event.SETTLE: (_CLIENT, _BOTH),  # and both after TERMINATED (a precondition)
}

TERMINAL_STATES: Final = frozenset({State.SETTLED, State.REFUSED})
# Events that may be dated before the contract's start.
_BEFORE_START_OK: Final = frozenset(
    {Event.COUNTERSIGN, Event.REFUSE, Event.TERMINATE, Event.SETTLE}
)
_PERIOD_EVENTS: Final = frozenset(
    {
        Event.AUDIT_PASSED,
        Event.AUDIT_FAILED,
        Event.VIOLATION_REPORT,
        Event.PENALTY_APPLIED,
        Event.PAYMENT_RELEASE,
    }
)
_VERDICT_EVENTS: Final = frozenset({Event.AUDIT_PASSED, Event.AUDIT_FAILED, Event.VIOLATION_REPORT})


# -- terms -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardTerm:
    address: bytes  # BLAKE3-256 of the shard
    merkle_root: bytes  # node.market.audit.merkle_root of the shard
    size: int


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """What both parties sign. Build with `seal_terms` so ``contract_id`` is right."""

    client: bytes
    provider: bytes
    client_public_key: bytes
    provider_public_key: bytes
    shards: tuple[ShardTerm, ...]
    total_size: int
    start_ms: int
    duration_ms: int
    period_ms: int
    price_micro_tokens: int
    escrow_micro_tokens: int
    collateral_micro_tokens: int
    penalty_micro_tokens: int  # taken from collateral per failed period
    quote_id: bytes
    quote_valid_until_ms: int
    sla: Sla = field(default_factory=Sla)
    audits_per_period: int = 4
    leaves_per_audit: int = 16
    leaf_size: int = 4096
    contract_id: bytes = b""  # BLAKE3 of `encode_terms`; see `seal_terms`

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


def _int(what: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(f"{what} is not an int")
    if not low <= value <= high:
        raise ContractError(f"{what} {value} outside {low}..{high}")
    return value


def _bytes(what: str, value: object, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise ContractError(f"{what} is not bytes")
    if not low <= len(value) <= high:
        if low == high:
            raise ContractError(f"{what} must be {low} bytes, got {len(value)}")
        raise ContractError(f"{what} must be {low}..{high} bytes, got {len(value)}")
    return value


def _public_key(what: str, raw: bytes) -> Ed25519PublicKey:
    # A small-order key "verifies" forged signatures on any message.
    try:
        point = eddsa.import_public_key(raw).pointQ
    except ValueError:
        raise ContractError(f"{what} is not an Ed25519 public key") from None
    if (point * 8).is_point_at_infinity():
        raise ContractError(f"{what} has small order")
    return Ed25519PublicKey.from_public_bytes(raw)


def _check_terms(terms: ContractTerms) -> None:
    if not isinstance(terms, ContractTerms):
        raise ContractError("terms are not ContractTerms")
    _bytes("client", terms.client, 1, MAX_PARTY_ID_SIZE)
    _bytes("provider", terms.provider, 1, MAX_PARTY_ID_SIZE)
    if terms.client == terms.provider:
        raise ContractError("client and provider are the same party")
    _bytes("client public key", terms.client_public_key, PUBLIC_KEY_SIZE, PUBLIC_KEY_SIZE)
    _bytes("provider public key", terms.provider_public_key, PUBLIC_KEY_SIZE, PUBLIC_KEY_SIZE)
    if terms.client_public_key == terms.provider_public_key:
        raise ContractError("client and provider keys are the same")
    _public_key("client public key", terms.client_public_key)
    _public_key("provider public key", terms.provider_public_key)
    if not isinstance(terms.shards, tuple):
        raise ContractError("shards are not a tuple")
    if not 1 <= len(terms.shards) <= MAX_SHARDS:
        raise ContractError(f"a contract names 1..{MAX_SHARDS} shards, not {len(terms.shards)}")
    total = 0
    addresses = set()
    for shard in terms.shards:
        if not isinstance(shard, ShardTerm):
            raise ContractError("shard is not a ShardTerm")
        _bytes("shard address", shard.address, DIGEST_SIZE, DIGEST_SIZE)
        _bytes("shard merkle root", shard.merkle_root, DIGEST_SIZE, DIGEST_SIZE)
        total += _int("shard size", shard.size, 1, MAX_U64)
        addresses.add(shard.address)
    if len(addresses) != len(terms.shards):
        raise ContractError("shard addresses repeat")
    if _int("total size", terms.total_size, 1, MAX_U64) != total:
        raise ContractError("total size is not the sum of the shard sizes")
    _int("start", terms.start_ms, 0, MAX_U64)
    period = _int("period", terms.period_ms, 1, MAX_U64)
    duration = _int("duration", terms.duration_ms, 1, MAX_U64)
    if duration % period:
        raise ContractError("duration is not a whole number of periods")
    _int("periods", duration // period, 1, MAX_PERIODS)
    _int("end", terms.start_ms + duration, 0, MAX_U64)
    price = _int("price", terms.price_micro_tokens, 0, MAX_U64)
    if _int("escrow", terms.escrow_micro_tokens, 0, MAX_U64) < price:
        raise ContractError("escrow does not cover the price")
    _int("collateral", terms.collateral_micro_tokens, 0, MAX_U64)
    _int("penalty", terms.penalty_micro_tokens, 0, MAX_U64)
    if not isinstance(terms.sla, Sla):
        raise ContractError("sla is not an Sla")
    _int("SLA uptime", terms.sla.uptime_bp, 0, 10_000)
    _int("SLA retrieval", terms.sla.retrieval_ms, 1, MAX_U32)
    _int("SLA integrity", terms.sla.integrity_bp, 0, 10_000)
    _int("audits per period", terms.audits_per_period, 1, MAX_AUDITS_PER_PERIOD)
    _int("leaves per audit", terms.leaves_per_audit, 1, MAX_CHALLENGE_LEAVES)
    leaf = _int("leaf size", terms.leaf_size, MIN_LEAF_SIZE, MAX_LEAF_SIZE)
    if leaf & (leaf - 1):
        raise ContractError("leaf size is not a power of two")
    _bytes("quote id", terms.quote_id, 1, MAX_QUOTE_ID_SIZE)
    _int("quote valid until", terms.quote_valid_until_ms, 0, MAX_U64)


_FIXED = struct.Struct(">QQQQQQQQHIHHHIQH")
_SHARD = struct.Struct(">32s32sQ")
MAX_TERMS_SIZE: Final = (
    len(TERMS_DOMAIN)
    + 1
    + 2 * (2 + MAX_PARTY_ID_SIZE)
    + 2 * PUBLIC_KEY_SIZE
    + (2 + MAX_QUOTE_ID_SIZE)
    + _FIXED.size
    + MAX_SHARDS * _SHARD.size
)


def _bytes16(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def encode_terms(terms: ContractTerms) -> bytes:
    """The canonical encoding of `terms` (module docstring); ``contract_id`` is not in it."""
    _check_terms(terms)
    parts = [
        TERMS_DOMAIN,
        bytes([TERMS_VERSION]),
        _bytes16(terms.client),
        _bytes16(terms.provider),
        terms.client_public_key,
        terms.provider_public_key,
        _bytes16(terms.quote_id),
        _FIXED.pack(
            terms.quote_valid_until_ms,
            terms.start_ms,
            terms.duration_ms,
            terms.period_ms,
            terms.price_micro_tokens,
            terms.escrow_micro_tokens,
            terms.collateral_micro_tokens,
            terms.penalty_micro_tokens,
            terms.sla.uptime_bp,
            terms.sla.retrieval_ms,
            terms.sla.integrity_bp,
            terms.audits_per_period,
            terms.leaves_per_audit,
            terms.leaf_size,
            terms.total_size,
            len(terms.shards),
        ),
    ]
    for shard in terms.shards:
        parts.append(shard.address + shard.merkle_root + struct.pack(">Q", shard.size))
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes, kind: str = "terms") -> None:
        self.data = data
        self.offset = 0
        self.kind = kind

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise ContractError(f"{self.kind} truncated in {what}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def bytes16(self, what: str, low: int, high: int) -> bytes:
        (length,) = struct.unpack(">H", self.take(2, what))
        if not low <= length <= high:
            raise ContractError(f"{what} must be {low}..{high} bytes, got {length}")
        return self.take(length, what)


def decode_terms(data: bytes) -> ContractTerms:
    """Parse and fully validate an encoding from `encode_terms`; ``contract_id`` is computed."""
    if not isinstance(data, bytes):
        raise ContractError("terms encoding is not bytes")
    if len(data) > MAX_TERMS_SIZE:
        raise ContractError("terms encoding too long")
    reader = _Reader(data)
    if reader.take(len(TERMS_DOMAIN), "domain") != TERMS_DOMAIN:
        raise ContractError("not a contract terms encoding")
    if reader.take(1, "version")[0] != TERMS_VERSION:
        raise ContractError("unknown contract terms version")
    client = reader.bytes16("client", 1, MAX_PARTY_ID_SIZE)
    provider = reader.bytes16("provider", 1, MAX_PARTY_ID_SIZE)
    client_key = reader.take(PUBLIC_KEY_SIZE, "client public key")
    provider_key = reader.take(PUBLIC_KEY_SIZE, "provider public key")
    quote_id = reader.bytes16("quote id", 1, MAX_QUOTE_ID_SIZE)
    (
        valid_until,
        start,
        duration,
        period,
        price,
        escrow,
        collateral,
        penalty,
        uptime,
        retrieval,
        integrity,
        audits,
        leaves,
        leaf_size,
        total_size,
        count,
    ) = _FIXED.unpack(reader.take(_FIXED.size, "fixed fields"))
    if not 1 <= count <= MAX_SHARDS:
        raise ContractError(f"a contract names 1..{MAX_SHARDS} shards, not {count}")
    shards = tuple(
        ShardTerm(*_SHARD.unpack(reader.take(_SHARD.size, "shards"))) for _ in range(count)
    )
    if reader.offset != len(data):
        raise ContractError("trailing bytes after the terms")
    try:
        sla = Sla(uptime_bp=uptime, retrieval_ms=retrieval, integrity_bp=integrity)
    except ValueError as exc:
        raise ContractError(str(exc)) from None
    terms = ContractTerms(
        client=client,
        provider=provider,
        client_public_key=client_key,
        provider_public_key=provider_key,
        shards=shards,
        total_size=total_size,
        start_ms=start,
        duration_ms=duration,
        period_ms=period,
        price_micro_tokens=price,
        escrow_micro_tokens=escrow,
        collateral_micro_tokens=collateral,
        penalty_micro_tokens=penalty,
        quote_id=quote_id,
        quote_valid_until_ms=valid_until,
        sla=sla,
        audits_per_period=audits,
        leaves_per_audit=leaves,
        leaf_size=leaf_size,
    )
    _check_terms(terms)  # the u64 fields may still exceed MAX_U64 and so on
    return replace(terms, contract_id=_hash(data))


def _hash(data: bytes) -> bytes:
    digest: bytes = blake3.blake3(data).digest()
    return digest


def compute_contract_id(terms: ContractTerms) -> bytes:
    """BLAKE3-256 of the canonical encoding: what the contract ID must be."""
    return _hash(encode_terms(terms))


def seal_terms(terms: ContractTerms) -> ContractTerms:
    """`terms` with ``contract_id`` set from their encoding."""
    return replace(terms, contract_id=compute_contract_id(terms))


def _public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_proposal(terms: ContractTerms, client_private_key: Ed25519PrivateKey) -> bytes:
    """The client's signature on sealed `terms`: Ed25519 over PROPOSAL_DOMAIN || contract ID."""
    if compute_contract_id(terms) != terms.contract_id:
        raise ContractError("contract id does not match terms")
    if _public_bytes(client_private_key) != terms.client_public_key:
        raise ValueError("this is not the client's key named in the terms")
    return client_private_key.sign(PROPOSAL_DOMAIN + terms.contract_id)


def periods_in_term(terms: ContractTerms) -> int:
    """Audit/payment periods in one term of the contract (a renewal adds as many again)."""
    return terms.duration_ms // terms.period_ms


def period_payment(terms: ContractTerms, period: int) -> int:
    """What the client pays for one passed period; the periods of a term sum to the price."""
    n = periods_in_term(terms)
    j = period % n
    price = terms.price_micro_tokens
    return price * (j + 1) // n - price * j // n


# -- transitions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    contract_id: bytes
    sequence: int
    event: Event
    issued_ms: int
    period: int | None = None
    amount_micro_tokens: int = 0
    digest: bytes = b""  # e.g. BLAKE3 of the audit evidence
    reason: str = ""
    signatures: tuple[tuple[Role, bytes], ...] = ()


def _check_transition_shape(t: Transition) -> bytes:
    """Check the transition's fields; return its reason text as UTF-8."""
    if not isinstance(t, Transition):
        raise ContractError("not a Transition")
    _bytes("contract id", t.contract_id, DIGEST_SIZE, DIGEST_SIZE)
    _int("sequence", t.sequence, 1, MAX_U64)
    if not isinstance(t.event, Event):
        raise ContractError("unknown event")
    _int("issued", t.issued_ms, 0, MAX_U64)
    if t.period is not None:
        _int("period", t.period, 0, MAX_PERIODS - 1)
    _int("amount", t.amount_micro_tokens, 0, MAX_U64)
    if not isinstance(t.digest, bytes) or len(t.digest) not in (0, DIGEST_SIZE):
        raise ContractError(f"digest must be empty or {DIGEST_SIZE} bytes")
    if not isinstance(t.reason, str):
        raise ContractError("reason is not text")
    try:
        reason = t.reason.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError("reason is not valid Unicode text") from None
    if len(reason) > MAX_REASON_SIZE:
        raise ContractError(f"reason longer than {MAX_REASON_SIZE} bytes")
    return reason


def transition_signing_bytes(t: Transition) -> bytes:
    """What each signer signs: the canonical encoding of everything but the signatures."""
    reason = _check_transition_shape(t)
    period = NO_PERIOD if t.period is None else t.period
    return b"".join(
        [
            TRANSITION_DOMAIN,
            t.contract_id,
            struct.pack(">QQBIQ", t.sequence, t.issued_ms, t.event, period, t.amount_micro_tokens),
            bytes([len(t.digest)]),
            t.digest,
            _bytes16(reason),
        ]
    )


def sign_transition(t: Transition, role: Role, private_key: Ed25519PrivateKey) -> Transition:
    """`t` with `role`'s signature added (replacing an earlier one by the same role)."""
    signature = private_key.sign(transition_signing_bytes(t))
    others = tuple((r, s) for r, s in t.signatures if r != role)
    return replace(t, signatures=tuple(sorted((*others, (role, signature)))))


# -- contract state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settlement:
    """Where the locked money went. Every figure is in micro-tokens."""

    paid_to_provider: int  # released during the contract plus the final payout
    refunded_to_client: int  # escrow not paid to the provider
    collateral_returned: int  # to the provider
    penalties_to_client: int  # from the provider's collateral


@dataclass(frozen=True, slots=True)
class ContractState:
    terms: ContractTerms
    client_signature: bytes
    state: State = State.PROPOSED
    sequence: int = 0
    last_issued_ms: int = 0
    periods_total: int = 0  # periods in all terms so far (grows with RENEW)
    escrow_micro_tokens: int = 0  # locked by the client, renewals included
    history: tuple[Transition, ...] = ()
    passed: frozenset[int] = frozenset()
    failed: frozenset[int] = frozenset()
    released: frozenset[int] = frozenset()
    penalised: frozenset[int] = frozenset()
    released_micro_tokens: int = 0
    penalties_micro_tokens: int = 0
    settlement: Settlement | None = None

    @property
    def contract_id(self) -> bytes:
        return self.terms.contract_id

    @property
    def end_ms(self) -> int:
        """When the last period (renewals included) ends."""
        return self.terms.start_ms + self.periods_total * self.terms.period_ms

    def period_start_ms(self, period: int) -> int:
        return self.terms.start_ms + period * self.terms.period_ms


def open_contract(terms: ContractTerms, client_signature: bytes) -> ContractState:
    """A contract in PROPOSED, from sealed terms and the client's proposal signature."""
    _check_terms(terms)
    if compute_contract_id(terms) != terms.contract_id:
        raise ContractError("contract id does not match terms")
    _bytes("client signature", client_signature, SIGNATURE_SIZE, SIGNATURE_SIZE)
    key = _public_key("client public key", terms.client_public_key)
    try:
        key.verify(client_signature, PROPOSAL_DOMAIN + terms.contract_id)
    except InvalidSignature:
        raise ContractError("client signature on the proposal does not verify") from None
    return ContractState(
        terms=terms,
        client_signature=client_signature,
        periods_total=periods_in_term(terms),
        escrow_micro_tokens=terms.escrow_micro_tokens,
    )


def make_transition(
    state: ContractState,
    event: Event,
    issued_ms: int,
    *,
    period: int | None = None,
    amount_micro_tokens: int = 0,
    digest: bytes = b"",
    reason: str = "",
) -> Transition:
    """An unsigned transition that follows `state` (sequence + 1)."""
    return Transition(
        contract_id=state.contract_id,
        sequence=state.sequence + 1,
        event=event,
        issued_ms=issued_ms,
        period=period,
        amount_micro_tokens=amount_micro_tokens,
        digest=digest,
        reason=reason,
    )


def countersign(
    state: ContractState, provider_private_key: Ed25519PrivateKey, issued_ms: int
) -> Transition:
    """The provider's acceptance of a proposed contract: a signed COUNTERSIGN transition."""
    if _public_bytes(provider_private_key) != state.terms.provider_public_key:
        raise ValueError("this is not the provider's key named in the terms")
    t = make_transition(state, Event.COUNTERSIGN, issued_ms)
    return sign_transition(t, Role.PROVIDER, provider_private_key)


def penalty_due(state: ContractState) -> int:
    """The penalty for one failed period: the clause, capped by the collateral left."""
    left = state.terms.collateral_micro_tokens - state.penalties_micro_tokens
    return min(state.terms.penalty_micro_tokens, left)


def final_payout(state: ContractState) -> int:
    """What settlement pays the provider: passed periods not released yet."""
    return sum(period_payment(state.terms, p) for p in state.passed - state.released)


def _check_signatures(state: ContractState, t: Transition, message: bytes) -> frozenset[Role]:
    allowed = REQUIRED_SIGNERS[t.event]
    permitted: frozenset[Role] = frozenset().union(*allowed)
    if not isinstance(t.signatures, tuple) or len(t.signatures) > MAX_SIGNATURES:
        raise ContractError("malformed signatures")
    keys = {
        Role.CLIENT: state.terms.client_public_key,
        Role.PROVIDER: state.terms.provider_public_key,
    }
    signed: set[Role] = set()
    for item in t.signatures:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ContractError("malformed signatures")
        role, signature = item
        if not isinstance(role, Role):
            raise ContractError("unknown signer role")
        if role in signed:
            raise ContractError(f"two signatures from the {role.name.lower()}")
        if role not in permitted:
            raise ContractError(f"the {role.name.lower()} may not sign {t.event.name}")
        _bytes("signature", signature, SIGNATURE_SIZE, SIGNATURE_SIZE)
        try:
            Ed25519PublicKey.from_public_bytes(keys[role]).verify(signature, message)
        except InvalidSignature:
            raise ContractError(f"{role.name.lower()} signature does not verify") from None
        signed.add(role)
    if not any(needed <= signed for needed in allowed):
        options = " or ".join(
            "+".join(r.name.lower() for r in sorted(needed)) for needed in allowed
        )
        raise ContractError(f"missing signature: {t.event.name} needs {options}")
    return frozenset(signed)


def _check_preconditions(state: ContractState, t: Transition, signed: frozenset[Role]) -> None:
    """Event-specific rules, beyond the tables.

    - COUNTERSIGN: dated no later than the quote's ``valid_until``.
    - Every event but COUNTERSIGN, REFUSE, TERMINATE and SETTLE: dated at or
      after the contract's start.
    - Period events name a period (others must not) below ``periods_total``
      whose start has passed. A period gets one verdict: AUDIT_PASSED only
      once the period has ended (a pass covers the whole period);
      AUDIT_FAILED and VIOLATION_REPORT as soon as it has begun, and they
      carry evidence: a proof digest, or a reason naming the missed term.
    - PAYMENT_RELEASE: the period passed and was not released; the amount is
      `period_payment`.
    - PENALTY_APPLIED: the period failed and was not penalised; the amount is
      `penalty_due`.
    - RENEW: the amount is the price (added to the escrow); at most
      ``MAX_PERIODS`` periods in all.
    - COMPLETE: dated at or after the end, every period has a verdict.
    - SETTLE: the amount is `final_payout`; after TERMINATED both sign.
    - Any other event carries amount 0.
    """
    terms = state.terms
    event = t.event
    if event is Event.COUNTERSIGN and t.issued_ms > terms.quote_valid_until_ms:
        raise ContractError("quote expired")
    if event not in _BEFORE_START_OK and t.issued_ms < terms.start_ms:
        raise ContractError("contract has not started")
    if event in _PERIOD_EVENTS:
        if t.period is None:
            raise ContractError(f"{event.name} needs a period")
        if t.period >= state.periods_total:
            raise ContractError(f"period {t.period} is beyond the contract")
        if t.issued_ms < state.period_start_ms(t.period):
            raise ContractError(f"period {t.period} has not begun")
    elif t.period is not None:
        raise ContractError(f"{event.name} takes no period")

    expected_amount = 0
    if event in _VERDICT_EVENTS:
        assert t.period is not None
        if t.period in state.passed or t.period in state.failed:
            raise ContractError(f"period {t.period} already has a verdict")
        if event is Event.AUDIT_PASSED and t.issued_ms < state.period_start_ms(t.period + 1):
            raise ContractError(f"period {t.period} has not ended")
        if event is not Event.VIOLATION_REPORT and len(t.digest) != DIGEST_SIZE:
            raise ContractError(f"{event.name} needs the audit evidence digest")
        if event is Event.VIOLATION_REPORT and not t.reason:
            raise ContractError("a violation report needs a reason")
    elif event is Event.PAYMENT_RELEASE:
        assert t.period is not None
        if t.period in state.released:
            raise ContractError(f"period {t.period} already released")
        if t.period not in state.passed:
            raise ContractError(f"period {t.period} has not passed its audit")
        expected_amount = period_payment(terms, t.period)
    elif event is Event.PENALTY_APPLIED:
        assert t.period is not None
        if t.period not in state.failed:
            raise ContractError(f"period {t.period} did not fail")
        if t.period in state.penalised:
            raise ContractError(f"period {t.period} already penalised")
        expected_amount = penalty_due(state)
    elif event is Event.RENEW:
        if state.periods_total + periods_in_term(terms) > MAX_PERIODS:
            raise ContractError(f"renewal would exceed {MAX_PERIODS} periods")
        if state.escrow_micro_tokens + terms.price_micro_tokens > MAX_U64:
            raise ContractError("renewal would overflow the escrow")
        expected_amount = terms.price_micro_tokens
    elif event is Event.COMPLETE:
        if t.issued_ms < state.end_ms:
            raise ContractError("contract duration is not over")
        judged = len(state.passed) + len(state.failed)
        if judged != state.periods_total:
            raise ContractError(f"{state.periods_total - judged} periods have no verdict")
    elif event is Event.SETTLE:
        if state.state is State.TERMINATED and signed != _BOTH:
            raise ContractError("settling a terminated contract needs both signatures")
        expected_amount = final_payout(state)
    if t.amount_micro_tokens != expected_amount:
        raise ContractError(f"amount {t.amount_micro_tokens}, expected {expected_amount}")


def apply(state: ContractState, transition: Transition, now_ms: int) -> ContractState:
    """The state after `transition`, or `ContractError` if it is refused (see module doc)."""
    if state.state in TERMINAL_STATES:
        raise ContractError(f"contract is {state.state}; no further transitions")
    message = transition_signing_bytes(transition)  # checks the fields' shapes
    t = transition
    if t.contract_id != state.contract_id:
        raise ContractError("transition is for another contract")
    if t.sequence <= state.sequence:
        raise ContractError(f"repeated sequence {t.sequence}, expected {state.sequence + 1}")
    if t.sequence > state.sequence + 1:
        raise ContractError(f"skipped sequence {t.sequence}, expected {state.sequence + 1}")
    next_state = TRANSITIONS.get((state.state, t.event))
    if next_state is None:
        raise ContractError(f"{t.event.name} not allowed in {state.state}")
    signed = _check_signatures(state, t, message)
    if t.issued_ms < state.last_issued_ms:
        raise ContractError("transition dated before the previous one")
    if t.issued_ms > now_ms + MAX_CLOCK_SKEW_MS:
        raise ContractError("transition dated in the future")
    _check_preconditions(state, t, signed)

    passed, failed, released, penalised = (
        state.passed,
        state.failed,
        state.released,
        state.penalised,
    )
    released_total, penalties = state.released_micro_tokens, state.penalties_micro_tokens
    periods_total, escrow = state.periods_total, state.escrow_micro_tokens
    settlement = state.settlement
    period = t.period
    if t.event is Event.AUDIT_PASSED:
        assert period is not None
        passed = passed | {period}
    elif t.event in (Event.AUDIT_FAILED, Event.VIOLATION_REPORT):
        assert period is not None
        failed = failed | {period}
    elif t.event is Event.PAYMENT_RELEASE:
        assert period is not None
        released = released | {period}
        released_total += t.amount_micro_tokens
    elif t.event is Event.PENALTY_APPLIED:
        assert period is not None
        penalised = penalised | {period}
        penalties += t.amount_micro_tokens
    elif t.event is Event.RENEW:
        periods_total += periods_in_term(state.terms)
        escrow += t.amount_micro_tokens
    elif t.event is Event.SETTLE:
        paid = released_total + t.amount_micro_tokens
        settlement = Settlement(
            paid_to_provider=paid,
            refunded_to_client=escrow - paid,
            collateral_returned=state.terms.collateral_micro_tokens - penalties,
            penalties_to_client=penalties,
        )
    return replace(
        state,
        state=next_state,
        sequence=t.sequence,
        last_issued_ms=t.issued_ms,
        periods_total=periods_total,
        escrow_micro_tokens=escrow,
        history=(*state.history, t),
        passed=passed,
        failed=failed,
        released=released,
        penalised=penalised,
        released_micro_tokens=released_total,
        penalties_micro_tokens=penalties,
        settlement=settlement,
    )


def state_digest(state: ContractState) -> bytes:
    """BLAKE3-256 over everything in `state`: replicas in agreement have equal digests."""

    def periods(values: frozenset[int]) -> bytes:
        ordered = sorted(values)
        return struct.pack(f">I{len(ordered)}I", len(ordered), *ordered)

    state_name = state.state.value.encode("ascii")
    parts = [
        STATE_DOMAIN,
        state.contract_id,
        state.client_signature,
        _bytes16(state_name),
        struct.pack(
            ">QQIQQQ",
            state.sequence,
            state.last_issued_ms,
            state.periods_total,
            state.escrow_micro_tokens,
            state.released_micro_tokens,
            state.penalties_micro_tokens,
        ),
        periods(state.passed),
        periods(state.failed),
        periods(state.released),
        periods(state.penalised),
    ]
    history = blake3.blake3()
    for t in state.history:
        encoded = encode_transition(t)
        history.update(struct.pack(">I", len(encoded)) + encoded)
    parts.append(history.digest())
    if state.settlement is None:
        parts.append(b"\x00")
    else:
        s = state.settlement
        parts.append(
            b"\x01"
            + struct.pack(
                ">QQQQ",
                s.paid_to_provider,
                s.refunded_to_client,
                s.collateral_returned,
                s.penalties_to_client,
            )
        )
    return _hash(b"".join(parts))


# -- wire encodings: transitions and contract records ----------------------------------

_TRANSITION_FIXED: Final = struct.Struct(">QQBIQ")
MAX_TRANSITION_SIZE: Final = (
    len(TRANSITION_DOMAIN)
    + DIGEST_SIZE
    + _TRANSITION_FIXED.size
    + 1
    + DIGEST_SIZE
    + 2
    + MAX_REASON_SIZE
    + 1
    + MAX_SIGNATURES * (1 + SIGNATURE_SIZE)
)
RECORD_DOMAIN: Final = b"zhtp/market/contract-record/v1\x00"
RECORD_VERSION: Final = 1
MAX_RECORD_TRANSITIONS: Final = 4096
MAX_RECORD_SIZE: Final = 1 << 20


def encode_transition(t: Transition) -> bytes:
    """`transition_signing_bytes`, then the signatures in the order `t` holds them.

    `decode_transition` accepts signatures in ascending role order only (the
    order `sign_transition` keeps); see `canonical_transition`.
    """
    parts = [transition_signing_bytes(t), bytes([len(t.signatures)])]
    for role, signature in t.signatures:
        parts.append(bytes([role]) + signature)
    return b"".join(parts)


def canonical_transition(t: Transition) -> Transition:
    """`t` with its signatures in ascending role order: the one form that decodes."""
    return replace(t, signatures=tuple(sorted(t.signatures)))


def decode_transition(data: bytes) -> Transition:
    """Parse an `encode_transition` encoding; every length and field is checked.

    Signatures are only parsed, not verified: that takes the terms (`apply`).
    ``encode_transition(decode_transition(data)) == data`` for every accepted
    `data`.
    """
    if not isinstance(data, bytes):
        raise ContractError("transition encoding is not bytes")
    if len(data) > MAX_TRANSITION_SIZE:
        raise ContractError("transition encoding too long")
    reader = _Reader(data, "transition")
    if reader.take(len(TRANSITION_DOMAIN), "domain") != TRANSITION_DOMAIN:
        raise ContractError("not a contract transition encoding")
    contract_id = reader.take(DIGEST_SIZE, "contract id")
    sequence, issued, code, period, amount = _TRANSITION_FIXED.unpack(
        reader.take(_TRANSITION_FIXED.size, "fixed fields")
    )
    try:
        event = Event(code)
    except ValueError:
        raise ContractError("unknown event code") from None
    digest_size = reader.take(1, "digest length")[0]
    if digest_size not in (0, DIGEST_SIZE):
        raise ContractError(f"digest must be empty or {DIGEST_SIZE} bytes")
    digest = reader.take(digest_size, "digest")
    raw_reason = reader.bytes16("reason", 0, MAX_REASON_SIZE)
    try:
        reason = raw_reason.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("reason is not UTF-8") from None
    count = reader.take(1, "signature count")[0]
    if count > MAX_SIGNATURES:
        raise ContractError(f"more than {MAX_SIGNATURES} signatures")
    signatures: list[tuple[Role, bytes]] = []
    for _ in range(count):
        try:
            role = Role(reader.take(1, "signer role")[0])
        except ValueError:
            raise ContractError("unknown signer role") from None
        if any(role == seen for seen, _ in signatures):
            raise ContractError(f"two signatures from the {role.name.lower()}")
        if signatures and role < signatures[-1][0]:
            raise ContractError("signatures out of role order")
        signatures.append((role, reader.take(SIGNATURE_SIZE, "signature")))
    if reader.offset != len(data):
        raise ContractError("trailing bytes after the transition")
    t = Transition(
        contract_id=contract_id,
        sequence=sequence,
        event=event,
        issued_ms=issued,
        period=None if period == NO_PERIOD else period,
        amount_micro_tokens=amount,
        digest=digest,
        reason=reason,
        signatures=tuple(signatures),
    )
    # Checks the field ranges (sequence >= 1, period < MAX_PERIODS, ...) and
    # that no second encoding of the same transition exists.
    if encode_transition(t) != data:
        raise ContractError("transition encoding is not canonical")
    return t


@dataclass(frozen=True, slots=True)
class ContractRecord:
    """A contract's whole history as published under ``/zhtp/contract/<id>``.

    ``terms`` is the `encode_terms` encoding (its BLAKE3 is the contract ID),
    ``client_signature`` the proposal signature, ``transitions`` the
    `encode_transition` encodings in sequence order. `replay` turns it into a
    `ContractState`; `contract_record` makes one from a state.
    """

    terms: bytes
    client_signature: bytes
    transitions: tuple[bytes, ...] = ()


class ReplayError(ContractError):
    """`replay` refused a record: ``index`` is the bad transition, None for the terms."""

    def __init__(self, reason: str, index: int | None) -> None:
        super().__init__(reason)
        self.index = index


def encode_contract_record(record: ContractRecord) -> bytes:
    """The record layout (module docstring); ContractError if a part is out of bounds."""
    if not isinstance(record, ContractRecord):
        raise ContractError("not a ContractRecord")
    _bytes("terms encoding", record.terms, 1, MAX_TERMS_SIZE)
    _bytes("client signature", record.client_signature, SIGNATURE_SIZE, SIGNATURE_SIZE)
    if not isinstance(record.transitions, tuple):
        raise ContractError("transitions are not a tuple")
    if len(record.transitions) > MAX_RECORD_TRANSITIONS:
        raise ContractError(f"more than {MAX_RECORD_TRANSITIONS} transitions")
    parts = [
        RECORD_DOMAIN,
        bytes([RECORD_VERSION]),
        struct.pack(">I", len(record.terms)),
        record.terms,
        _bytes16(record.client_signature),
        struct.pack(">H", len(record.transitions)),
    ]
    for raw in record.transitions:
        _bytes("transition encoding", raw, 1, MAX_TRANSITION_SIZE)
        parts.append(_bytes16(raw))
    encoded = b"".join(parts)
    if len(encoded) > MAX_RECORD_SIZE:
        raise ContractError(f"contract record larger than {MAX_RECORD_SIZE} bytes")
    return encoded


def decode_contract_record(data: bytes) -> ContractRecord:
    """Parse the record layout; checks the framing only (`replay` checks the contents)."""
    if not isinstance(data, bytes):
        raise ContractError("record encoding is not bytes")
    if len(data) > MAX_RECORD_SIZE:
        raise ContractError("contract record too large")
    reader = _Reader(data, "record")
    if reader.take(len(RECORD_DOMAIN), "domain") != RECORD_DOMAIN:
        raise ContractError("not a contract record encoding")
    if reader.take(1, "version")[0] != RECORD_VERSION:
        raise ContractError("unknown contract record version")
    (terms_size,) = struct.unpack(">I", reader.take(4, "terms length"))
    if not 1 <= terms_size <= MAX_TERMS_SIZE:
        raise ContractError("terms length out of bounds")
    terms = reader.take(terms_size, "terms")
    client_signature = reader.bytes16("client signature", SIGNATURE_SIZE, SIGNATURE_SIZE)
    (count,) = struct.unpack(">H", reader.take(2, "transition count"))
    if count > MAX_RECORD_TRANSITIONS:
        raise ContractError(f"more than {MAX_RECORD_TRANSITIONS} transitions")
    transitions = tuple(reader.bytes16("transition", 1, MAX_TRANSITION_SIZE) for _ in range(count))
    if reader.offset != len(data):
        raise ContractError("trailing bytes after the record")
    return ContractRecord(terms, client_signature, transitions)


def contract_record(state: ContractState) -> ContractRecord:
    """The record of `state`'s history (signatures in role order: `canonical_transition`)."""
    return ContractRecord(
        terms=encode_terms(state.terms),
        client_signature=state.client_signature,
        transitions=tuple(encode_transition(canonical_transition(t)) for t in state.history),
    )


def replay(record: ContractRecord, now_ms: int) -> ContractState:
    """The state a record's history leads to: `open_contract`, then `apply` each transition.

    Raises `ReplayError` (a ContractError) naming the bad transition's index,
    or index None when the terms or the proposal signature are at fault.
    """
    if not isinstance(record, ContractRecord):
        raise ReplayError("not a ContractRecord", None)
    try:
        state = open_contract(decode_terms(record.terms), record.client_signature)
    except ContractError as error:
        raise ReplayError(f"terms: {error.reason}", None) from None
    if not isinstance(record.transitions, tuple):
        raise ReplayError("transitions are not a tuple", None)
    for index, raw in enumerate(record.transitions):
        try:
            state = apply(state, decode_transition(raw), now_ms)
        except ContractError as error:
            raise ReplayError(f"transition {index}: {error.reason}", index) from None
    return state
