"""The contract state machine: happy path, every refusal, replica agreement, tables."""

from __future__ import annotations

import ast
import inspect
from collections import deque
from dataclasses import replace

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from node.market import contract
from node.market.contract import (
    MAX_SHARDS,
    REQUIRED_SIGNERS,
    TERMS_DOMAIN,
    TRANSITIONS,
    ContractError,
    ContractState,
    ContractTerms,
    Event,
    Role,
    Settlement,
    ShardTerm,
    State,
    Transition,
    apply,
    compute_contract_id,
    countersign,
    decode_terms,
    encode_terms,
    final_payout,
    make_transition,
    open_contract,
    penalty_due,
    period_payment,
    seal_terms,
    sign_proposal,
    sign_transition,
    state_digest,
)
from node.market.quality import Sla

CLIENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PROVIDER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
MALLORY_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
KEYS = {Role.CLIENT: CLIENT_KEY, Role.PROVIDER: PROVIDER_KEY}

START = 10_000
PERIOD = 1_000
PERIODS = 4
PRICE = 4_000_000
PENALTY = 300_000
COLLATERAL = 1_000_000
VALID_UNTIL = 5_000
EVIDENCE = blake3.blake3(b"audit evidence").digest()


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_terms(**overrides: object) -> ContractTerms:
    fields: dict[str, object] = {
        "client": b"client-peer",
        "provider": b"provider-peer",
        "client_public_key": _raw(CLIENT_KEY),
        "provider_public_key": _raw(PROVIDER_KEY),
        "shards": (
            ShardTerm(bytes([1]) * 32, bytes([2]) * 32, 1000),
            ShardTerm(bytes([3]) * 32, bytes([4]) * 32, 500),
        ),
        "total_size": 1500,
        "start_ms": START,
        "duration_ms": PERIOD * PERIODS,
        "period_ms": PERIOD,
        "price_micro_tokens": PRICE,
        "escrow_micro_tokens": PRICE,
        "collateral_micro_tokens": COLLATERAL,
        "penalty_micro_tokens": PENALTY,
        "quote_id": b"quote-1",
        "quote_valid_until_ms": VALID_UNTIL,
    }
    fields.update(overrides)
    return seal_terms(ContractTerms(**fields))  # type: ignore[arg-type]


TERMS = make_terms()


def proposed(terms: ContractTerms = TERMS) -> ContractState:
    return open_contract(terms, sign_proposal(terms, CLIENT_KEY))


def signed(
    state: ContractState,
    event: Event,
    issued_ms: int,
    signers: tuple[Role, ...] = (Role.CLIENT,),
    **payload: object,
) -> Transition:
    t = make_transition(state, event, issued_ms, **payload)  # type: ignore[arg-type]
    for role in signers:
        t = sign_transition(t, role, KEYS[role])
    return t


def step(
    state: ContractState,
    event: Event,
    issued_ms: int,
    signers: tuple[Role, ...] = (Role.CLIENT,),
    **payload: object,
) -> ContractState:
    return apply(state, signed(state, event, issued_ms, signers, **payload), issued_ms)


def active() -> ContractState:
    state = proposed()
    return apply(state, countersign(state, PROVIDER_KEY, 4_000), 4_000)


def monitoring() -> ContractState:
    return step(active(), Event.START_MONITORING, START)


def passed(state: ContractState, period: int) -> ContractState:
    return step(
        state, Event.AUDIT_PASSED, START + (period + 1) * PERIOD, period=period, digest=EVIDENCE
    )


def release(state: ContractState, period: int) -> ContractState:
    return step(
        state,
        Event.PAYMENT_RELEASE,
        max(state.last_issued_ms, START + period * PERIOD),
        period=period,
        amount_micro_tokens=period_payment(state.terms, period),
    )


def refused(state: ContractState, t: Transition, now_ms: int | None = None) -> str:
    before = state_digest(state)
    with pytest.raises(ContractError) as info:
        apply(state, t, t.issued_ms if now_ms is None else now_ms)
    assert state_digest(state) == before  # nothing changed
    return info.value.reason


# -- the happy path ------------------------------------------------------------


def full_history() -> list[ContractState]:
    states = [proposed()]

    def go(
        event: Event, issued: int, signers: tuple[Role, ...] = (Role.CLIENT,), **kw: object
    ) -> None:
        states.append(step(states[-1], event, issued, signers, **kw))

    states.append(apply(states[-1], countersign(states[-1], PROVIDER_KEY, 4_000), 4_000))
    go(Event.START_MONITORING, START, (Role.PROVIDER,))
    for period in (0, 1):
        states.append(passed(states[-1], period))
        states.append(release(states[-1], period))
    go(Event.AUDIT_FAILED, START + 2 * PERIOD + 10, period=2, digest=EVIDENCE)
    go(Event.PENALTY_APPLIED, START + 2 * PERIOD + 20, period=2, amount_micro_tokens=PENALTY)
    go(Event.RESOLVE, START + 2 * PERIOD + 30, (Role.PROVIDER,), reason="shard re-stored")
    states.append(passed(states[-1], 3))  # released only at settlement
    go(Event.COMPLETE, START + PERIODS * PERIOD, (Role.PROVIDER,))
    go(Event.SETTLE, START + PERIODS * PERIOD + 1, amount_micro_tokens=1_000_000)
    return states


def test_happy_path_walks_the_lifecycle() -> None:
    states = full_history()
    assert [s.state for s in states] == [
        State.PROPOSED,
        State.ACTIVE,
        State.MONITORING,
        State.MONITORING,
        State.MONITORING,
        State.MONITORING,
        State.MONITORING,
        State.VIOLATION,
        State.PENALISED,
        State.MONITORING,
        State.MONITORING,
        State.COMPLETED,
        State.SETTLED,
    ]
    final = states[-1]
    assert final.sequence == len(states) - 1 == len(final.history)
    assert final.passed == {0, 1, 3}
    assert final.failed == {2}
    assert final.released == {0, 1}
    assert final.penalties_micro_tokens == PENALTY
    assert final.settlement == Settlement(
        paid_to_provider=3_000_000,
        refunded_to_client=1_000_000,
        collateral_returned=COLLATERAL - PENALTY,
        penalties_to_client=PENALTY,
    )


def test_period_payments_sum_to_the_price() -> None:
    terms = make_terms(price_micro_tokens=1_000_003, escrow_micro_tokens=1_000_003)
    assert sum(period_payment(terms, p) for p in range(PERIODS)) == 1_000_003


def test_refused_proposal_is_final() -> None:
    state = step(proposed(), Event.REFUSE, 1_000, (Role.PROVIDER,), reason="no space")
    assert state.state is State.REFUSED
    assert "refused" in refused(state, countersign(state, PROVIDER_KEY, 1_000))


def test_renewal_extends_the_contract() -> None:
    state = monitoring()
    for period in range(PERIODS):
        state = passed(state, period)
    state = step(state, Event.COMPLETE, START + PERIODS * PERIOD)
    state = step(
        state,
        Event.RENEW,
        START + PERIODS * PERIOD,
        (Role.CLIENT, Role.PROVIDER),
        amount_micro_tokens=PRICE,
    )
    assert state.state is State.MONITORING
    assert state.periods_total == 2 * PERIODS
    assert state.escrow_micro_tokens == 2 * PRICE
    state = passed(state, PERIODS)
    state = release(state, PERIODS)
    assert PERIODS in state.released


def test_termination_then_settlement_by_both() -> None:
    state = passed(monitoring(), 0)
    state = step(state, Event.TERMINATE, START + PERIOD + 5, (Role.PROVIDER,), reason="leaving")
    assert state.state is State.TERMINATED
    payout = final_payout(state)
    assert payout == period_payment(TERMS, 0)
    state = step(
        state,
        Event.SETTLE,
        START + PERIOD + 6,
        (Role.CLIENT, Role.PROVIDER),
        amount_micro_tokens=payout,
    )
    assert state.settlement == Settlement(payout, PRICE - payout, COLLATERAL, 0)


def test_penalties_never_exceed_collateral() -> None:
    terms = make_terms(collateral_micro_tokens=400_000)
    state = open_contract(terms, sign_proposal(terms, CLIENT_KEY))
    state = apply(state, countersign(state, PROVIDER_KEY, 4_000), 4_000)
    state = step(state, Event.START_MONITORING, START)
    for period in (0, 1):
        issued = START + period * PERIOD + 1
        state = step(state, Event.VIOLATION_REPORT, issued, period=period, reason="uptime 9000 bp")
        due = penalty_due(state)
        state = step(state, Event.PENALTY_APPLIED, issued, period=period, amount_micro_tokens=due)
        state = step(state, Event.RESOLVE, issued)
    assert state.penalties_micro_tokens == 400_000  # 300_000, then the 100_000 left


# -- every refusal ------------------------------------------------------------------


def test_forged_signature() -> None:
    state = passed(monitoring(), 0)
    t = make_transition(
        state, Event.PAYMENT_RELEASE, START + PERIOD, period=0, amount_micro_tokens=1_000_000
    )
    forged = sign_transition(t, Role.CLIENT, MALLORY_KEY)
    assert refused(state, forged) == "client signature does not verify"


def test_signature_over_other_payload() -> None:
    state = passed(monitoring(), 0)
    good = signed(state, Event.PAYMENT_RELEASE, START + PERIOD, period=0, amount_micro_tokens=1)
    tampered = replace(good, amount_micro_tokens=1_000_000)
    assert refused(state, tampered) == "client signature does not verify"


def test_missing_signature() -> None:
    state = passed(monitoring(), 0)
    t = signed(state, Event.PAYMENT_RELEASE, START + PERIOD, (), period=0)
    assert refused(state, t).startswith("missing signature")


def test_renew_needs_both_signatures() -> None:
    t = signed(monitoring(), Event.RENEW, START, (Role.CLIENT,), amount_micro_tokens=PRICE)
    assert refused(monitoring(), t) == "missing signature: RENEW needs client+provider"


def test_wrong_signer_role() -> None:
    state = passed(monitoring(), 0)
    t = signed(
        state,
        Event.PAYMENT_RELEASE,
        START + PERIOD,
        (Role.PROVIDER,),
        period=0,
        amount_micro_tokens=1_000_000,
    )
    assert refused(state, t) == "the provider may not sign PAYMENT_RELEASE"


def test_client_cannot_countersign() -> None:
    state = proposed()
    t = signed(state, Event.COUNTERSIGN, 4_000, (Role.CLIENT,))
    assert refused(state, t) == "the client may not sign COUNTERSIGN"


def test_provider_key_signing_as_client() -> None:
    state = monitoring()
    t = make_transition(state, Event.COMPLETE, START + PERIODS * PERIOD)
    t = sign_transition(t, Role.CLIENT, PROVIDER_KEY)
    assert refused(state, t) == "client signature does not verify"


def test_skipped_sequence() -> None:
    state = monitoring()
    t = replace(make_transition(state, Event.TERMINATE, START), sequence=state.sequence + 2)
    t = sign_transition(t, Role.CLIENT, CLIENT_KEY)
    assert refused(state, t).startswith("skipped sequence")


def test_repeated_sequence() -> None:
    state = passed(monitoring(), 0)
    replayed = state.history[-1]
    assert refused(state, replayed).startswith("repeated sequence")


def test_double_release_of_the_same_period() -> None:
    state = release(passed(monitoring(), 0), 0)
    t = signed(
        state, Event.PAYMENT_RELEASE, START + PERIOD, period=0, amount_micro_tokens=1_000_000
    )
    assert refused(state, t) == "period 0 already released"


def test_release_for_failed_period() -> None:
    state = step(monitoring(), Event.AUDIT_FAILED, START + 1, period=0, digest=EVIDENCE)
    t = signed(state, Event.PAYMENT_RELEASE, START + 2, period=0, amount_micro_tokens=1_000_000)
    assert refused(state, t) == "period 0 has not passed its audit"


def test_release_for_unaudited_period() -> None:
    state = monitoring()
    t = signed(state, Event.PAYMENT_RELEASE, START + 2, period=0, amount_micro_tokens=1_000_000)
    assert refused(state, t) == "period 0 has not passed its audit"


def test_release_with_wrong_amount() -> None:
    state = passed(monitoring(), 0)
    t = signed(state, Event.PAYMENT_RELEASE, START + PERIOD, period=0, amount_micro_tokens=999)
    assert refused(state, t) == "amount 999, expected 1000000"


def test_release_beyond_the_contract() -> None:
    state = monitoring()
    t = signed(state, Event.PAYMENT_RELEASE, START + 99 * PERIOD, period=PERIODS)
    assert refused(state, t) == f"period {PERIODS} is beyond the contract"


def test_event_not_allowed_in_state() -> None:
    state = active()
    t = signed(state, Event.AUDIT_PASSED, START + PERIOD, period=0, digest=EVIDENCE)
    assert refused(state, t) == "AUDIT_PASSED not allowed in active"


def test_expired_quote() -> None:
    state = proposed()
    t = countersign(state, PROVIDER_KEY, VALID_UNTIL + 1)
    assert refused(state, t) == "quote expired"


def test_countersign_at_the_deadline_is_accepted() -> None:
    state = proposed()
    assert apply(state, countersign(state, PROVIDER_KEY, VALID_UNTIL), VALID_UNTIL).state is (
        State.ACTIVE
    )


def test_tampered_terms_contract_id_mismatch() -> None:
    signature = sign_proposal(TERMS, CLIENT_KEY)
    tampered = replace(TERMS, price_micro_tokens=1)
    with pytest.raises(ContractError, match="contract id does not match terms"):
        open_contract(tampered, signature)
    with pytest.raises(ContractError, match="contract id does not match terms"):
        sign_proposal(tampered, CLIENT_KEY)
    resealed = seal_terms(tampered)
    with pytest.raises(ContractError, match="client signature on the proposal"):
        open_contract(resealed, signature)


def test_proposal_signed_by_someone_else() -> None:
    forged = MALLORY_KEY.sign(contract.PROPOSAL_DOMAIN + TERMS.contract_id)
    with pytest.raises(ContractError, match="does not verify"):
        open_contract(TERMS, forged)


def test_transitions_after_settlement() -> None:
    final = full_history()[-1]
    t = signed(final, Event.TERMINATE, START + 99 * PERIOD, (Role.CLIENT,))
    assert refused(final, t) == "contract is settled; no further transitions"


def test_transition_for_another_contract() -> None:
    other = proposed(make_terms(quote_id=b"quote-2"))
    state = proposed()
    t = countersign(other, PROVIDER_KEY, 4_000)
    assert refused(state, t) == "transition is for another contract"


def test_transition_before_start() -> None:
    state = active()
    t = signed(state, Event.START_MONITORING, START - 1)
    assert refused(state, t) == "contract has not started"


def test_transition_dated_in_the_future() -> None:
    state = active()
    t = signed(state, Event.START_MONITORING, START)
    assert refused(state, t, now_ms=START - contract.MAX_CLOCK_SKEW_MS - 1) == (
        "transition dated in the future"
    )


def test_transition_dated_backwards() -> None:
    state = passed(monitoring(), 1)
    t = signed(state, Event.AUDIT_FAILED, START + 1, period=0, digest=EVIDENCE)
    assert refused(state, t) == "transition dated before the previous one"


def test_pass_before_the_period_ends() -> None:
    state = monitoring()
    t = signed(state, Event.AUDIT_PASSED, START + PERIOD - 1, period=0, digest=EVIDENCE)
    assert refused(state, t) == "period 0 has not ended"


def test_second_verdict_for_a_period() -> None:
    state = passed(monitoring(), 0)
    t = signed(state, Event.VIOLATION_REPORT, START + PERIOD, period=0, reason="uptime")
    assert refused(state, t) == "period 0 already has a verdict"


def test_audit_needs_evidence() -> None:
    state = monitoring()
    t = signed(state, Event.AUDIT_FAILED, START, period=0)
    assert refused(state, t) == "AUDIT_FAILED needs the audit evidence digest"


def test_complete_before_the_end() -> None:
    state = monitoring()
    for period in range(PERIODS - 1):
        state = passed(state, period)
    t = signed(state, Event.COMPLETE, START + PERIODS * PERIOD)
    assert refused(state, t) == "1 periods have no verdict"
    t = signed(passed(state, PERIODS - 1), Event.COMPLETE, START + PERIODS * PERIOD - 1)
    assert refused(passed(state, PERIODS - 1), t, START + 99 * PERIOD) == (
        "transition dated before the previous one"
    )


def test_settle_terminated_contract_needs_both() -> None:
    state = step(monitoring(), Event.TERMINATE, START + 1, (Role.CLIENT,))
    t = signed(state, Event.SETTLE, START + 2, (Role.CLIENT,))
    assert refused(state, t) == "settling a terminated contract needs both signatures"


def test_penalty_for_a_period_that_did_not_fail() -> None:
    state = step(monitoring(), Event.AUDIT_FAILED, START + 1, period=0, digest=EVIDENCE)
    t = signed(state, Event.PENALTY_APPLIED, START + 1100, period=1, amount_micro_tokens=PENALTY)
    assert refused(state, t) == "period 1 did not fail"


def test_oversized_reason() -> None:
    state = monitoring()
    t = Transition(state.contract_id, state.sequence + 1, Event.TERMINATE, START, reason="x" * 257)
    assert refused(state, t) == "reason longer than 256 bytes"


def test_hostile_field_types() -> None:
    state = monitoring()
    t = Transition(state.contract_id, state.sequence + 1, Event.TERMINATE, START)
    for bad in (
        replace(t, sequence=-1),
        replace(t, period="0"),  # type: ignore[arg-type]
        replace(t, digest=b"short"),
        replace(t, contract_id=b"x"),
        replace(t, event=99),  # type: ignore[arg-type]
        replace(t, signatures=((Role.CLIENT, b"short"),)),
        replace(t, signatures=(("client", b"x" * 64),)),  # type: ignore[arg-type]
    ):
        with pytest.raises(ContractError):
            apply(state, bad, START)


# -- terms encoding -------------------------------------------------------------------


def test_terms_round_trip_and_id() -> None:
    encoded = encode_terms(TERMS)
    assert encoded.startswith(TERMS_DOMAIN)
    assert decode_terms(encoded) == TERMS
    assert TERMS.contract_id == blake3.blake3(encoded).digest() == compute_contract_id(TERMS)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"X" + b[1:], "not a contract terms encoding"),
        (lambda b: b[:30] + b"\x02" + b[31:], "unknown contract terms version"),
        (lambda b: b[:31] + b"\xff\xff" + b[33:], "client must be 1..128 bytes"),
    ],
)
def test_hostile_terms_encodings(mutate: object, reason: str) -> None:
    encoded = encode_terms(TERMS)
    with pytest.raises(ContractError, match=reason):
        decode_terms(mutate(encoded))  # type: ignore[operator]


def test_terms_validation() -> None:
    shard = TERMS.shards[0]
    cases: list[tuple[dict[str, object], str]] = [
        ({"shards": ()}, "1..1024 shards"),
        ({"shards": (shard,) * (MAX_SHARDS + 1)}, "1..1024 shards"),
        ({"shards": (shard, shard), "total_size": 2000}, "shard addresses repeat"),
        ({"total_size": 1}, "sum of the shard sizes"),
        ({"duration_ms": PERIOD * PERIODS + 1}, "whole number of periods"),
        ({"escrow_micro_tokens": PRICE - 1}, "escrow does not cover the price"),
        ({"provider": b"client-peer"}, "same party"),
        ({"provider_public_key": _raw(CLIENT_KEY)}, "keys are the same"),
        ({"provider_public_key": bytes([1]) + bytes(31)}, "small order"),
        ({"leaf_size": 3000}, "power of two"),
        ({"leaves_per_audit": 0}, "leaves per audit"),
        ({"quote_id": b""}, "quote id"),
        ({"sla": "fast"}, "sla is not an Sla"),
    ]
    for overrides, reason in cases:
        with pytest.raises(ContractError, match=reason):
            make_terms(**overrides)


digests = st.binary(min_size=32, max_size=32)
ints = st.integers(min_value=0, max_value=(1 << 40))


@st.composite
def terms_strategy(draw: st.DrawFn) -> ContractTerms:
    addresses = draw(st.lists(digests, min_size=1, max_size=5, unique=True))
    shards = tuple(ShardTerm(a, draw(digests), draw(st.integers(1, 1 << 40))) for a in addresses)
    period = draw(st.integers(1, 1 << 30))
    price = draw(ints)
    return make_terms(
        client=b"c" + draw(st.binary(max_size=127)),
        provider=b"p" + draw(st.binary(max_size=127)),
        shards=shards,
        total_size=sum(s.size for s in shards),
        start_ms=draw(ints),
        period_ms=period,
        duration_ms=period * draw(st.integers(1, 100)),
        price_micro_tokens=price,
        escrow_micro_tokens=price + draw(ints),
        collateral_micro_tokens=draw(ints),
        penalty_micro_tokens=draw(ints),
        quote_id=draw(st.binary(min_size=1, max_size=64)),
        quote_valid_until_ms=draw(ints),
        sla=Sla(draw(st.integers(0, 10_000)), draw(st.integers(1, 1 << 32 - 1)), 9_900),
        audits_per_period=draw(st.integers(1, 1000)),
        leaves_per_audit=draw(st.integers(1, 64)),
        leaf_size=1 << draw(st.integers(6, 16)),
    )


@given(terms_strategy())
@settings(max_examples=50)
def test_terms_round_trip_property(terms: ContractTerms) -> None:
    assert decode_terms(encode_terms(terms)) == terms


@given(st.binary(max_size=400))
def test_decoding_garbage_raises_only_contract_error(data: bytes) -> None:
    for candidate in (data, TERMS_DOMAIN + b"\x01" + data, encode_terms(TERMS)[:200] + data):
        try:
            decoded = decode_terms(candidate)
        except ContractError:
            continue
        assert encode_terms(decoded) == candidate  # one terms value, one encoding


# -- replicas ------------------------------------------------------------------------------


def test_replicas_agree() -> None:
    transitions = full_history()[-1].history
    replica_a = proposed()
    replica_b = proposed()
    for t in transitions:
        replica_a = apply(replica_a, t, t.issued_ms)
        replica_b = apply(replica_b, t, t.issued_ms + 1_000_000)  # later: same result
    assert replica_a == replica_b
    assert state_digest(replica_a) == state_digest(replica_b)
    assert state_digest(replica_a) != state_digest(full_history()[-2])


def test_digest_tracks_the_history() -> None:
    state = monitoring()
    a = step(state, Event.TERMINATE, START + 1, (Role.CLIENT,))
    b = step(state, Event.TERMINATE, START + 1, (Role.PROVIDER,))
    assert a.state == b.state
    assert state_digest(a) != state_digest(b)


# -- the tables -------------------------------------------------------------------------------


def test_transition_table_is_a_literal() -> None:
    tree = ast.parse(inspect.getsource(contract))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node.value
    assert isinstance(found["TRANSITIONS"], ast.Dict)
    assert isinstance(found["REQUIRED_SIGNERS"], ast.Dict)
    table = found["TRANSITIONS"]
    assert len(table.keys) == len(TRANSITIONS)  # no duplicate keys silently dropped
    for key, value in zip(table.keys, table.values, strict=True):
        assert isinstance(key, ast.Tuple) and len(key.elts) == 2
        assert all(isinstance(e, ast.Attribute) for e in (*key.elts, value))


def test_every_state_is_reachable() -> None:
    seen = {State.PROPOSED}
    queue = deque([State.PROPOSED])
    while queue:
        current = queue.popleft()
        for (state, _event), target in TRANSITIONS.items():
            if state is current and target not in seen:
                seen.add(target)
                queue.append(target)
    assert seen == set(State)


def test_every_event_is_used_and_has_signers() -> None:
    assert {event for _state, event in TRANSITIONS} == set(Event)
    assert set(REQUIRED_SIGNERS) == set(Event)
    assert all(REQUIRED_SIGNERS[event] for event in Event)


def test_finished_states_have_no_way_out() -> None:
    for state in (State.SETTLED, State.REFUSED):
        assert not [key for key in TRANSITIONS if key[0] is state]


# -- random sequences -------------------------------------------------------------------------

ROLE_SETS = [(), (Role.CLIENT,), (Role.PROVIDER,), (Role.CLIENT, Role.PROVIDER)]


def _right_amount(state: ContractState, event: Event, period: int | None) -> int:
    if event is Event.PAYMENT_RELEASE and period is not None:
        return period_payment(state.terms, period)
    if event is Event.PENALTY_APPLIED:
        return penalty_due(state)
    if event is Event.RENEW:
        return state.terms.price_micro_tokens
    if event is Event.SETTLE:
        return final_payout(state)
    return 0


_ENDINGS = frozenset({Event.REFUSE, Event.TERMINATE})


def _random_transition(data: st.DataObject, state: ContractState, now: int) -> Transition:
    """Mostly well-formed transitions for the current state, sometimes anything at all."""
    allowed = [event for (st_, event) in TRANSITIONS if st_ is state.state] or list(Event)
    calm = [event for event in allowed if event not in _ENDINGS] or allowed
    event = data.draw(
        st.one_of(st.sampled_from(calm), st.sampled_from(calm), st.sampled_from(list(Event)))
    )
    judged = state.passed | state.failed
    interesting = [
        *sorted(state.passed - state.released),
        *sorted(state.failed - state.penalised),
        *[p for p in range(state.periods_total) if p not in judged][:1],
    ]
    period = data.draw(
        st.one_of(
            st.sampled_from(interesting or [0]),
            st.sampled_from(interesting or [0]),
            st.none(),
            st.integers(0, state.periods_total),
        )
    )
    if event in (Event.COUNTERSIGN, Event.REFUSE, Event.START_MONITORING, Event.RESOLVE):
        period = data.draw(st.sampled_from([None, None, None, period]))
    amount = data.draw(
        st.sampled_from(
            [_right_amount(state, event, period), _right_amount(state, event, period), 0, 7]
        )
    )
    sequence = state.sequence + data.draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    evidence = data.draw(st.sampled_from([True, True, True, False]))
    t = Transition(
        state.contract_id,
        sequence,
        event,
        now,
        period=period,
        amount_micro_tokens=amount,
        digest=EVIDENCE if evidence else b"",
        reason="why" if evidence else "",
    )
    needed = sorted(REQUIRED_SIGNERS[event][-1])
    roles = data.draw(st.sampled_from([tuple(needed), tuple(needed), *ROLE_SETS]))
    forge = data.draw(st.sampled_from([False, False, False, False, True]))
    for role in roles:  # signing checks the fields too, so may raise ContractError
        t = sign_transition(t, role, MALLORY_KEY if forge else KEYS[role])
    return t


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_random_sequences(data: st.DataObject) -> None:
    state = proposed()
    now = 4_000
    releases: list[int] = []
    for _ in range(data.draw(st.integers(0, 40))):
        now = max(0, now + data.draw(st.sampled_from([1_000, 500, 3_000, 0, 1, 10, -5])))
        try:
            t = _random_transition(data, state, now)
            new = apply(state, t, now)
        except ContractError:
            continue
        assert new.sequence == state.sequence + 1
        if t.event is Event.PAYMENT_RELEASE:
            assert t.period is not None
            releases.append(t.period)
        state = new
        assert state.released <= state.passed
        assert state.released_micro_tokens <= state.escrow_micro_tokens
        assert state.penalties_micro_tokens <= state.terms.collateral_micro_tokens
        assert not state.passed & state.failed
    assert len(releases) == len(set(releases))
    assert sorted(releases) == sorted(state.released)


@given(st.lists(st.integers(0, PERIODS), max_size=30))
@settings(max_examples=100, deadline=None)
def test_a_period_is_never_released_twice(attempts: list[int]) -> None:
    state = monitoring()
    for period in range(PERIODS - 1):
        state = passed(state, period)
    # Periods 0..2 passed; 3 is unjudged and 4 is beyond the contract.
    released: list[int] = []
    for period in attempts:
        t = signed(
            state,
            Event.PAYMENT_RELEASE,
            state.last_issued_ms,
            period=period,
            amount_micro_tokens=period_payment(state.terms, period),
        )
        try:
            state = apply(state, t, t.issued_ms)
        except ContractError as exc:
            assert period in released or period >= PERIODS - 1, exc.reason
            continue
        released.append(period)
    assert len(released) == len(set(released))
    assert set(released) == state.released == {p for p in attempts if p < PERIODS - 1}
    assert state.released_micro_tokens == sum(period_payment(TERMS, p) for p in released)
