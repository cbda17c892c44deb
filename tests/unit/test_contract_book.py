"""ContractBook on a real SQLite file: add, apply, queries, refusals, reopen, shard lookup."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from node.market.book import SERVING_STATES, BookCorrupt, BookRole, ContractBook
from node.market.contract import (
    ContractError,
    ContractRecord,
    Event,
    Role,
    State,
    contract_record,
    countersign,
    state_digest,
)
from tests.unit.test_contract_records import (
    EVIDENCE,
    FINAL,
    HISTORY,
    NOW,
    PRICE,
    PROVIDER_KEY,
    SHARD_A,
    SHARD_B,
    START,
    active,
    make_terms,
    proposed,
    signed,
    step,
)

CONTRACT_ID = FINAL.contract_id


def record_at(index: int) -> ContractRecord:
    return contract_record(HISTORY[index])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "node.sqlite3"


@pytest.fixture
def book(db: Path) -> ContractBook:
    return ContractBook(db)


def snapshot(book: ContractBook) -> tuple[object, ...]:
    state = book.state(CONTRACT_ID)
    return (
        None if state is None else state_digest(state),
        book.record(CONTRACT_ID),
        book.list(),
    )


def test_add_apply_state_list(book: ContractBook) -> None:
    state = book.add(record_at(0), BookRole.PROVIDER, NOW)
    assert state.state is State.PROPOSED
    assert book.state(CONTRACT_ID) == state
    assert book.record(CONTRACT_ID) == record_at(0)
    assert book.role(CONTRACT_ID) is BookRole.PROVIDER
    for index in range(1, len(HISTORY)):
        transition = HISTORY[index].history[-1]
        state = book.apply(CONTRACT_ID, transition, NOW)
        assert state_digest(state) == state_digest(HISTORY[index])
    assert book.record(CONTRACT_ID) == contract_record(FINAL)
    (summary,) = book.list()
    assert summary.contract_id == CONTRACT_ID
    assert summary.role is BookRole.PROVIDER
    assert summary.counterparty == b"client-peer"
    assert summary.state is State.SETTLED
    assert summary.sequence == FINAL.sequence
    assert summary.price_micro_tokens == PRICE
    assert summary.total_size == 1500
    assert (summary.start_ms, summary.end_ms) == (START, FINAL.end_ms)
    assert summary.updated_ms == NOW


def test_unknown_contract(book: ContractBook) -> None:
    assert book.state(CONTRACT_ID) is None
    assert book.record(CONTRACT_ID) is None
    assert book.role(CONTRACT_ID) is None
    with pytest.raises(ContractError, match="no such contract"):
        book.apply(CONTRACT_ID, HISTORY[1].history[-1], NOW)
    assert book.list() == []


def test_refused_apply_changes_nothing(book: ContractBook) -> None:
    book.add(record_at(2), BookRole.CLIENT, NOW)
    before = snapshot(book)
    skipped = HISTORY[4].history[-1]  # sequence 4, expected 3
    with pytest.raises(ContractError, match="skipped sequence"):
        book.apply(CONTRACT_ID, skipped, NOW)
    repeated = HISTORY[2].history[-1]
    with pytest.raises(ContractError, match="repeated sequence"):
        book.apply(CONTRACT_ID, repeated, NOW)
    forged = replace(
        HISTORY[3].history[-1], signatures=((Role.CLIENT, bytes(64)),)
    )  # right sequence, bad signature
    with pytest.raises(ContractError, match="does not verify"):
        book.apply(CONTRACT_ID, forged, NOW)
    future = HISTORY[3].history[-1]
    with pytest.raises(ContractError, match="future"):
        book.apply(CONTRACT_ID, future, START - 100_000)
    assert snapshot(book) == before


def test_add_refuses_invalid_records(book: ContractBook) -> None:
    bad = replace(record_at(3), client_signature=bytes(64))
    with pytest.raises(ContractError):
        book.add(bad, BookRole.REPLICA, NOW)
    transitions = record_at(3).transitions
    with pytest.raises(ContractError):
        book.add(replace(record_at(3), transitions=transitions[1:]), BookRole.REPLICA, NOW)
    assert book.list() == []
    assert book.state(CONTRACT_ID) is None


def test_add_is_idempotent(book: ContractBook) -> None:
    first = book.add(record_at(3), BookRole.REPLICA, NOW)
    before = snapshot(book)
    again = book.add(record_at(3), BookRole.REPLICA, NOW + 5)
    assert state_digest(again) == state_digest(first)
    assert snapshot(book) == before  # updated_ms too


def test_longer_history_replaces(book: ContractBook) -> None:
    book.add(record_at(2), BookRole.REPLICA, NOW)
    state = book.add(record_at(7), BookRole.REPLICA, NOW + 1)
    assert state_digest(state) == state_digest(HISTORY[7])
    assert book.record(CONTRACT_ID) == record_at(7)
    (summary,) = book.list()
    assert (summary.state, summary.sequence, summary.updated_ms) == (State.MONITORING, 7, NOW + 1)
    # and it continues from there
    book.apply(CONTRACT_ID, HISTORY[8].history[-1], NOW)
    assert book.record(CONTRACT_ID) == record_at(8)


def test_shorter_or_diverging_history_refused(book: ContractBook) -> None:
    book.add(record_at(5), BookRole.REPLICA, NOW)
    before = snapshot(book)
    with pytest.raises(ContractError, match="shorter"):
        book.add(record_at(3), BookRole.REPLICA, NOW)
    # START_MONITORING signed by the client instead of the provider: sequence 2 differs.
    branch = step(HISTORY[1], Event.START_MONITORING, START, (Role.CLIENT,))
    with pytest.raises(ContractError, match=r"diverges .* transition 1"):
        book.add(contract_record(branch), BookRole.REPLICA, NOW)
    with pytest.raises(ContractError, match="already held as replica"):
        book.add(record_at(6), BookRole.CLIENT, NOW)
    assert snapshot(book) == before


def test_persistence_across_reopen(db: Path) -> None:
    with ContractBook(db) as book:
        book.add(record_at(0), BookRole.PROVIDER, NOW)
        for index in range(1, 6):
            book.apply(CONTRACT_ID, HISTORY[index].history[-1], NOW)
        before = snapshot(book)
    with ContractBook(db) as book:
        assert snapshot(book) == before
        state = book.apply(CONTRACT_ID, HISTORY[6].history[-1], NOW)
        assert state_digest(state) == state_digest(HISTORY[6])
    with ContractBook(db) as book:
        reloaded = book.state(CONTRACT_ID)
        assert reloaded is not None
        assert state_digest(reloaded) == state_digest(HISTORY[6])


def test_tampered_database_is_detected(db: Path) -> None:
    with ContractBook(db) as book:
        book.add(record_at(3), BookRole.CLIENT, NOW)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE contracts SET state_digest = ?", (bytes(32),))
    conn.commit()
    conn.close()
    with ContractBook(db) as book, pytest.raises(BookCorrupt):
        book.state(CONTRACT_ID)


def test_signatures_are_stored_in_role_order(book: ContractBook) -> None:
    book.add(record_at(2), BookRole.CLIENT, NOW)
    renew = signed(
        HISTORY[2], Event.RENEW, START, (Role.CLIENT, Role.PROVIDER), amount_micro_tokens=PRICE
    )
    reversed_order = replace(renew, signatures=tuple(reversed(renew.signatures)))
    state = book.apply(CONTRACT_ID, reversed_order, NOW)
    assert state.history[-1].signatures == renew.signatures
    record = book.record(CONTRACT_ID)
    assert record is not None
    assert book.add(record, BookRole.CLIENT, NOW).sequence == 3


def test_list_filters(book: ContractBook) -> None:
    book.add(record_at(3), BookRole.CLIENT, NOW)
    other = active(make_terms(b"quote-2"))
    book.add(contract_record(other), BookRole.PROVIDER, NOW)
    replica = proposed(make_terms(b"quote-3"))
    book.add(contract_record(replica), BookRole.REPLICA, NOW)
    assert len(book.list()) == 3
    assert [s.contract_id for s in book.list(role=BookRole.PROVIDER)] == [other.contract_id]
    assert [s.contract_id for s in book.list(states={State.PROPOSED})] == [replica.contract_id]
    assert book.list(role=BookRole.REPLICA)[0].counterparty is None
    assert book.list(role=BookRole.CLIENT)[0].counterparty == b"provider-peer"
    assert book.list(states=()) == []
    assert book.list(role=BookRole.CLIENT, states={State.ACTIVE}) == []


def test_shard_lookup_for_serving_contracts_only(book: ContractBook) -> None:
    assert {State.ACTIVE, State.MONITORING, State.VIOLATION, State.PENALISED} == SERVING_STATES
    book.add(record_at(0), BookRole.PROVIDER, NOW)
    assert book.active_for_provider(SHARD_A) == []  # PROPOSED
    seen = []
    for index in range(1, len(HISTORY)):
        state = book.apply(CONTRACT_ID, HISTORY[index].history[-1], NOW)
        serving = state.state in SERVING_STATES
        seen.append(state.state)
        expected = [CONTRACT_ID] if serving else []
        assert book.active_for_provider(SHARD_A) == expected
        assert book.active_for_provider(SHARD_B) == expected
    assert State.ACTIVE in seen and State.MONITORING in seen
    assert seen[-2:] == [State.COMPLETED, State.SETTLED]
    assert book.active_for_provider(SHARD_A) == []  # SETTLED
    assert book.active_for_provider(bytes(32)) == []
    with pytest.raises(ValueError):
        book.active_for_provider(b"short")


def test_shard_lookup_in_violation_and_only_as_provider(book: ContractBook) -> None:
    book.add(record_at(2), BookRole.PROVIDER, NOW)
    failed = step(HISTORY[2], Event.AUDIT_FAILED, START + 10, period=0, digest=EVIDENCE)
    book.apply(CONTRACT_ID, failed.history[-1], NOW)
    assert book.state(CONTRACT_ID) is not None
    assert book.active_for_provider(SHARD_A) == [CONTRACT_ID]  # VIOLATION still serves
    other = active(make_terms(b"quote-2"))  # same shards, but we are its client
    book.add(contract_record(other), BookRole.CLIENT, NOW)
    assert book.active_for_provider(SHARD_A) == [CONTRACT_ID]


def test_refused_proposal_never_serves(book: ContractBook) -> None:
    state = proposed()
    book.add(contract_record(state), BookRole.PROVIDER, NOW)
    refusal = signed(state, Event.REFUSE, 4_500, (Role.PROVIDER,))
    assert book.apply(CONTRACT_ID, refusal, NOW).state is State.REFUSED
    assert book.active_for_provider(SHARD_A) == []
    with pytest.raises(ContractError, match="no further transitions"):
        book.apply(CONTRACT_ID, countersign(state, PROVIDER_KEY, 4_000), NOW)
