"""`/zhtp/contract/<contract id>` records: a storage contract's signed history.

Theory of operation
-------------------
SPEC section 6 ("ContractDeploy/Query/Execute"): a contract is a
deterministic state machine replicated on the R nodes closest to its ID. The
DHT value under ``/zhtp/contract/`` + the raw 32-byte contract ID is a
`ContractRecord` (layout: `node.market.contract`): the terms, the client's
proposal signature and every transition so far. The key is content-derived
like a manifest key -- the contract ID is the BLAKE3 of the terms -- but the
value grows as the contract runs.

Validation (`ContractRecordValidator.validate`), cheapest checks first: the
size cap; the key's shape; the framing; the terms hash to the key's contract
ID; the record has not expired; then `replay`, which opens the contract and
applies each transition with the very rules a live replica uses -- every
signature, every sequence number, every amount -- so every holder reaches the
same verdict and the same state. Reasons are fixed phrases plus the index of
a bad transition; nothing from the value is echoed.

Replay verifies up to two Ed25519 signatures per transition, so a maximal
record (MAX_RECORD_TRANSITIONS) costs on the order of a second of CPU: callers
should validate off the event loop (STYLE rule 9).

Selection: valid histories of one contract are prefixes of each other -- each
transition names its sequence and is signed by the parties over it -- unless a
party signed two different transitions for the same sequence (equivocation).
So the longest history wins: it contains every shorter honest copy. On equal
length the greatest encoded bytes win, so that even between two branches of
an equivocation every replica, given the same copies, keeps the same one;
and the two conflicting transitions, each carrying a valid signature by the
same key over the same contract ID and sequence, are evidence against the
signer that anyone can check.

Expiry (`record_expires_at_ms`): every record expires on its own, 30 days
(``grace_ms``) after the contract could last have mattered:

- a bare proposal (no transitions): after the quote's ``valid_until`` -- it
  can no longer be countersigned, only withdrawn, and a withdrawal is a new,
  longer record with its own expiry;
- a refused proposal: after the refusal was issued;
- otherwise: after the later of the end of the last term (renewals counted)
  and the newest transition.

None ("never") is not offered even for contracts still running: a holder
cannot tell an abandoned contract from a live one, and the parties had the
whole term plus the grace period to settle. The parties keep their own copy
(`node.market.book.ContractBook`); the DHT copy is for replicas and queries.
An expired record is invalid, so it is not stored again once it has lapsed.
"""

from __future__ import annotations

from collections.abc import Sequence

import blake3

from node.market.contract import (
    DIGEST_SIZE,
    MAX_RECORD_SIZE,
    ContractError,
    ContractRecord,
    Event,
    ReplayError,
    decode_contract_record,
    decode_terms,
    decode_transition,
    periods_in_term,
    replay,
)
from node.records.validators import RecordInvalid

__all__ = [
    "CONTRACT_PREFIX",
    "DEFAULT_GRACE_MS",
    "ContractRecordValidator",
    "contract_id_of_key",
    "contract_key",
    "record_expires_at_ms",
]

CONTRACT_PREFIX = b"/zhtp/contract/"
DEFAULT_GRACE_MS = 30 * 24 * 3_600_000
# Expiries are stored as SQLite INTEGER (signed 64-bit).
_TIME_MAX = (1 << 63) - 1


def contract_key(contract_id: bytes) -> bytes:
    """The DHT key of a contract: prefix + the raw 32-byte contract ID."""
    if not isinstance(contract_id, bytes) or len(contract_id) != DIGEST_SIZE:
        raise ValueError(f"a contract ID is {DIGEST_SIZE} bytes")
    return CONTRACT_PREFIX + contract_id


def contract_id_of_key(key: bytes) -> bytes:
    """The contract ID a contract key names; RecordInvalid for any other key."""
    if not key.startswith(CONTRACT_PREFIX):
        raise RecordInvalid("not a contract key")
    if len(key) != len(CONTRACT_PREFIX) + DIGEST_SIZE:
        raise RecordInvalid("contract key id is not 32 bytes")
    return key[len(CONTRACT_PREFIX) :]


def record_expires_at_ms(record: ContractRecord, grace_ms: int = DEFAULT_GRACE_MS) -> int:
    """When `record` stops being valid (module docstring); ContractError if it does not decode.

    Needs no signature check: it reads the terms and the transitions' events
    and dates only.
    """
    terms = decode_terms(record.terms)
    if not record.transitions:
        since = terms.quote_valid_until_ms
    else:
        events = [decode_transition(raw) for raw in record.transitions]
        last = events[-1]
        if last.event is Event.REFUSE:
            since = last.issued_ms
        else:
            renewals = sum(1 for t in events if t.event is Event.RENEW)
            periods = periods_in_term(terms) * (1 + renewals)
            end = terms.start_ms + periods * terms.period_ms
            since = max(end, last.issued_ms)
    return min(since + grace_ms, _TIME_MAX)


class ContractRecordValidator:
    """Validator for the `/zhtp/contract/` namespace (see the module docstring)."""

    def __init__(
        self, max_value_size: int = MAX_RECORD_SIZE, grace_ms: int = DEFAULT_GRACE_MS
    ) -> None:
        if not 0 < max_value_size <= MAX_RECORD_SIZE:
            raise ValueError(f"max_value_size must be in 1..{MAX_RECORD_SIZE}")
        if grace_ms < 0:
            raise ValueError("grace_ms must not be negative")
        self.max_value_size = max_value_size
        self.grace_ms = grace_ms

    def validate(self, key: bytes, value: bytes, now_ms: int) -> None:
        if len(value) > self.max_value_size:
            raise RecordInvalid("contract record too large")
        contract_id = contract_id_of_key(key)
        try:
            record = decode_contract_record(value)
        except ContractError:
            raise RecordInvalid("contract record does not decode") from None
        # The ID is the hash of the terms bytes: check it before any signature.
        if blake3.blake3(record.terms).digest() != contract_id:
            raise RecordInvalid("contract record is for another contract")
        try:
            expires = record_expires_at_ms(record, self.grace_ms)
        except ContractError:
            raise RecordInvalid("contract record does not decode") from None
        if now_ms >= expires:
            raise RecordInvalid("contract record expired")
        try:
            replay(record, now_ms)
        except ReplayError as error:
            if error.index is None:
                raise RecordInvalid("contract terms or proposal signature invalid") from None
            raise RecordInvalid(f"contract history invalid at transition {error.index}") from None

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """The longest history; on equal length the greatest encoded bytes.

        `values` must all have passed `validate` for `key`.
        """
        if not values:
            raise ValueError("select needs at least one value")
        ranks = [(len(decode_contract_record(value).transitions), value) for value in values]
        return max(range(len(values)), key=ranks.__getitem__)

    def expires_at_ms(self, key: bytes, value: bytes) -> int | None:
        return record_expires_at_ms(decode_contract_record(value), self.grace_ms)
