"""Transition and contract-record encodings, replay, and the /zhtp/contract/ validator."""

from __future__ import annotations

import struct
from dataclasses import replace

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from node.market.contract import (
    MAX_CLOCK_SKEW_MS,
    MAX_PERIODS,
    MAX_REASON_SIZE,
    MAX_RECORD_SIZE,
    MAX_RECORD_TRANSITIONS,
    MAX_TRANSITION_SIZE,
    RECORD_DOMAIN,
    TRANSITION_DOMAIN,
    ContractError,
    ContractState,
    ContractTerms,
    Event,
    ReplayError,
    Role,
    ShardTerm,
    State,
    Transition,
    apply,
    contract_record,
    countersign,
    decode_contract_record,
    decode_transition,
    encode_contract_record,
    encode_terms,
    encode_transition,
    make_transition,
    open_contract,
    period_payment,
    replay,
    seal_terms,
    sign_proposal,
    sign_transition,
    state_digest,
    transition_signing_bytes,
)
from node.records.contracts import (
    CONTRACT_PREFIX,
    DEFAULT_GRACE_MS,
    ContractRecordValidator,
    contract_id_of_key,
    contract_key,
    record_expires_at_ms,
)
from node.records.validators import NamespacedValidator, RecordInvalid

# The same parties as the contract tests, so their signing helpers apply.
from tests.unit.test_market_contract import (
    CLIENT_KEY,
    MALLORY_KEY,
    PROVIDER_KEY,
    signed,
    step,
)

START = 10_000
PERIOD = 1_000
PERIODS = 4
PRICE = 4_000_000
VALID_UNTIL = 5_000
NOW = START + 100 * PERIOD
EVIDENCE = blake3.blake3(b"audit evidence").digest()
SHARD_A = bytes([1]) * 32
SHARD_B = bytes([3]) * 32


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def make_terms(quote_id: bytes = b"quote-1") -> ContractTerms:
    return seal_terms(
        ContractTerms(
            client=b"client-peer",
            provider=b"provider-peer",
            client_public_key=_raw(CLIENT_KEY),
            provider_public_key=_raw(PROVIDER_KEY),
            shards=(
                ShardTerm(SHARD_A, bytes([2]) * 32, 1000),
                ShardTerm(SHARD_B, bytes([4]) * 32, 500),
            ),
            total_size=1500,
            start_ms=START,
            duration_ms=PERIOD * PERIODS,
            period_ms=PERIOD,
            price_micro_tokens=PRICE,
            escrow_micro_tokens=PRICE,
            collateral_micro_tokens=1_000_000,
            penalty_micro_tokens=300_000,
            quote_id=quote_id,
            quote_valid_until_ms=VALID_UNTIL,
        )
    )


def proposed(terms: ContractTerms | None = None) -> ContractState:
    terms = make_terms() if terms is None else terms
    return open_contract(terms, sign_proposal(terms, CLIENT_KEY))


def active(terms: ContractTerms | None = None) -> ContractState:
    state = proposed(terms)
    return apply(state, countersign(state, PROVIDER_KEY, 4_000), 4_000)


def full_history() -> list[ContractState]:
    """Every state from PROPOSED to SETTLED: audits, releases, completion, settlement."""
    states = [proposed()]
    states.append(apply(states[-1], countersign(states[-1], PROVIDER_KEY, 4_000), 4_000))
    states.append(step(states[-1], Event.START_MONITORING, START, (Role.PROVIDER,)))
    for period in range(PERIODS):
        end = START + (period + 1) * PERIOD
        states.append(step(states[-1], Event.AUDIT_PASSED, end, period=period, digest=EVIDENCE))
        states.append(
            step(
                states[-1],
                Event.PAYMENT_RELEASE,
                end,
                period=period,
                amount_micro_tokens=period_payment(states[-1].terms, period),
            )
        )
    end = START + PERIODS * PERIOD
    states.append(step(states[-1], Event.COMPLETE, end, (Role.PROVIDER,)))
    states.append(step(states[-1], Event.SETTLE, end + 1))
    return states


HISTORY = full_history()
FINAL = HISTORY[-1]
CONTRACT_ID = FINAL.contract_id
KEY = contract_key(CONTRACT_ID)
VALIDATOR = ContractRecordValidator()


def value_of(state: ContractState) -> bytes:
    return encode_contract_record(contract_record(state))


def with_transitions(transitions: tuple[bytes, ...]) -> bytes:
    record = contract_record(FINAL)
    return encode_contract_record(replace(record, transitions=transitions))


def refusal(key: bytes, value: bytes, now_ms: int = NOW) -> str:
    with pytest.raises(RecordInvalid) as info:
        VALIDATOR.validate(key, value, now_ms)
    return info.value.reason


def test_history_walks_to_settlement() -> None:
    assert [s.state for s in HISTORY][:3] == [State.PROPOSED, State.ACTIVE, State.MONITORING]
    assert FINAL.state is State.SETTLED
    assert FINAL.sequence == len(HISTORY) - 1


# -- transition encoding ---------------------------------------------------------------

_reasons = st.text(max_size=80).filter(lambda s: len(s.encode("utf-8")) <= MAX_REASON_SIZE)
_signature_sets = st.sampled_from(
    [(), (Role.CLIENT,), (Role.PROVIDER,), (Role.CLIENT, Role.PROVIDER)]
)


@st.composite
def transitions(draw: st.DrawFn) -> Transition:
    roles = draw(_signature_sets)
    return Transition(
        contract_id=draw(st.binary(min_size=32, max_size=32)),
        sequence=draw(st.integers(1, (1 << 63) - 1)),
        event=draw(st.sampled_from(list(Event))),
        issued_ms=draw(st.integers(0, (1 << 63) - 1)),
        period=draw(st.none() | st.integers(0, MAX_PERIODS - 1)),
        amount_micro_tokens=draw(st.integers(0, (1 << 63) - 1)),
        digest=draw(st.sampled_from([b"", EVIDENCE])),
        reason=draw(_reasons),
        signatures=tuple((role, draw(st.binary(min_size=64, max_size=64))) for role in roles),
    )


@given(transitions())
def test_transition_round_trip(t: Transition) -> None:
    data = encode_transition(t)
    assert len(data) <= MAX_TRANSITION_SIZE
    assert decode_transition(data) == t
    assert encode_transition(decode_transition(data)) == data


def test_transition_layout_is_signing_bytes_then_signatures() -> None:
    t = HISTORY[1].history[0]
    sig = t.signatures[0][1]
    assert encode_transition(t) == transition_signing_bytes(t) + b"\x01\x02" + sig


def test_real_transitions_round_trip() -> None:
    for t in FINAL.history:
        assert decode_transition(encode_transition(t)) == t


def _sample() -> Transition:
    return sign_transition(
        signed(HISTORY[-2], Event.SETTLE, START + PERIODS * PERIOD + 1, (Role.CLIENT,)),
        Role.PROVIDER,
        PROVIDER_KEY,
    )


def _rejects(data: bytes) -> str:
    with pytest.raises(ContractError) as info:
        decode_transition(data)
    return info.value.reason


def test_transition_truncated_anywhere() -> None:
    data = encode_transition(_sample())
    for size in range(len(data)):
        _rejects(data[:size])


def test_transition_trailing_bytes() -> None:
    assert "trailing" in _rejects(encode_transition(_sample()) + b"\x00")


def _with_signatures(t: Transition, raw: bytes) -> bytes:
    return transition_signing_bytes(t) + raw


def test_transition_signature_rejections() -> None:
    t = _sample()
    sig = bytes(64)
    assert "role" in _rejects(_with_signatures(t, b"\x01\x00" + sig))
    assert "role" in _rejects(_with_signatures(t, b"\x01\x03" + sig))
    assert "two signatures" in _rejects(_with_signatures(t, b"\x02\x01" + sig + b"\x01" + sig))
    assert "more than 2" in _rejects(
        _with_signatures(t, b"\x03\x01" + sig + b"\x02" + sig + b"\x02" + sig)
    )
    assert "order" in _rejects(_with_signatures(t, b"\x02\x02" + sig + b"\x01" + sig))
    assert "truncated" in _rejects(_with_signatures(t, b"\x01\x01" + sig[:63]))


def _patched(offset: int, new: bytes) -> bytes:
    data = bytearray(encode_transition(_sample()))
    data[offset : offset + len(new)] = new
    return bytes(data)


_FIXED = len(TRANSITION_DOMAIN) + 32  # where sequence starts


def test_transition_field_rejections() -> None:
    assert "not a contract transition" in _rejects(_patched(0, b"Z"))
    assert "sequence" in _rejects(_patched(_FIXED, bytes(8)))  # sequence 0
    assert "sequence" in _rejects(_patched(_FIXED, b"\xff" * 8))  # beyond 2**63-1
    assert "event" in _rejects(_patched(_FIXED + 16, b"\x00"))
    assert "event" in _rejects(_patched(_FIXED + 16, b"\x0e"))
    assert "period" in _rejects(_patched(_FIXED + 17, struct.pack(">I", MAX_PERIODS)))
    assert "digest" in _rejects(_patched(_FIXED + 29, b"\x01"))


def test_transition_reason_rejections() -> None:
    t = replace(_sample(), reason="x", signatures=())
    good = encode_transition(t)
    assert decode_transition(good) == t
    assert "UTF-8" in _rejects(good.replace(b"\x00\x01x", b"\x00\x01\xff"))
    long_reason = good.replace(b"\x00\x01x\x00", struct.pack(">H", MAX_REASON_SIZE + 1))
    assert "reason" in _rejects(long_reason + b"x" * (MAX_REASON_SIZE + 1) + b"\x00")


def test_transition_not_bytes_or_too_long() -> None:
    assert "not bytes" in _rejects(bytearray(3))  # type: ignore[arg-type]
    assert "too long" in _rejects(b"\x00" * (MAX_TRANSITION_SIZE + 1))


# -- record encoding and replay ------------------------------------------------------------


def test_record_round_trip() -> None:
    for state in HISTORY:
        record = contract_record(state)
        data = encode_contract_record(record)
        assert decode_contract_record(data) == record
        assert encode_contract_record(decode_contract_record(data)) == data
        again = replay(record, NOW)
        assert state_digest(again) == state_digest(state)


def test_record_layout() -> None:
    record = contract_record(HISTORY[1])
    data = encode_contract_record(record)
    terms = encode_terms(HISTORY[1].terms)
    expected = (
        RECORD_DOMAIN
        + b"\x01"
        + struct.pack(">I", len(terms))
        + terms
        + struct.pack(">H", 64)
        + record.client_signature
        + struct.pack(">H", 1)
        + struct.pack(">H", len(record.transitions[0]))
        + record.transitions[0]
    )
    assert data == expected


def _record_rejects(data: bytes) -> str:
    with pytest.raises(ContractError) as info:
        decode_contract_record(data)
    return info.value.reason


def test_record_malformed() -> None:
    data = value_of(HISTORY[3])
    for size in range(0, len(data), 7):
        _record_rejects(data[:size])
    assert "trailing" in _record_rejects(data + b"\x00")
    assert "not a contract record" in _record_rejects(b"X" + data[1:])
    version = len(RECORD_DOMAIN)
    assert "version" in _record_rejects(data[:version] + b"\x02" + data[version + 1 :])
    header = data[: version + 1]
    assert "terms length" in _record_rejects(header + struct.pack(">I", 0))
    assert "terms length" in _record_rejects(header + struct.pack(">I", 1 << 24))
    terms = encode_terms(HISTORY[0].terms)
    body = header + struct.pack(">I", len(terms)) + terms
    sig = HISTORY[0].client_signature
    assert "client signature" in _record_rejects(body + struct.pack(">H", 63) + sig[:63])
    with_sig = body + struct.pack(">H", 64) + sig
    assert "more than" in _record_rejects(with_sig + struct.pack(">H", MAX_RECORD_TRANSITIONS + 1))
    assert "transition" in _record_rejects(with_sig + struct.pack(">HH", 1, 0))
    assert "too large" in _record_rejects(b"\x00" * (MAX_RECORD_SIZE + 1))


def test_record_encode_bounds() -> None:
    record = contract_record(HISTORY[1])
    with pytest.raises(ContractError, match="transitions"):
        encode_contract_record(
            replace(record, transitions=record.transitions * (MAX_RECORD_TRANSITIONS + 1))
        )
    with pytest.raises(ContractError, match="larger than"):
        encode_contract_record(replace(record, transitions=(b"x" * 500,) * 4000))
    with pytest.raises(ContractError, match="client signature"):
        encode_contract_record(replace(record, client_signature=b"short"))


def test_replay_names_the_bad_transition() -> None:
    record = contract_record(FINAL)
    transitions = list(record.transitions)
    transitions[5] = transitions[6]
    with pytest.raises(ReplayError) as info:
        replay(replace(record, transitions=tuple(transitions)), NOW)
    assert info.value.index == 5
    assert info.value.reason.startswith("transition 5:")
    with pytest.raises(ReplayError) as info:
        replay(replace(record, client_signature=bytes(64)), NOW)
    assert info.value.index is None


def test_replay_refuses_a_future_transition() -> None:
    last_end = START + PERIODS * PERIOD  # the last pass (transition 8) is dated here
    with pytest.raises(ReplayError) as info:
        replay(contract_record(FINAL), last_end - MAX_CLOCK_SKEW_MS - 1)
    assert info.value.index == 8
    replay(contract_record(FINAL), last_end + 1 - MAX_CLOCK_SKEW_MS)


# -- the validator ----------------------------------------------------------------------------


def test_keys() -> None:
    assert KEY == CONTRACT_PREFIX + CONTRACT_ID
    assert contract_id_of_key(KEY) == CONTRACT_ID
    with pytest.raises(ValueError):
        contract_key(b"short")


def test_validator_accepts_every_prefix_of_a_real_history() -> None:
    for state in HISTORY:
        VALIDATOR.validate(KEY, value_of(state), NOW)


def test_validator_through_namespaces() -> None:
    namespaces = NamespacedValidator({CONTRACT_PREFIX: VALIDATOR})
    namespaces.validate(KEY, value_of(FINAL), NOW)
    assert namespaces.select(KEY, [value_of(HISTORY[3]), value_of(FINAL)]) == 1


def test_wrong_key_for_the_id() -> None:
    other = contract_key(active(make_terms(b"quote-2")).contract_id)
    assert refusal(other, value_of(FINAL)) == "contract record is for another contract"
    assert refusal(b"/zhtp/blob/" + CONTRACT_ID, value_of(FINAL)) == "not a contract key"
    assert refusal(KEY + b"\x00", value_of(FINAL)) == "contract key id is not 32 bytes"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def test_forged_signature_anywhere_in_the_history() -> None:
    record = contract_record(FINAL)
    for index, raw in enumerate(record.transitions):
        forged = list(record.transitions)
        forged[index] = _flip(raw, len(raw) - 5)  # inside the last signature
        reason = refusal(KEY, with_transitions(tuple(forged)))
        assert reason == f"contract history invalid at transition {index}"
    bad_proposal = replace(record, client_signature=_flip(record.client_signature, 3))
    assert refusal(KEY, encode_contract_record(bad_proposal)) == (
        "contract terms or proposal signature invalid"
    )


def test_signature_by_the_wrong_key() -> None:
    state = HISTORY[2]
    t = make_transition(state, Event.AUDIT_PASSED, START + PERIOD, period=0, digest=EVIDENCE)
    t = sign_transition(t, Role.CLIENT, MALLORY_KEY)
    value = encode_contract_record(
        replace(
            contract_record(state),
            transitions=(*contract_record(state).transitions, encode_transition(t)),
        )
    )
    assert refusal(KEY, value) == "contract history invalid at transition 2"


def test_skipped_sequence() -> None:
    ts = contract_record(FINAL).transitions
    assert refusal(KEY, with_transitions((ts[0], ts[2]))) == (
        "contract history invalid at transition 1"
    )


def test_repeated_sequence() -> None:
    ts = contract_record(FINAL).transitions
    assert refusal(KEY, with_transitions((ts[0], ts[1], ts[1]))) == (
        "contract history invalid at transition 2"
    )


def test_transition_for_another_contract() -> None:
    other = active(make_terms(b"quote-2"))
    ts = contract_record(other).transitions
    assert refusal(KEY, with_transitions(ts)) == "contract history invalid at transition 0"


def test_trailing_bytes_and_oversize() -> None:
    value = value_of(FINAL)
    assert refusal(KEY, value + b"\x00") == "contract record does not decode"
    assert refusal(KEY, b"\x00" * (MAX_RECORD_SIZE + 1)) == "contract record too large"
    small = ContractRecordValidator(max_value_size=len(value) - 1)
    with pytest.raises(RecordInvalid, match="too large"):
        small.validate(KEY, value, NOW)
    with pytest.raises(ValueError):
        ContractRecordValidator(max_value_size=MAX_RECORD_SIZE + 1)


def test_reasons_do_not_echo_the_value() -> None:
    garbage = b"\xde\xad\xbe\xef" * 50
    reason = refusal(KEY, garbage)
    assert "dead" not in reason and "\\x" not in reason


def test_select_prefers_the_longer_history() -> None:
    short, long = value_of(HISTORY[4]), value_of(HISTORY[7])
    assert VALIDATOR.select(KEY, [short, long]) == 1
    assert VALIDATOR.select(KEY, [long, short]) == 0
    assert VALIDATOR.select(KEY, [short]) == 0
    with pytest.raises(ValueError):
        VALIDATOR.select(KEY, [])


def test_select_between_equivocating_branches_is_deterministic() -> None:
    # The client and the provider may each start monitoring: two valid,
    # different transitions with sequence 2.
    base = HISTORY[1]
    a = step(base, Event.START_MONITORING, START, (Role.CLIENT,))
    b = step(base, Event.START_MONITORING, START, (Role.PROVIDER,))
    va, vb = value_of(a), value_of(b)
    VALIDATOR.validate(KEY, va, NOW)
    VALIDATOR.validate(KEY, vb, NOW)
    winner = max(va, vb)
    assert [va, vb][VALIDATOR.select(KEY, [va, vb])] == winner
    assert [vb, va][VALIDATOR.select(KEY, [vb, va])] == winner


def test_expiry() -> None:
    proposal = contract_record(HISTORY[0])
    assert record_expires_at_ms(proposal) == VALID_UNTIL + DEFAULT_GRACE_MS
    end = START + PERIODS * PERIOD
    assert VALIDATOR.expires_at_ms(KEY, value_of(FINAL)) == end + 1 + DEFAULT_GRACE_MS
    assert VALIDATOR.expires_at_ms(KEY, value_of(HISTORY[2])) == end + DEFAULT_GRACE_MS
    refused = step(HISTORY[0], Event.REFUSE, 4_500, (Role.PROVIDER,))
    assert VALIDATOR.expires_at_ms(KEY, value_of(refused)) == 4_500 + DEFAULT_GRACE_MS
    renewed = step(
        HISTORY[2], Event.RENEW, START, (Role.CLIENT, Role.PROVIDER), amount_micro_tokens=PRICE
    )
    expiry = VALIDATOR.expires_at_ms(KEY, value_of(renewed))
    assert expiry == START + 2 * PERIODS * PERIOD + DEFAULT_GRACE_MS


def test_expired_record_is_invalid() -> None:
    value = value_of(FINAL)
    expiry = VALIDATOR.expires_at_ms(KEY, value)
    assert expiry is not None
    VALIDATOR.validate(KEY, value, expiry - 1)
    assert refusal(KEY, value, expiry) == "contract record expired"
    assert refusal(KEY, value_of(HISTORY[0]), VALID_UNTIL + DEFAULT_GRACE_MS) == (
        "contract record expired"
    )
